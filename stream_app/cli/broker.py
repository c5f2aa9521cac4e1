"""``stream-app broker start|stop|status|logs``: the local single-node Kafka broker.

The broker lives in ``STREAM_APP_BROKER_HOME`` (data, logs, pid file); its jars are cached once
per Kafka version in ``~/.cache/stream_app/kafka-<version>/libs``. The port comes from
``KAFKA_BOOTSTRAP_SERVERS`` when that is a local address (default ``127.0.0.1:9092``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from stream_app.broker import LocalBroker
    from stream_app.config import Settings

DEFAULT_PORT = 9092

app = typer.Typer(
    help=(
        "Run a real local Apache Kafka broker (single KRaft node, no Docker): start, stop, "
        "status, logs. Needs Java 17+; Maven downloads the Kafka jars once."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def _settings() -> Settings:
    from stream_app.cli.settings import command_settings

    return command_settings()


def _broker(settings: Settings) -> LocalBroker:
    """The LocalBroker the settings describe (port from a local KAFKA_BOOTSTRAP_SERVERS)."""
    from stream_app.broker import LocalBroker, local_port

    port = local_port(settings.kafka_bootstrap_servers) or DEFAULT_PORT
    return LocalBroker(
        home=settings.broker_home,
        port=port,
        heap_mb=settings.broker_heap_mb,
        kafka_version=settings.kafka_version,
    )


def _fail(message: str) -> typer.Exit:
    _console(stderr=True).print(f"[bold red]error:[/] {message}", markup=True)
    return typer.Exit(code=1)


@app.command(
    help=(
        "Start the local broker (idempotent) and print its bootstrap address and log path.\n\n"
        "Downloads the Kafka jars with Maven on first use, formats the storage once, starts the "
        "JVM in the background and waits until it answers. Does nothing (exit 0) when "
        "KAFKA_BOOTSTRAP_SERVERS points at a non-local cluster."
    )
)
def start(
    timeout: float = typer.Option(
        60.0, "--timeout", min=1.0, help="Seconds to wait for the broker to answer."
    ),
) -> None:
    """Start the local broker (idempotent); print its bootstrap address and log path."""
    from stream_app.broker import local_port
    from stream_app.exceptions import BrokerError

    settings = _settings()
    console = _console()
    if local_port(settings.kafka_bootstrap_servers) is None:
        source = (
            "KAFKA_BOOTSTRAP_SERVERS"
            if os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
            else "kafka_bootstrap_servers"
        )
        console.print(
            f"{source}={settings.kafka_bootstrap_servers} points at an external cluster: "
            "not starting a local broker."
        )
        return
    broker = _broker(settings)
    try:
        already = broker.status().running
        if not broker.jars_present():
            with console.status(
                f"Downloading Kafka jars with Maven… (Kafka {broker.kafka_version}, once)"
            ):
                broker.ensure_jars()
        with console.status("Waiting for the broker…"):
            bootstrap = broker.start(timeout=timeout)
    except BrokerError as exc:
        raise _fail(str(exc)) from None
    status = broker.status()
    verb = "already running" if already else "started"
    console.print(f"[green]Kafka broker {verb}[/] (pid {status.pid})", markup=True)
    console.print(f"bootstrap: [bold]{bootstrap}[/]", markup=True)
    console.print(f"log:       {status.log_path}")
    console.print(f"data:      {status.data_dir}")


@app.command(
    help=(
        "Stop the local broker: SIGTERM, then SIGKILL after --timeout seconds.\n\n"
        "Only the JVM recorded in the broker's pid file, and started for this broker home, is "
        "signalled; nothing is killed by name."
    )
)
def stop(
    timeout: float = typer.Option(
        30.0, "--timeout", min=1.0, help="Seconds to wait after SIGTERM before SIGKILL."
    ),
) -> None:
    """Stop the local broker (SIGTERM, then SIGKILL after ``timeout``)."""
    from stream_app.exceptions import BrokerError

    broker = _broker(_settings())
    console = _console()
    try:
        pid = broker.status().pid
        with console.status("Stopping the broker…"):
            stopped = broker.stop(timeout=timeout)
    except BrokerError as exc:
        raise _fail(str(exc)) from None
    if stopped:
        console.print(f"[green]Kafka broker stopped[/] (pid {pid})", markup=True)
    else:
        console.print(f"No local Kafka broker running in {broker.home}.")


@app.command(
    help=(
        "Show whether the local broker runs, its pid, bootstrap address, log and data dirs.\n\n"
        "Exit code 0 when it runs, 1 when it does not (handy in scripts)."
    )
)
def status() -> None:
    """Show the broker's state; exit code 1 when it is not running."""
    from rich.table import Table

    broker = _broker(_settings())
    st = broker.status()
    table = Table(show_header=False, box=None)
    table.add_row("running", "[green]yes[/]" if st.running else "[red]no[/]")
    table.add_row("pid", str(st.pid) if st.pid is not None else "-")
    table.add_row("bootstrap", st.bootstrap)
    table.add_row("kafka", broker.kafka_version)
    table.add_row("home", str(st.home))
    table.add_row("log", str(st.log_path))
    table.add_row("data", str(st.data_dir))
    table.add_row("jars", str(broker.jars_dir) + ("" if broker.jars_present() else " (missing)"))
    _console().print(table)
    if not st.running:
        raise typer.Exit(code=1)


@app.command()
def logs(
    n: int = typer.Option(50, "--n", "-n", min=1, help="How many of the last lines to print."),
) -> None:
    """Print the last --n lines of the broker log (logs/server.log in the broker home)."""
    broker = _broker(_settings())
    if not broker.log_path.exists():
        raise _fail(f"no broker log yet at {broker.log_path} (run `stream-app broker start`).")
    console = _console()
    for line in broker.tail_log(n):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
