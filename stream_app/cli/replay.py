"""``stream-app replay``: score a date range with the champion and challengers, and report."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from stream_app.features.definitions import DAY_S, LABEL_DELAY_DAYS, Entity, horizon_s

if TYPE_CHECKING:
    from rich.console import Console

    from stream_app.tools.replay import ReplayResult

EXIT_ERROR = 1
DEFAULT_HISTORY_DAYS = int(horizon_s(Entity.TERMINAL) // DAY_S)


def _parse_day(value: str, option: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} is not a day (YYYY-MM-DD)", param_hint=option) from exc


def replay(
    csv: Annotated[
        Path, typer.Option("--csv", help="Handbook-format CSV (.csv or .csv.gz).", dir_okay=False)
    ],
    date_from: Annotated[str, typer.Option("--from", help="First scored day, YYYY-MM-DD (UTC).")],
    date_to: Annotated[
        str, typer.Option("--to", help="Last scored day, YYYY-MM-DD (UTC, inclusive).")
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Directory for scored.parquet, metrics.json and report.html.",
            file_okay=False,
        ),
    ],
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            help="Challenger version to score beside the champion (repeatable).",
            show_default=False,
        ),
    ] = None,
    champion: Annotated[
        str | None,
        typer.Option(
            "--champion",
            help="Champion version. Default: STREAM_APP_CHAMPION, else the newest in the registry.",
            show_default=False,
        ),
    ] = None,
    models_dir: Annotated[
        Path | None,
        typer.Option(
            "--models-dir",
            help="Model registry. Default: STREAM_APP_MODELS_DIR (models/).",
            file_okay=False,
            show_default=False,
        ),
    ] = None,
    history_days: Annotated[
        int,
        typer.Option(
            "--history-days",
            min=0,
            help="Days read before --from to warm the windows (not scored).",
        ),
    ] = DEFAULT_HISTORY_DAYS,
    label_delay_days: Annotated[
        float, typer.Option(help="Days after a transaction its label becomes known.")
    ] = LABEL_DELAY_DAYS,
    handbook_protocol: Annotated[
        bool,
        typer.Option(
            "--handbook-protocol",
            help="Score only the protocol's test rows: drop cards already known compromised "
            "(frauds from 14 days before --from, plus each test day's delay-period frauds), as "
            "the trainer's test-week metrics do.",
        ),
    ] = False,
) -> None:
    """Replay a CSV date range through the champion and challengers, no broker.

    Reads --history-days before --from so the windows are warm, builds features with the
    worker's own code, scores the rows of [--from, --to] with every model (hash-verified) and
    writes scored.parquet, metrics.json and a self-contained report.html into --out.
    """
    from rich.console import Console
    from rich.markup import escape

    from stream_app.config import get_settings
    from stream_app.exceptions import StreamAppError
    from stream_app.tools.replay import replay as run_replay

    first = _parse_day(date_from, "--from")
    last = _parse_day(date_to, "--to")
    settings = get_settings()
    console = Console()
    try:
        result = run_replay(
            csv,
            date_from=first,
            date_to=last,
            out_dir=out,
            models_dir=models_dir if models_dir is not None else settings.models_dir,
            champion=champion if champion is not None else settings.champion,
            challengers=model or [],
            history_days=history_days,
            label_delay_days=label_delay_days,
            handbook_protocol=handbook_protocol,
            console=console,
        )
    except StreamAppError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(EXIT_ERROR) from exc
    print_summary(console, result)


def print_summary(console: Console, result: ReplayResult) -> None:
    """One table row per model (champion first), then where the outputs went."""
    import math

    from rich.table import Table

    from stream_app.tools.report import CP_KEY

    def fmt(value: float) -> str:
        return "n/a" if value is None or math.isnan(value) else f"{value:.4f}"

    document = result.files.document
    span = document["range"]
    table = Table(
        title=f"Replay {span['from']} .. {span['to']}: {result.rows:,} transactions "
        f"({span['frauds']:,} frauds), {result.history_rows:,} history rows"
    )
    for column in ("role", "version", "AUC ROC", "AP", "CP@100"):
        table.add_column(column, justify="left" if column in ("role", "version") else "right")
    for info in result.models:
        m = result.metrics[info.version]
        table.add_row(
            info.role,
            info.version,
            fmt(m["auc_roc"]),
            fmt(m["average_precision"]),
            fmt(m[CP_KEY]),
        )
    console.print(table)
    files = result.files
    console.print(f"→ {files.scored}\n→ {files.metrics}\n→ {files.report}")
