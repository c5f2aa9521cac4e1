"""``stream-app evaluate csv|topic|served``: score a range with the champion and challengers (or
read what the live worker served), join the labels and report.

Three sources, one output (``scored.parquet``, ``metrics.json``, ``report.html`` in ``--out``):

- ``evaluate csv PATH``: a date range of a handbook-format CSV, no broker;
- ``evaluate topic [NAME]``: a range of a transactions-format topic, read with a consumer of its
  own;
- ``evaluate served``: the scores the worker published, joined with ``labels``, nothing rescored.

``stream-app replay --csv|--topic|--served`` is the old name of all three: it still runs them,
after a one-line deprecation warning on stderr.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from stream_app.features.definitions import DAY_S, LABEL_DELAY_DAYS, Entity, horizon_s

if TYPE_CHECKING:
    from rich.console import Console

    from stream_app.config import Settings
    from stream_app.evaluation.csv_range import RangeEvaluation

EXIT_ERROR = 1
DEFAULT_HISTORY_DAYS = int(horizon_s(Entity.TERMINAL) // DAY_S)

app = typer.Typer(
    help="Evaluate the models on a range: of a CSV (csv), of a topic (topic), or what the live "
    "worker served (served). Each writes scored.parquet, metrics.json and report.html.",
    no_args_is_help=True,
)

DayFrom = Annotated[str, typer.Option("--from", help="First scored day, YYYY-MM-DD (UTC).")]
DayTo = Annotated[str, typer.Option("--to", help="Last scored day, YYYY-MM-DD (UTC, inclusive).")]
Out = Annotated[
    Path,
    typer.Option(
        "--out", help="Directory for scored.parquet, metrics.json and report.html.", file_okay=False
    ),
]
Challengers = Annotated[
    list[str] | None,
    typer.Option(
        "--model",
        help="Challenger version to score beside the champion (repeatable).",
        show_default=False,
    ),
]
Champion = Annotated[
    str | None,
    typer.Option(
        "--champion",
        help="Champion version. Default: STREAM_APP_CHAMPION, else the newest in the registry.",
        show_default=False,
    ),
]
ModelsDir = Annotated[
    Path | None,
    typer.Option(
        "--models-dir",
        help="Model registry. Default: STREAM_APP_MODELS_DIR (models/).",
        file_okay=False,
        show_default=False,
    ),
]
HistoryDays = Annotated[
    int,
    typer.Option(
        "--history-days", min=0, help="Days read before --from to warm the windows (not scored)."
    ),
]
LabelDelayDays = Annotated[
    float, typer.Option(help="Days after a transaction its label becomes known.")
]
HandbookProtocol = Annotated[
    bool,
    typer.Option(
        "--handbook-protocol",
        help="Score only the protocol's test rows: drop cards already known compromised "
        "(frauds from 14 days before --from, plus each test day's delay-period frauds), as "
        "the trainer's test-week metrics do.",
    ),
]


@contextmanager
def _exit_on_error(console: Console) -> Iterator[None]:
    """A :class:`StreamAppError` becomes its message and exit code 1."""
    from rich.markup import escape

    from stream_app.exceptions import StreamAppError

    try:
        yield
    except StreamAppError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(EXIT_ERROR) from exc


def _registry(settings: Settings, models_dir: Path | None, champion: str | None) -> dict[str, Any]:
    """The registry and champion: the options, else the settings'."""
    return {
        "models_dir": models_dir if models_dir is not None else settings.models_dir,
        "champion": champion if champion is not None else settings.champion,
    }


def _parse_day(value: str, option: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} is not a day (YYYY-MM-DD)", param_hint=option) from exc


