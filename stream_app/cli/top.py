"""``stream-app top``: a live terminal view of the worker's and the scorecard's metrics."""

from __future__ import annotations

import time
import urllib.error
from pathlib import Path
from typing import Annotated

import typer

EXIT_ERROR = 1


def top(
    url: Annotated[
        str | None,
        typer.Option(
            help="The worker's metrics endpoint (default: http://127.0.0.1:STREAM_APP_WEB_PORT"
            "/metrics).",
            show_default=False,
        ),
    ] = None,
    scorecard_url: Annotated[
        str | None,
        typer.Option(
            help="The scorecard's metrics endpoint (default: http://127.0.0.1:"
            "STREAM_APP_SCORECARD_WEB_PORT/metrics; skipped while it does not answer).",
            show_default=False,
        ),
    ] = None,
    interval: Annotated[
        float, typer.Option(min=0.5, help="Seconds between scrapes (rates are over this).")
    ] = 2.0,
    once: Annotated[
        bool, typer.Option("--once", help="Scrape twice, print one frame and exit.")
    ] = False,
    svg: Annotated[
        Path | None,
        typer.Option(
            help="With --once: also save the frame as an SVG picture (docs, bug reports).",
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
) -> None:
    """Throughput, latency percentiles, dead letters by reason, consumer lag, table sizes,
    shadow agreement, drift and the live scorecard, redrawn every --interval seconds from the
    /metrics endpoints (Ctrl-C to quit)."""
    from rich.console import Console
    from rich.live import Live

    from stream_app.cli.settings import command_settings
    from stream_app.operations.top import Samples, figures, merge, render, scrape

    settings = command_settings()
    worker_url = url or f"http://127.0.0.1:{settings.web_port}/metrics"
    card_url = scorecard_url or (
        f"http://127.0.0.1:{settings.scorecard_web_port}/metrics"
        if settings.scorecard_web_port
        else None
    )
    console = Console(record=svg is not None)

    def read() -> Samples:
        try:
            worker = scrape(worker_url)
        except (OSError, urllib.error.URLError, ValueError) as exc:
            console.print(
                f"[bold red]error:[/] cannot read {worker_url} ({exc}). Is the worker running "
                "(`stream-app worker`) with its web server on that port (STREAM_APP_WEB_PORT)?"
            )
            raise typer.Exit(EXIT_ERROR) from exc
        card: Samples = {}
        if card_url:
            try:
                card = scrape(card_url)
            except (OSError, urllib.error.URLError, ValueError):
                card = {}
        return merge(worker, card)

    source = worker_url if not card_url else f"{worker_url} + {card_url}"
    before, then = read(), time.monotonic()
    time.sleep(interval)
    after, now = read(), time.monotonic()
    frame = render(figures(before, after, now - then), source)
    if once:
        console.print(frame)
        if svg is not None:
            svg.parent.mkdir(parents=True, exist_ok=True)
            console.save_svg(str(svg), title="stream-app top")
        return
    try:
        with Live(frame, console=console, auto_refresh=False, screen=False) as live:
            while True:
                before, then = after, now
                time.sleep(interval)
                after, now = read(), time.monotonic()
                live.update(render(figures(before, after, now - then), source), refresh=True)
    except KeyboardInterrupt:
        pass
