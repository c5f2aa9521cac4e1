"""Input records deleted before the worker read them are counted and logged, per partition and
exactly, both while the worker runs (its next fetch jumps to the new log start) and across a
restart (the first fetch starts past the committed offset); the rest is scored.

The deletion is a DeleteRecords, as retention would do it to a worker that lags too far."""

from __future__ import annotations

import re
import signal
import time
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from stream_app.config import Settings
from stream_app.devtools.worker_process import WorkerProcess
from stream_app.sources.producer import BulkProducer
from stream_app.sources.schedule import schedule
from stream_app.sources.simulator import simulate
from tests.kafka_reader import read_topic

pytestmark = pytest.mark.integration

DELETED_PER_PARTITION = 40
SKIPPED = re.compile(r'^stream_app_input_skipped_total\{partition="(\d+)",topic="([^"]+)"\} (\S+)$')


def publish(settings: Settings, n: int, seed: int) -> set[str]:
    """``n`` transactions; each seed's 90 days after the previous one's (none is too late)."""
    items = list(
        simulate(
            n_customers=150,
            n_terminals=200,
            n_events=n,
            seed=seed,
            start=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=90 * seed),
        )
    )
    with BulkProducer(settings) as producer:
        for record in schedule(items, labels=False):
            producer.produce(settings.topic(record.topic), record.key, record.value)
    return {i.event["event_id"] for i in items}


def ends(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "ends"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        }
    finally:
        consumer.close()


def delete_after(bootstrap: str, topic: str, read: dict[int, int]) -> int:
    """Delete the DELETED_PER_PARTITION records of each partition that follow ``read``."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    wanted = [
        TopicPartition(topic, p, offset + DELETED_PER_PARTITION) for p, offset in read.items()
    ]
    for future in admin.delete_records(wanted).values():
        future.result(timeout=30)
    return DELETED_PER_PARTITION * len(read)


def skipped(port: int, topic: str) -> dict[int, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        match = SKIPPED.match(line)
        if match and match.group(2) == topic:
            out[int(match.group(1))] = float(match.group(3))
    return out


def wait_skipped(port: int, topic: str, expected: dict[int, float]) -> dict[int, float]:
    deadline = time.monotonic() + 60
    seen: dict[int, float] = {}
    while time.monotonic() < deadline:
        seen = skipped(port, topic)
        if seen == expected:
            break
        time.sleep(1)
    return seen


def assert_logged(worker: WorkerProcess, topic: str, read: dict[int, int]) -> None:
    """The worker's log names each deleted range (the DELETED_PER_PARTITION after ``read``)."""
    log = worker.log_text()
    for p, offset in read.items():
        assert (
            f"{topic}[{p}]: records {offset}..{offset + DELETED_PER_PARTITION - 1} were "
            "deleted before the worker read them"
        ) in log, worker.tail(20)


def test_input_deleted_before_it_was_read_is_counted_and_logged(
    app_env, app_settings, kafka_bootstrap, tmp_path
) -> None:
    settings = app_settings
    tx_topic = settings.topic("transactions")
    port = int(app_env["STREAM_APP_WEB_PORT"])
    worker = WorkerProcess(tmp_path / "worker", app_env)
    worker.start()
    try:
        worker.wait_ready()
        first = publish(settings, 300, seed=1)
        read_topic(kafka_bootstrap, settings.topic("scores"), expect=300, settle=0)

        # 1. While it runs: frozen, it cannot read; the records after what it read are deleted.
        read = ends(kafka_bootstrap, tx_topic)
        assert worker.proc is not None
        worker.proc.send_signal(signal.SIGSTOP)
        try:
            second = publish(settings, 600, seed=2)
            lost_running = delete_after(kafka_bootstrap, tx_topic, read)
        finally:
            worker.proc.send_signal(signal.SIGCONT)
        expected = {p: float(DELETED_PER_PARTITION) for p in read}
        assert wait_skipped(port, tx_topic, expected) == expected
        assert_logged(worker, tx_topic, read)

        # 2. Across a restart: stopped (its offsets committed), then the next records deleted.
        assert worker.stop() == 0
        read = ends(kafka_bootstrap, tx_topic)
        third = publish(settings, 600, seed=3)
        lost_stopped = delete_after(kafka_bootstrap, tx_topic, read)
        worker.start()
        worker.wait_ready()
        assert wait_skipped(port, tx_topic, expected) == expected  # a new process counts anew
        assert_logged(worker, tx_topic, read)

        published = len(first) + len(second) + len(third)
        lost = lost_running + lost_stopped
        scores = read_topic(
            kafka_bootstrap, settings.topic("scores"), expect=published - lost, timeout=120
        )
    finally:
        worker.stop()
    print(
        f"\n{published} transactions published, {lost} deleted unread "
        f"({lost_running} while the worker was frozen, {lost_stopped} while it was stopped); "
        f"{len(scores)} scored"
    )
    assert len(scores) == published - lost
