"""``stream-app models compare CHALLENGER --against CHAMPION``: a rollout verdict from the live
scorecard's joined pairs (``stream_app.evaluation.compare``)."""

from __future__ import annotations

import math
from typing import Annotated, Any

import typer

EXIT_ERROR = 1


def compare(
    challenger: Annotated[str, typer.Argument(help="The challenger's model version.")],
    against: Annotated[
        str, typer.Option("--against", help="The champion's model version.", show_default=False)
    ],
    k: Annotated[int, typer.Option("-k", min=1, help="k of precision@k.")] = 100,
    n_boot: Annotated[
        int, typer.Option("--bootstrap", min=100, help="Bootstrap resamples of the customers.")
    ] = 1000,
    min_frauds: Annotated[
        int,
        typer.Option("--min-frauds", min=1, help="Fewer labelled frauds on a side: keep watching."),
    ] = 20,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per window.")] = False,
) -> None:
    """Challenger against champion on the labels the live scorecard joined (topic
    scorecard.pairs), for the shadow window (the challenger's shadow scores and the champion's
    scores of the same events) and the canary window (when the challenger served as canary):
    AUC, AP, precision@k, Brier and ECE, each with a 95 % bootstrap interval over customers,
    and a verdict: promote (AP's difference above 0, AUC not worse), roll back (AP or AUC
    below 0) or keep watching (anything else, or too few frauds)."""
    import orjson
    from rich.console import Console
    from rich.table import Table

    from stream_app.cli.settings import command_settings
    from stream_app.evaluation.compare import METRICS, WINDOWS, Estimate, compare_window
    from stream_app.exceptions import StreamAppError
    from stream_app.io.topic_reader import read_to_end
    from stream_app.monitoring.scorecard_service import PAIRS

    settings = command_settings()
    topic = settings.topic(PAIRS)
    records: list[dict[str, Any]] = []
    bad = 0

    def on_record(_topic: str, _partition: int, _offset: int, value: bytes | None) -> None:
        nonlocal bad
        try:
            record = orjson.loads(value or b"")
            if record["model_version"] in (challenger, against):
                records.append(record)
        except (orjson.JSONDecodeError, KeyError, TypeError):
            bad += 1

    try:
        read_to_end(settings, [topic], f"{settings.app_id}-compare", on_record)
    except StreamAppError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_ERROR) from exc
    if bad:
        typer.echo(f"warning: skipped {bad} undecodable record(s) on {topic}", err=True)
    results = [
        r
        for window in WINDOWS
        if (
            r := compare_window(
                records,
                challenger,
                against,
                window,
                k=k,
                n_boot=n_boot,
                seed=seed,
                min_frauds=min_frauds,
            )
        )
        is not None
    ]
    if not results:
        typer.echo(
            f"error: no labelled scores of {challenger} on the shadow or canary route on {topic} "
            f"({len(records)} pair(s) of the two versions); is `stream-app scorecard` running?",
            err=True,
        )
        raise typer.Exit(EXIT_ERROR)
    if as_json:
        for result in results:
            typer.echo(orjson.dumps(result.as_dict()).decode())
        return

    def fmt(e: Estimate, signed: bool = False) -> str:
        if math.isnan(e.value):
            return "n/a"
        f = "{:+.4f}" if signed else "{:.4f}"
        if math.isnan(e.low):
            return f.format(e.value)
        return f"{f.format(e.value)} [{f.format(e.low)}, {f.format(e.high)}]"

    console = Console(width=max(Console().width, 120))
    for r in results:
        table = Table(
            title=f"{r.window} window: {challenger} against {against} — labels "
            f"{r.labels['challenger']:,} / {r.labels['champion']:,}, frauds "
            f"{r.frauds['challenger']:,} / {r.frauds['champion']:,}, {r.customers:,} customers "
            "(95 % intervals, bootstrap over customers)"
        )
        for column in ("metric", "champion", "challenger", "challenger - champion"):
            table.add_column(column, justify="left" if column == "metric" else "right")
        for m in METRICS:
            name = f"precision@{k}" if m == "precision_at_k" else m
            table.add_row(name, fmt(r.champion[m]), fmt(r.challenger[m]), fmt(r.delta[m], True))
        console.print(table)
        console.print(f"verdict ({r.window}): [bold]{r.verdict}[/] — {r.reason}")
