"""``stream-app topics``: create the declared topics (topics/topics.toml) and report drift."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from stream_app.io.topics import ApplyReport

app = typer.Typer(
    help=(
        "Topics as code: the topics declared in topics/topics.toml and the tables' changelogs. "
        "`apply` creates the missing ones and reports every difference between a live topic and "
        "its declaration; `list` shows the declarations and whether each topic exists."
    ),
    no_args_is_help=True,
)

EXIT_DIFFERENCES = 1
EXIT_ERROR = 2

FileOption = Annotated[
    Path | None,
    typer.Option(
        "--file",
        help="Topic declarations to use instead of topics/topics.toml.",
        dir_okay=False,
    ),
]


def _fail(console: Console, message: str) -> typer.Exit:
    from rich.markup import escape

    console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)  # one line
    return typer.Exit(EXIT_ERROR)


def _render_apply(console: Console, report: ApplyReport, fix: bool) -> None:
    from rich.table import Table

    title = "topics apply (dry run: nothing changed)" if report.dry_run else "topics apply"
    table = Table("topic", "status", "field", "declared", "live", "note", title=title)
    for name in report.created:
        table.add_row(name, "[yellow]would create[/]" if report.dry_run else "[green]created[/]")
    for name in report.unchanged:
        table.add_row(name, "[green]ok[/]")
    for diff in report.differences:
        if diff in report.fixed:
            status, note = ("[yellow]would fix[/]" if report.dry_run else "[green]fixed[/]"), ""
        else:
            status, note = "[red]differs[/]", diff.hint
            if not fix and diff.fixable:
                note = "fixable with --fix"
        table.add_row(diff.topic, status, diff.field, str(diff.declared), str(diff.live), note)
    console.print(table)
    summary = (
        f"{len(report.created)} {'to create' if report.dry_run else 'created'}, "
        f"{len(report.unchanged)} ok, {len(report.differences)} differences, "
        f"{len(report.fixed)} {'to fix' if report.dry_run else 'fixed'}, "
        f"{len(report.remaining)} remaining"
    )
    console.print(summary, style="green" if report.ok else "red")


@app.command("apply")
def apply_cmd(
    fix: Annotated[
        bool,
        typer.Option(
            "--fix",
            help=(
                "Repair what Kafka allows: add partitions up to the declared count and set "
                "declared config values. Fewer partitions and replication differences are only "
                "reported."
            ),
        ),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Change nothing; show what would be created (and fixed)."),
    ] = False,
    file: FileOption = None,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, help="Seconds to wait for each admin request.")
    ] = 30.0,
) -> None:
    """Create the missing topics and compare the existing ones with their declaration.

    The topics are the declared ones and the tables' changelogs of STREAM_APP_APP_ID
    (compacted, never deleted by time). Exit code 0 when every topic matches its declaration, 1
    when differences remain, 2 when the declarations are invalid, the cluster cannot be reached
    or has fewer brokers than STREAM_APP_REPLICATION_FACTOR asks for.
    """
    from rich.console import Console

    from stream_app.cli.settings import command_settings
    from stream_app.exceptions import StreamAppError
    from stream_app.io.topics import apply_topics, project_topic_specs

    console = Console()
    try:
        settings = command_settings()
        specs = project_topic_specs(settings, file)
        report = apply_topics(settings, specs, timeout=timeout, fix=fix, dry_run=dry_run)
    except StreamAppError as exc:
        raise _fail(Console(stderr=True), str(exc)) from exc
    _render_apply(console, report, fix)
    if not report.ok:
        raise typer.Exit(EXIT_DIFFERENCES)


def _human_ms(ms: int) -> str:
    if ms < 0:
        return "forever"
    days, rest = divmod(ms, 86_400_000)
    if days and rest and rest % 3_600_000 == 0:
        return f"{days}d{rest // 3_600_000}h"
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms >= size and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


@app.command("list")
def list_cmd(
    file: FileOption = None,
    offline: Annotated[
        bool, typer.Option("--offline", help="Do not ask the cluster whether the topics exist.")
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, help="Seconds to wait for the cluster.")
    ] = 10.0,
) -> None:
    """List the declared topics and the tables' changelogs: description, key, partitions,
    replication, retention, cleanup, timestamp type and whether each exists.

    Names include STREAM_APP_TOPIC_PREFIX; "default" partitions show STREAM_APP_PARTITIONS,
    "default" replication STREAM_APP_REPLICATION_FACTOR, "horizon" retention its value.
    """
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from stream_app.cli.settings import command_settings
    from stream_app.exceptions import StreamAppError
    from stream_app.io.topics import live_topics, make_admin, project_topic_specs

    console = Console()
    try:
        settings = command_settings()
        specs = project_topic_specs(settings, file)
    except StreamAppError as exc:
        raise _fail(Console(stderr=True), str(exc)) from exc

    live: dict[str, tuple[int, int]] | None = None
    if not offline:
        try:
            live = live_topics(settings, make_admin(settings), timeout)
        except StreamAppError as exc:
            Console(stderr=True).print(f"[yellow]warning:[/] {escape(str(exc))}")

    table = Table(
        "topic",
        "description",
        "key",
        "partitions",
        "replication",
        "retention",
        "cleanup",
        "timestamps",
        "exists",
    )
    for spec in specs:
        if live is None:
            exists = "?"
        elif spec.name in live:
            exists = "[green]yes[/]"
        else:
            exists = "[red]no[/]"
        table.add_row(
            spec.name,
            escape(spec.description),
            spec.key,
            str(spec.partitions),
            str(spec.replication),
            _human_ms(spec.retention_ms),
            spec.cleanup_policy,
            spec.timestamp_type,
            exists,
        )
    console.print(table)


@app.command("grow")
def grow_cmd(
    partitions: Annotated[
        int,
        typer.Option(
            "--partitions", min=1, help="The new partition count of every co-partitioned topic."
        ),
    ],
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, help="Seconds to wait for each admin request.")
    ] = 30.0,
) -> None:
    """Grow every co-partitioned topic to --partitions and move the tables' state with it.

    The co-partitioned topics are transactions, labels, their reroute topics, the by-terminal
    repartition topic and both tables' changelogs of STREAM_APP_APP_ID. Stop the workers first
    (the command refuses while the group has members); then start them with
    STREAM_APP_PARTITIONS set to the new count. Running it again finishes an interrupted move.
    Exit code 0 when done, 2 when refused or failed.
    """
    from rich.console import Console
    from rich.table import Table

    from stream_app.cli.settings import command_settings
    from stream_app.exceptions import StreamAppError
    from stream_app.operations.grow import grow

    console = Console()
    try:
        settings = command_settings()
        with console.status("growing") as status:
            report = grow(settings, partitions, timeout, on_progress=status.update)
    except StreamAppError as exc:
        raise _fail(Console(stderr=True), str(exc)) from exc
    table = Table(title=f"co-partitioned topics: {partitions} partitions")
    table.add_column("topic")
    table.add_column("partitions before", justify="right")
    table.add_column("grown")
    for name, count in sorted(report.before.items()):
        table.add_row(name, str(count), "yes" if name in report.grown else "no (already)")
    console.print(table)
    for name in sorted(report.keys):
        console.print(
            f"{name}: {report.keys[name]:,} keys with state, {report.moved[name]:,} moved to "
            "their new partition"
        )
    console.print(
        f"Start the workers with STREAM_APP_PARTITIONS={partitions}; records still on the old "
        "partitions are rerouted to their keys' new partitions as they are read."
    )
