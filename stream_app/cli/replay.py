"""``stream-app replay``: score a date range with the champion and challengers, and report."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from stream_app.features.definitions import DAY_S, LABEL_DELAY_DAYS, Entity, horizon_s

if TYPE_CHECKING:
    from rich.console import Console

    from stream_app.evaluation.csv_range import ReplayResult

EXIT_ERROR = 1
DEFAULT_HISTORY_DAYS = int(horizon_s(Entity.TERMINAL) // DAY_S)


def _parse_day(value: str, option: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} is not a day (YYYY-MM-DD)", param_hint=option) from exc


def replay(
    date_from: Annotated[
        str,
        typer.Option(
            "--from", help="First scored day, YYYY-MM-DD (UTC); with --topic also OFFSET or TIME."
        ),
    ],
    date_to: Annotated[
        str,
        typer.Option(
            "--to",
            help="Last scored day, YYYY-MM-DD (UTC, inclusive); with --topic also OFFSET or TIME.",
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Directory for scored.parquet, metrics.json and report.html.",
            file_okay=False,
        ),
    ],
    csv: Annotated[
        Path | None,
        typer.Option(
            "--csv",
            help="Handbook-format CSV (.csv or .csv.gz) to rebuild features from and score.",
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
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
    topic: Annotated[
        str | None,
        typer.Option(
            "--topic",
            help="Replay this transactions-format topic from the broker instead: --from/--to are "
            "offsets (same bound in every partition) or event times (YYYY-MM-DD or ISO 8601).",
            show_default=False,
        ),
    ] = None,
    served: Annotated[
        bool,
        typer.Option(
            "--served",
            help="Evaluate what the live worker published instead: read `scores`, "
            "`scores.shadow` and `labels` from the broker (KAFKA_BOOTSTRAP_SERVERS, "
            "STREAM_APP_TOPIC_PREFIX), nothing recomputed.",
        ),
    ] = False,
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
    """Replay a date range through the champion and challengers and report.

    With --csv (no broker): reads --history-days before --from so the windows are warm, builds
    features with the worker's own code, scores the rows of [--from, --to] with every model
    (hash-verified). With --served: joins the scores the live worker published (champion and
    shadow) with the labels. Either way writes scored.parquet, metrics.json and a
    self-contained report.html into --out.
    """
    from rich.console import Console
    from rich.markup import escape

    from stream_app.config import get_settings
    from stream_app.evaluation.csv_range import replay as run_replay
    from stream_app.exceptions import StreamAppError

    settings = get_settings()
    console = Console()
    if [csv is not None, served, topic is not None].count(True) != 1:
        console.print(
            "[bold red]error:[/] give exactly one of --csv PATH, --topic NAME or --served"
        )
        raise typer.Exit(EXIT_ERROR)
    if topic is not None:
        _replay_topic(
            console,
            topic,
            date_from,
            date_to,
            out,
            models_dir if models_dir is not None else settings.models_dir,
            champion if champion is not None else settings.champion,
            model or [],
            history_days,
            label_delay_days,
        )
        return
    first = _parse_day(date_from, "--from")
    last = _parse_day(date_to, "--to")
    if served:
        _replay_served(console, first, last, out, handbook_protocol)
        return
    assert csv is not None
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


def _replay_topic(
    console: Console,
    topic: str,
    start: str,
    stop: str,
    out: Path,
    models_dir: Path,
    champion: str | None,
    challengers: list[str],
    history_days: int,
    label_delay_days: float,
) -> None:
    from rich.markup import escape

    from stream_app.cli.progress import record_counter
    from stream_app.config import get_settings
    from stream_app.evaluation.topic_range import Bound, replay_topic
    from stream_app.exceptions import StreamAppError

    settings = get_settings()
    try:
        bounds = Bound.parse(start), Bound.parse(stop, end=True)
        with record_counter(console, f"reading {settings.topic(topic)} and labels") as advance:
            result = replay_topic(
                settings,
                topic=topic,
                start=bounds[0],
                stop=bounds[1],
                out_dir=out,
                models_dir=models_dir,
                champion=champion,
                challengers=challengers,
                history_days=history_days,
                label_delay_days=label_delay_days,
                on_progress=advance,
            )
    except StreamAppError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(EXIT_ERROR) from exc
    print_summary(console, result)


def _replay_served(
    console: Console, first: date, last: date, out: Path, handbook_protocol: bool
) -> None:
    from rich.markup import escape

    from stream_app.cli.progress import record_counter
    from stream_app.config import get_settings
    from stream_app.evaluation.served_scores import evaluate_served
    from stream_app.exceptions import StreamAppError

    settings = get_settings()
    with record_counter(console, "reading scores, shadow scores and labels") as advance:
        try:
            files = evaluate_served(
                settings,
                date_from=first,
                date_to=last,
                out_dir=out,
                handbook_protocol=handbook_protocol,
                on_progress=advance,
            )
        except StreamAppError as exc:
            console.print(f"[bold red]error:[/] {escape(str(exc))}")
            raise typer.Exit(EXIT_ERROR) from exc
    print_document(console, files.document)
    console.print(f"→ {files.scored}\n→ {files.metrics}\n→ {files.report}")


def print_document(console: Console, document: dict[str, Any]) -> None:
    """One table row per model of a metrics document (champion first)."""
    import math

    from rich.table import Table

    from stream_app.evaluation.report import CP_KEY

    def fmt(value: float | None) -> str:
        return "n/a" if value is None or math.isnan(value) else f"{value:.4f}"

    span = document["range"]
    table = Table(
        title=f"{span['from']} .. {span['to']}: {span['rows']:,} transactions "
        f"({span['frauds']:,} frauds)"
    )
    for column in ("role", "version", "AUC ROC", "AP", "CP@100"):
        table.add_column(column, justify="left" if column in ("role", "version") else "right")
    for model in document["models"]:
        m = document["metrics"][model["version"]]
        table.add_row(
            model["role"],
            model["version"],
            fmt(m["auc_roc"]),
            fmt(m["average_precision"]),
            fmt(m[CP_KEY]),
        )
    console.print(table)


def print_summary(console: Console, result: ReplayResult) -> None:
    """One table row per model (champion first), then where the outputs went."""
    import math

    from rich.table import Table

    from stream_app.evaluation.report import CP_KEY

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
