"""``stream-app publish``: publish transactions and their delayed labels to Kafka.

The events come from the simulator (``--synthetic N``) or the fraud-handbook CSV (``--csv PATH``)
and go through one schedule (:mod:`stream_app.sources.schedule`): each transaction on
``transactions`` keyed by customer_id, its label ``--label-delay-days`` later on ``labels`` keyed
by terminal_id, all in time order. Labels whose label time is still in the future are withheld:
they are not known yet (and the worker would reject them as more than a day ahead).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from collections.abc import Iterator

    from rich.console import Console

    from stream_app.config import Settings
    from stream_app.sources.schedule import LabelledTransaction

EXIT_ERROR = 1


@dataclass
class PublishSummary:
    """What a publish run did."""

    transactions: int = 0
    labels: int = 0
    withheld_labels: int = 0
    first_event_time: datetime | None = None
    last_event_time: datetime | None = None
    seconds: float = 0.0
    delivered: dict[str, int] = field(default_factory=dict)
    """Delivered record counts per declared topic name."""

    @property
    def records(self) -> int:
        """Transactions plus labels."""
        return self.transactions + self.labels

    @property
    def events_per_second(self) -> float:
        """Records delivered per wall-clock second."""
        return self.records / self.seconds if self.seconds > 0 else 0.0


def _parse_day(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} is not a date YYYY-MM-DD", param_hint=option) from exc


def _source(
    *,
    synthetic: int | None,
    csv: Path | None,
    date_from: date | None,
    date_to: date | None,
    seed: int,
    customers: int,
    terminals: int,
    limit: int | None,
) -> tuple[Iterator[LabelledTransaction], int | None]:
    """The labelled transactions to publish, and their number when known in advance."""
    from datetime import UTC

    if (synthetic is None) == (csv is None):
        raise typer.BadParameter("give exactly one of --synthetic N or --csv PATH")
    if csv is not None:
        from stream_app.sources.handbook_csv import read_csv_events

        return read_csv_events(csv, date_from=date_from, date_to=date_to, limit=limit), limit
    from stream_app.sources.simulator import TransactionSimulator

    assert synthetic is not None
    n_events = synthetic if limit is None else min(synthetic, limit)
    if date_to is not None and date_from is None:
        raise typer.BadParameter("with --synthetic, --to needs --from", param_hint="--to")
    if date_from is not None and date_to is not None and date_to < date_from:
        raise typer.BadParameter(f"--to {date_to} is before --from {date_from}")
    start = (
        datetime(date_from.year, date_from.month, date_from.day, tzinfo=UTC)
        if date_from is not None
        else None
    )
    days = (date_to - date_from).days + 1 if date_from is not None and date_to else None
    try:
        simulator = TransactionSimulator(
            n_customers=customers,
            n_terminals=terminals,
            start=start,
            days=days,
            n_events=n_events,
            seed=seed,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    return iter(simulator), (n_events if days is None else None)


def run_publish(
    settings: Settings,
    *,
    synthetic: int | None = None,
    csv: Path | None = None,
    date_from: date | None = None,
    date_to: date | None = None,
    rate: float = 0.0,
    label_delay_days: float = 7.0,
    labels: bool = True,
    seed: int = 42,
    customers: int = 5000,
    terminals: int = 10000,
    limit: int | None = None,
    console: Console | None = None,
    progress: bool = True,
    ensure: bool = True,
) -> PublishSummary:
    """Publish one source's schedule with ``settings``; return the summary.

    Creates the missing declared topics first (``ensure``). Raises ``StreamAppError`` subclasses
    (``DatasetError``, ``TopicError``, ``PublishError``) and ``typer.BadParameter``.
    """
    from datetime import UTC, timedelta

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    from stream_app.sources.producer import publish_records
    from stream_app.sources.schedule import LABELS, TRANSACTIONS, ScheduleStats, schedule

    if rate < 0:
        raise typer.BadParameter("must not be negative", param_hint="--rate")
    if label_delay_days < 0:
        raise typer.BadParameter("must not be negative", param_hint="--label-delay-days")
    if limit is not None and limit < 1:
        raise typer.BadParameter("must be at least 1", param_hint="--limit")
    items, n_tx = _source(
        synthetic=synthetic,
        csv=csv,
        date_from=date_from,
        date_to=date_to,
        seed=seed,
        customers=customers,
        terminals=terminals,
        limit=limit,
    )
    if ensure:
        from stream_app.io.topics import ensure_topics

        ensure_topics(settings, [TRANSACTIONS, LABELS])

    stats = ScheduleStats()
    records = schedule(
        items,
        label_delay=timedelta(days=label_delay_days),
        labels=labels,
        labels_until=datetime.now(UTC),
        stats=stats,
    )
    started = time.monotonic()
    if progress:
        bar = Progress(
            SpinnerColumn(),
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>10,.0f} events/s"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        # The total is an upper bound when labels may be withheld; it is fixed at the end.
        total = None if n_tx is None else n_tx * (2 if labels else 1)
        with bar:
            task = bar.add_task("publishing", total=total, rate=0.0)

            def advance(n: int) -> None:
                elapsed = time.monotonic() - started
                done = bar.tasks[0].completed + n
                bar.update(task, advance=n, rate=done / elapsed if elapsed > 0 else 0.0)

            delivered = publish_records(settings, records, rate=rate, on_progress=advance)
            done = bar.tasks[0].completed
            bar.update(task, total=done, rate=done / max(time.monotonic() - started, 1e-9))
    else:
        delivered = publish_records(settings, records, rate=rate)
    return PublishSummary(
        transactions=delivered.get(TRANSACTIONS, 0),
        labels=delivered.get(LABELS, 0),
        withheld_labels=stats.withheld_labels,
        first_event_time=stats.first_event_time,
        last_event_time=stats.last_event_time,
        seconds=time.monotonic() - started,
        delivered=delivered,
    )


def print_summary(console: Console, summary: PublishSummary, settings: Settings) -> None:
    """Print a publish summary as a table."""
    from rich.table import Table

    from stream_app.sources.schedule import LABELS, TRANSACTIONS

    table = Table("", "", title="published", show_header=False)
    table.add_row(f"transactions → {settings.topic(TRANSACTIONS)}", f"{summary.transactions:,}")
    label_note = (
        f" ({summary.withheld_labels:,} withheld: label time after now)"
        if summary.withheld_labels
        else ""
    )
    table.add_row(f"labels → {settings.topic(LABELS)}", f"{summary.labels:,}{label_note}")
    span = "-"
    if summary.first_event_time and summary.last_event_time:
        span = f"{summary.first_event_time.isoformat()} .. {summary.last_event_time.isoformat()}"
    table.add_row("event time span", span)
    table.add_row("seconds", f"{summary.seconds:.2f}")
    table.add_row("events/s", f"{summary.events_per_second:,.0f}")
    console.print(table)


def publish(
    synthetic: Annotated[
        int | None,
        typer.Option(
            "--synthetic", min=1, help="Publish N simulated transactions.", show_default=False
        ),
    ] = None,
    csv: Annotated[
        Path | None,
        typer.Option(
            "--csv",
            dir_okay=False,
            help="Publish this fraud-handbook CSV (.csv or .csv.gz) in event-time order, e.g. "
            "../shared/datasets/fraud-handbook/transactions.csv.gz.",
            show_default=False,
        ),
    ] = None,
    date_from: Annotated[
        str | None,
        typer.Option(
            "--from",
            metavar="YYYY-MM-DD",
            help="First day (inclusive). CSV: filter; synthetic: the first simulated day "
            "(default: the run ends by today).",
            show_default=False,
        ),
    ] = None,
    date_to: Annotated[
        str | None,
        typer.Option(
            "--to",
            metavar="YYYY-MM-DD",
            help="Last day (inclusive). CSV: filter; synthetic: needs --from, caps the run.",
            show_default=False,
        ),
    ] = None,
    rate: Annotated[
        float,
        typer.Option(
            "--rate",
            min=0,
            help="Records per second, in the order produced across topics (a live stream); "
            "0 = as fast as possible, batched.",
        ),
    ] = 0.0,
    label_delay_days: Annotated[
        float,
        typer.Option("--label-delay-days", min=0, help="Days between a payment and its label."),
    ] = 7.0,
    no_labels: Annotated[
        bool, typer.Option("--no-labels", help="Publish transactions only.")
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="Simulator seed.")] = 42,
    customers: Annotated[
        int, typer.Option("--customers", min=1, help="Simulated customers.")
    ] = 5000,
    terminals: Annotated[
        int, typer.Option("--terminals", min=1, help="Simulated terminals.")
    ] = 10000,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit", min=1, help="Publish at most this many transactions.", show_default=False
        ),
    ] = None,
) -> None:
    """Publish transactions (and their labels, after a delay) to Kafka, in event-time order."""
    from rich.console import Console
    from rich.markup import escape

    from stream_app.cli.settings import command_settings
    from stream_app.exceptions import StreamAppError

    settings = command_settings()
    console = Console()
    try:
        summary = run_publish(
            settings,
            synthetic=synthetic,
            csv=csv,
            date_from=_parse_day(date_from, "--from"),
            date_to=_parse_day(date_to, "--to"),
            rate=rate,
            label_delay_days=label_delay_days,
            labels=not no_labels,
            seed=seed,
            customers=customers,
            terminals=terminals,
            limit=limit,
            console=console,
        )
    except StreamAppError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(EXIT_ERROR) from exc
    print_summary(console, summary, settings)
