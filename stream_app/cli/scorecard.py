"""``stream-app scorecard``: the live scorecard service (labels joined to served scores)."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Annotated

import typer

EXIT_ERROR = 1


def scorecard(
    since_hours: Annotated[
        float | None,
        typer.Option(
            "--since-hours",
            min=0,
            help="Rebuild the join from records this many hours old (broker time). Default: the "
            "label horizon; --from-beginning reads everything the topics hold.",
            show_default=False,
        ),
    ] = None,
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Read the topics from their first offset.")
    ] = False,
    once: Annotated[
        bool,
        typer.Option(
            "--once", help="Stop at the log end seen at start, publish, print totals and exit."
        ),
    ] = False,
    horizon_days: Annotated[
        float,
        typer.Option(
            min=0.01,
            help="Label horizon (event-time days): unlabelled scores older than this are "
            "evicted and counted.",
        ),
    ] = 14.0,
    k: Annotated[int, typer.Option("-k", min=1, help="k of precision@k per period.")] = 100,
    interval: Annotated[
        float, typer.Option(min=0.1, help="Seconds between publications to metrics/drift.")
    ] = 30.0,
    publish: Annotated[
        bool, typer.Option(help="Publish records to the metrics and drift topics.")
    ] = True,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Write the overall metrics per model version to this JSON file at the end.",
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
) -> None:
    """Join labels arriving late on `labels` to the envelopes on `scores` and `scores.shadow`
    by event id; publish per model version and route to `metrics` (AUC ROC, average precision,
    precision@k, Brier, calibration error with its bins, label count and coverage, per event
    day and per processing hour; per event day also per slice: amount, hour, tenure and the
    slices of STREAM_APP_SCORECARD_SLICES), every joined pair once to `scorecard.pairs` (what
    `models compare` reads) and the label-error change detector to `drift`.

    Runs until SIGINT/SIGTERM (or, with --once, until it has read what the topics held at
    start). It reads with manual assignment and commits nothing, so it never moves a consumer
    group's offsets. While it runs (not with --once) it serves Prometheus metrics on
    STREAM_APP_SCORECARD_WEB_PORT (default 6067; 0: none).
    """
    from prometheus_client import start_http_server
    from rich.console import Console
    from rich.table import Table

    from stream_app.cli.progress import record_counter
    from stream_app.cli.settings import command_settings
    from stream_app.exceptions import StreamAppError
    from stream_app.logs import configure_logging
    from stream_app.monitoring.scorecard_metrics import ScorecardMetrics
    from stream_app.monitoring.scorecard_service import ScorecardService, run_scorecard
    from stream_app.monitoring.slices import Slicer

    settings = command_settings()
    console = Console(stderr=True)
    horizon_s = horizon_days * 86_400.0
    since_ms: int | None = None
    if not from_beginning:
        hours = since_hours if since_hours is not None else horizon_s / 3600.0
        since_ms = int((time.time() - hours * 3600.0) * 1000)
    configure_logging(settings)
    metrics = ScorecardMetrics()
    if not once and settings.scorecard_web_port:
        try:
            start_http_server(
                settings.scorecard_web_port, addr=settings.web_bind, registry=metrics.registry
            )
        except OSError as exc:
            console.print(
                f"[bold red]error:[/] cannot serve metrics on {settings.web_bind}:"
                f"{settings.scorecard_web_port} ({exc}); set STREAM_APP_SCORECARD_WEB_PORT to a "
                "free port, or 0 for none"
            )
            raise typer.Exit(EXIT_ERROR) from exc
        console.print(
            f"metrics on http://{settings.web_bind}:{settings.scorecard_web_port}/metrics"
        )
    try:
        slicer = Slicer(
            settings.scorecard_amount_edges,
            settings.scorecard_tenure_days,
            settings.scorecard_slices,
        )
    except ValueError as exc:
        console.print(f"[bold red]error:[/] STREAM_APP_SCORECARD_SLICES: {exc}")
        raise typer.Exit(EXIT_ERROR) from exc
    service = ScorecardService(
        settings.max_message_bytes, horizon_s, k, settings.drift_detector, metrics, slicer
    )
    stopping = {"now": False}

    def stop(*_: object) -> None:
        stopping["now"] = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with record_counter(console, "scorecard: reading scores, shadow scores and labels") as advance:
        try:
            totals = run_scorecard(
                settings,
                service,
                since_ms=since_ms,
                until_end=once,
                publish=publish,
                publish_interval_s=interval,
                on_progress=advance,
                should_stop=lambda: stopping["now"],
            )
        except (RuntimeError, StreamAppError) as exc:  # unreadable topic, bad credentials
            console.print(f"[bold red]error:[/] {exc}")
            raise typer.Exit(EXIT_ERROR) from exc
    counts = service.join.counts
    console.print(
        f"read {totals.scores:,} scores, {totals.shadow:,} shadow scores, {totals.labels:,} "
        f"labels ({totals.undecodable:,} undecodable); joined {counts.joined:,}, evicted "
        f"unlabelled {counts.evicted_unlabelled:,}, labels unmatched {counts.labels_unmatched:,};"
        f" published {totals.metrics_records:,} metrics and {totals.drift_records:,} drift records"
    )
    console.print(
        f"read {totals.transactions:,} transactions (amounts, declared fields, customers' first "
        f"transactions for the slices); {totals.pair_records:,} joined pairs for `models compare`"
    )
    overall = totals.overall(k)
    table = Table(title="Labelled scores per model version")
    for column in ("version", "labels", "AUC ROC", "AP", f"P@{k}", "Brier"):
        table.add_column(column, justify="left" if column == "version" else "right")

    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    for version, m in overall.items():
        table.add_row(
            version,
            f"{m['labels']:,}",
            fmt(m["auc_roc"]),
            fmt(m["average_precision"]),
            fmt(m["precision_at_k"]),
            fmt(m["brier"]),
        )
    Console().print(table)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(overall, indent=2) + "\n")
        console.print(f"→ {out}")