@app.command("csv")
def csv_command(
    path: Annotated[
        Path,
        typer.Argument(
            help="Handbook-format CSV (.csv or .csv.gz) to rebuild features from and score.",
            dir_okay=False,
            show_default=False,
        ),
    ],
    date_from: DayFrom,
    date_to: DayTo,
    out: Out,
    model: Challengers = None,
    champion: Champion = None,
    models_dir: ModelsDir = None,
    history_days: HistoryDays = DEFAULT_HISTORY_DAYS,
    label_delay_days: LabelDelayDays = LABEL_DELAY_DAYS,
    handbook_protocol: HandbookProtocol = False,
) -> None:
    """Score a date range of a CSV with the champion and challengers, no broker.

    Reads --history-days before --from so the windows are warm, builds features with the
    worker's own code and scores the rows of [--from, --to] with every model (hash-verified).
    """
    from rich.console import Console

    from stream_app.cli.settings import command_settings
    from stream_app.evaluation.csv_range import evaluate_csv

    settings = command_settings()
    console = Console()
    first, last = _parse_day(date_from, "--from"), _parse_day(date_to, "--to")
    with _exit_on_error(console):
        result = evaluate_csv(
            path,
            date_from=first,
            date_to=last,
            out_dir=out,
            **_registry(settings, models_dir, champion),
            challengers=model or [],
            history_days=history_days,
            label_delay_days=label_delay_days,
            handbook_protocol=handbook_protocol,
            console=console,
        )
    print_summary(console, result)


@app.command("topic")
def topic_command(
    date_from: Annotated[
        str,
        typer.Option(
            "--from",
            help="Start of the range: an OFFSET (the same in every partition) or an event TIME "
            "(YYYY-MM-DD or ISO 8601).",
        ),
    ],
    date_to: Annotated[
        str,
        typer.Option("--to", help="End of the range (inclusive): an OFFSET or an event TIME."),
    ],
    out: Out,
    topic: Annotated[
        str, typer.Argument(help="Transactions-format topic (declared name) to read.")
    ] = "transactions",
    model: Challengers = None,
    champion: Champion = None,
    models_dir: ModelsDir = None,
    history_days: HistoryDays = DEFAULT_HISTORY_DAYS,
    label_delay_days: LabelDelayDays = LABEL_DELAY_DAYS,
) -> None:
    """Score a range of a topic with the champion and challengers, labels from `labels`.

    The topic is read with a consumer of its own (nothing committed: the worker's group never
    moves), records decoded by the worker's codec, ordered by (event time, partition, offset);
    the records before the range warm the windows.
    """
    from rich.console import Console

    from stream_app.cli.progress import record_counter
    from stream_app.cli.settings import command_settings
    from stream_app.evaluation.topic_range import Bound, evaluate_topic

    settings = command_settings()
    console = Console()
    with _exit_on_error(console):
        bounds = Bound.parse(date_from), Bound.parse(date_to, end=True)
        with record_counter(console, f"reading {settings.topic(topic)} and labels") as advance:
            result = evaluate_topic(
                settings,
                topic=topic,
                start=bounds[0],
                stop=bounds[1],
                out_dir=out,
                **_registry(settings, models_dir, champion),
                challengers=model or [],
                history_days=history_days,
                label_delay_days=label_delay_days,
                on_progress=advance,
            )
    print_summary(console, result)


