"""``stream-app demo``: the whole system end to end on this machine, in one command."""

from __future__ import annotations

import time
from collections import Counter
from typing import Annotated, Any

import typer
from rich.table import Table


def delete_run_topics(settings: Any) -> int:
    """Delete the topics of one demo run (its prefix and its app's internal topics)."""
    from stream_app.io.topics import make_admin

    admin = make_admin(settings)
    names = [
        name
        for name in admin.list_topics(timeout=10).topics
        if name.startswith((settings.topic_prefix, f"{settings.app_id}-"))
    ]
    for future in admin.delete_topics(names, operation_timeout=30).values() if names else []:
        future.result()
    return len(names)


def use_running_broker(settings: Any) -> bool:
    """True when KAFKA_BOOTSTRAP_SERVERS is a local address on which a Kafka broker already
    answers that `stream-app broker` did not start (another broker home, a test session's, a
    container's): the demo then uses it instead of failing to start its own on a taken port."""
    import logging

    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    from stream_app.broker.local import local_port, port_in_use
    from stream_app.cli.broker import _broker

    port = local_port(settings.kafka_bootstrap_servers)
    if port is None or not port_in_use(port) or _broker(settings).status().running:
        return False
    admin = AdminClient(
        {**settings.kafka_client_config(), "socket.connection.setup.timeout.ms": 2000},
        logger=logging.getLogger("stream_app.demo.probe"),
    )
    try:
        return bool(admin.list_topics(timeout=5.0).brokers)
    except KafkaException:
        return False


def _score_table(scored: list[dict[str, Any]], show: int) -> Table:
    """The ``show`` highest-scored envelopes with their top reason."""
    table = Table(
        "event_id",
        "customer",
        "amount",
        "score",
        "decision",
        "top reason",
        "latency ms",
        title=f"Highest {show} scores",
    )
    for envelope in sorted(scored, key=lambda e: -e["score"])[:show]:
        top = envelope["explanation"]["contributions"][0]
        amount = next(
            (
                c["value"]
                for c in envelope["explanation"]["contributions"]
                if c["feature"] == "TX_AMOUNT"
            ),
            None,
        )
        table.add_row(
            envelope["event_id"],
            envelope["customer_id"],
            "" if amount is None else f"{amount:.2f}",
            f"{envelope['score']:.4f}",
            envelope["decision"],
            f"{top['feature']} {top['contribution']:+.2f}",
            f"{envelope['latency_ms']:.0f}",
        )
    return table


def demo(
    events: Annotated[int, typer.Option(help="Synthetic transactions to publish.")] = 3000,
    rate: Annotated[
        float, typer.Option(help="Publish rate, events/s (0 = as fast as possible).")
    ] = 300.0,
    show: Annotated[int, typer.Option(help="Score envelopes to print.")] = 15,
) -> None:
    """Broker, topics, model, worker, events in, scores out.

    Starts the local Kafka broker (unless KAFKA_BOOTSTRAP_SERVERS names another cluster, or a
    local address where a broker already answers), applies the topic declarations, trains a model
    on the generator if the registry is empty, starts a worker, publishes synthetic transactions
    with their labels, prints the score envelopes as they arrive, then stops the worker and
    deletes this run's topics. The broker keeps running: `stream-app broker stop` stops it.
    """
    import orjson
    from confluent_kafka import Consumer
    from rich.console import Console

    from stream_app.cli.broker import start as start_broker
    from stream_app.cli.publish import print_summary, run_publish
    from stream_app.cli.train import train
    from stream_app.config import get_settings
    from stream_app.io.topics import ensure_topics
    from stream_app.scoring.registry import list_versions
    from stream_app.tools.worker_process import WorkerProcess

    console = Console()
    started = time.monotonic()
    run = time.strftime("%Y%m%dT%H%M%S")
    # Each run gets its own topics and consumer group: the generator replays recent days, which a
    # previous run's customer state would (rightly) reject as too late.
    settings = get_settings().model_copy(
        update={"topic_prefix": f"demo-{run}.", "app_id": f"stream-app-demo-{run}"}
    )
    console.rule("[bold]1 · Kafka broker")
    bootstrap = settings.kafka_bootstrap_servers
    if use_running_broker(settings):
        console.print(f"a Kafka broker already answers at {bootstrap}: using it")
    else:
        start_broker(timeout=90.0)
    console.rule("[bold]2 · Topics")
    ensure_topics(settings)
    console.print(f"declared topics present on {bootstrap}")
    console.rule("[bold]3 · Model")
    versions = list_versions(settings.models_dir)
    if versions:
        console.print(f"champion: {versions[-1]} (from {settings.models_dir})")
    else:
        train(
            data=None,
            train_start=None,
            model="logreg",
            out=None,
            seed=7,
            customers=1000,
            terminals=2000,
        )
    console.rule("[bold]4 · Worker")
    worker = WorkerProcess(
        settings.state_dir / "demo",
        {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "STREAM_APP_TOPIC_PREFIX": settings.topic_prefix,
            "STREAM_APP_APP_ID": settings.app_id,
        },
    )
    worker.start()
    try:
        with console.status("Waiting for the worker to join the group and recover its tables…"):
            ready_s = worker.wait_ready(timeout=120)
        console.print(
            f"worker ready in {ready_s:.1f} s (pid {worker.proc.pid if worker.proc else '?'},"
            f" log {worker.log_path})"
        )
        consumer = Consumer(
            {
                **settings.kafka_client_config(),
                "group.id": f"demo-{time.time()}",
                # The topics are this run's own: read them from the start. ("latest" lost the
                # scores published before the group's assignment, which can take longer than
                # the publish on a broker with a group.initial.rebalance.delay.ms.)
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        consumer.subscribe([settings.topic("scores")])
        console.rule("[bold]5 · Events in")
        summary = run_publish(
            settings,
            synthetic=events,
            rate=rate,
            seed=int(time.time()) % 10_000,
            customers=1000,
            terminals=2000,
            console=console,
        )
        print_summary(console, summary, settings)
        console.rule("[bold]6 · Scores out")
        scored: list[dict[str, Any]] = []
        deadline = time.monotonic() + 120
        while len(scored) < events and time.monotonic() < deadline:
            for message in consumer.consume(500, timeout=1.0):
                value = message.value()
                if message.error() is None and value is not None:
                    scored.append(orjson.loads(value))
        consumer.close()
        console.print(_score_table(scored, show))
        latencies = sorted(e["latency_ms"] for e in scored) or [0.0]
        decisions = Counter(e["decision"] for e in scored)
        console.print(
            f"[bold green]{len(scored):,} of {events:,} events scored[/] · "
            f"{dict(decisions)} · latency p50 {latencies[len(latencies) // 2]:.0f} ms, "
            f"p99 {latencies[int(len(latencies) * 0.99)]:.0f} ms · "
            f"{time.monotonic() - started:.0f} s in all"
        )
        console.print(
            f"More: `stream-app tail scores --n 5` · `stream-app tail transactions.dlq`"
            f" · broker stays up at {bootstrap}: `stream-app broker stop`"
        )
        if len(scored) < events:
            raise typer.Exit(1)
    finally:
        worker.stop()
        removed = delete_run_topics(settings)
        console.print(f"removed this run's {removed} topics (prefix {settings.topic_prefix})")