@app.command("served")
def served_command(
    date_from: DayFrom,
    date_to: DayTo,
    out: Out,
    handbook_protocol: HandbookProtocol = False,
) -> None:
    """Evaluate what the live worker published: `scores` and `scores.shadow` joined with
    `labels` (KAFKA_BOOTSTRAP_SERVERS, STREAM_APP_TOPIC_PREFIX), nothing recomputed."""
    from rich.console import Console

    from stream_app.cli.progress import record_counter
    from stream_app.cli.settings import command_settings
    from stream_app.evaluation.served_scores import evaluate_served

    settings = command_settings()
    console = Console()
    first, last = _parse_day(date_from, "--from"), _parse_day(date_to, "--to")
    with (
        record_counter(console, "reading scores, shadow scores and labels") as advance,
        _exit_on_error(console),
    ):
        files = evaluate_served(
            settings,
            date_from=first,
            date_to=last,
            out_dir=out,
            handbook_protocol=handbook_protocol,
            on_progress=advance,
        )
    print_document(console, files.document)
    console.print(f"→ {files.scored}\n→ {files.metrics}\n→ {files.report}")


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
    out: Out,
    csv: Annotated[
        Path | None,
        typer.Option(
            "--csv",
            help="As `stream-app evaluate csv PATH`.",
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    model: Challengers = None,
    champion: Champion = None,
    models_dir: ModelsDir = None,
    history_days: HistoryDays = DEFAULT_HISTORY_DAYS,
    label_delay_days: LabelDelayDays = LABEL_DELAY_DAYS,
    topic: Annotated[
        str | None,
        typer.Option("--topic", help="As `stream-app evaluate topic NAME`.", show_default=False),
    ] = None,
    served: Annotated[
        bool, typer.Option("--served", help="As `stream-app evaluate served`.")
    ] = False,
    handbook_protocol: HandbookProtocol = False,
) -> None:
    """Deprecated: the old name of `stream-app evaluate csv|topic|served`.

    Prints a one-line warning on stderr, then runs the new command: --csv PATH is `evaluate csv
    PATH`, --topic NAME is `evaluate topic NAME`, --served is `evaluate served`.
    """
    import sys

    from rich.console import Console

    if [csv is not None, served, topic is not None].count(True) != 1:
        Console().print(
            "[bold red]error:[/] give exactly one of --csv PATH, --topic NAME or --served"
        )
        raise typer.Exit(EXIT_ERROR)
    new = "csv" if csv is not None else "topic" if topic is not None else "served"
    print(
        f"warning: `stream-app replay` is deprecated and will be removed: "
        f"use `stream-app evaluate {new}`",
        file=sys.stderr,
    )
    if csv is not None:
        csv_command(
            csv, date_from, date_to, out, model, champion, models_dir, history_days,
            label_delay_days, handbook_protocol,
        )  # fmt: skip
    elif topic is not None:
        topic_command(
            date_from, date_to, out, topic, model, champion, models_dir, history_days,
            label_delay_days,
        )  # fmt: skip
    else:
        served_command(date_from, date_to, out, handbook_protocol)


def _print_models(
    console: Console,
    title: str,
    models: Iterable[tuple[str, str]],
    metrics: Mapping[str, Mapping[str, Any]],
) -> None:
    """One table row per (role, version), champion first: AUC ROC, AP and CP@100."""
    import math

    from rich.table import Table

    from stream_app.evaluation.report import CP_KEY

    def fmt(value: float | None) -> str:
        return "n/a" if value is None or math.isnan(value) else f"{value:.4f}"

    table = Table(title=title)
    for column in ("role", "version", "AUC ROC", "AP", "CP@100"):
        table.add_column(column, justify="left" if column in ("role", "version") else "right")
    for role, version in models:
        m = metrics[version]
        table.add_row(role, version, fmt(m["auc_roc"]), fmt(m["average_precision"]), fmt(m[CP_KEY]))
    console.print(table)


def print_document(console: Console, document: dict[str, Any]) -> None:
    """One table row per model of a metrics document (champion first)."""
    span = document["range"]
    _print_models(
        console,
        f"{span['from']} .. {span['to']}: {span['rows']:,} transactions "
        f"({span['frauds']:,} frauds)",
        [(model["role"], model["version"]) for model in document["models"]],
        document["metrics"],
    )


def print_summary(console: Console, result: RangeEvaluation) -> None:
    """One table row per model (champion first), then where the outputs went."""
    span = result.files.document["range"]
    _print_models(
        console,
        f"Evaluation {span['from']} .. {span['to']}: {result.rows:,} transactions "
        f"({span['frauds']:,} frauds), {result.history_rows:,} history rows",
        [(info.role, info.version) for info in result.models],
        result.metrics,
    )
    files = result.files
    console.print(f"→ {files.scored}\n→ {files.metrics}\n→ {files.report}")
