"""Old record timestamps must not make the data disappear (time-based retention counts from them).

A client that stamped each Kafka record with the transaction's event time (2018 handbook data)
saw retention delete everything on ``transactions`` and ``labels`` at the next check, and the
worker read nothing. The project's topics now take ``message.timestamp.type=LogAppendTime`` where
retention deletes by time, and no time limit elsewhere. This test publishes 2018-stamped
transactions and labels on a broker of its own whose retention check runs every
``RETENTION_CHECK_MS`` (the session broker checks every 5 minutes, and that setting is static):

* on topics declared as before (``CreateTime``) the same records ARE deleted (the test can fail);
* on the project's topics, and on every other topic the project creates, nothing is deleted;
* a worker then scores every transaction.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME, Consumer, Producer, TopicPartition

from stream_app.broker import LocalBroker, free_ports
from stream_app.config import Settings
from stream_app.devtools.worker_process import WorkerProcess
from stream_app.io.topics import apply_topics, load_topic_specs, project_topic_specs
from stream_app.sources.schedule import schedule
from stream_app.sources.simulator import simulate
from tests.kafka_reader import read_topic

pytestmark = pytest.mark.integration

RETENTION_CHECK_MS = 2000
PARTITIONS = 3
BAD_TRANSACTIONS = [b"{not json", b"[1,2,3]", b'{"event_id": "m1"}']


@pytest.fixture(scope="module")
def fast_retention_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """A second broker whose retention check runs every RETENTION_CHECK_MS (first after 1 s);
    stopped by its pid at the end."""
    port, controller_port = free_ports(2)
    broker = LocalBroker(
        tmp_path_factory.mktemp("retention-broker"),
        port=port,
        controller_port=controller_port,
        heap_mb=256,
        extra_properties={
            "log.retention.check.interval.ms": str(RETENTION_CHECK_MS),
            "log.initial.task.delay.ms": "1000",
        },
    )
    try:
        broker.start(timeout=120)
        yield broker
    finally:
        broker.stop()


def watermarks(bootstrap: str, topics: list[str]) -> dict[tuple[str, int], tuple[int, int]]:
    """(log start offset, log end offset) of every partition of ``topics``."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"wm-{uuid.uuid4()}"})
    try:
        out: dict[tuple[str, int], tuple[int, int]] = {}
        for topic in topics:
            meta = consumer.list_topics(topic, timeout=10).topics[topic]
            for p in sorted(meta.partitions):
                out[(topic, p)] = consumer.get_watermark_offsets(
                    TopicPartition(topic, p), timeout=10, cached=False
                )
        return out
    finally:
        consumer.close()


def produce_stamped(bootstrap: str, records: list[tuple[str, bytes | None, bytes, int]]) -> None:
    """Produce ``(topic, key, value, timestamp_ms)`` with those record timestamps, as a client
    that stamps records with their event time does (Java-compatible key hashing)."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "partitioner": "murmur2_random", "linger.ms": 20}
    )
    for topic, key, value, ts_ms in records:
        producer.produce(topic, value, key, timestamp=ts_ms)
    assert producer.flush(30) == 0


def test_records_stamped_in_2018_are_kept_and_scored(
    fast_retention_broker: LocalBroker,
    models_dir: Path,
    champion_version: str,
    tmp_path: Path,
) -> None:
    bootstrap = fast_retention_broker.bootstrap
    tag = uuid.uuid4().hex[:8]

    def conf(name: str) -> Settings:
        return Settings(
            kafka_bootstrap_servers=bootstrap,
            topic_prefix=f"{name}-{tag}.",
            app_id=f"{name}-{tag}",
            partitions=PARTITIONS,
        )

    ours, before, probe = conf("ours"), conf("before"), conf("probe")
    # ours: the declared topics, as the worker will find them
    apply_topics(ours, load_topic_specs(ours))
    # before: transactions and labels declared as they were (producer's timestamps, 14 / 45 days)
    old = {"transactions": 1_209_600_000, "labels": 3_888_000_000}
    apply_topics(
        before,
        [
            dataclasses.replace(s, retention_ms=old[name], timestamp_type="CreateTime")
            for s in load_topic_specs(before)
            if (name := s.name.removeprefix(before.topic_prefix)) in old
        ],
    )
    # probe: every topic the project creates (declared + the tables' changelogs), stamped alike
    probe_specs = project_topic_specs(probe)
    apply_topics(probe, probe_specs)

    items = list(
        simulate(
            n_customers=60,
            n_terminals=90,
            days=10,
            seed=11,
            start=datetime(2018, 4, 1, tzinfo=UTC),
        )
    )
    records = list(schedule(items))
    n_transactions = sum(1 for r in records if r.topic == "transactions")
    n_labels = len(records) - n_transactions
    assert n_transactions == len(items) > 500
    first_ms = int(records[0].time.timestamp() * 1000)
    stamped: list[tuple[str, bytes | None, bytes, int]] = []
    for settings in (ours, before):
        stamped += [
            (settings.topic(r.topic), r.key.encode(), r.value, int(r.time.timestamp() * 1000))
            for r in records
        ]
        stamped += [
            (settings.topic("transactions"), b"c1", value, first_ms) for value in BAD_TRANSACTIONS
        ]
    stamped += [
        (spec.name, f"k{i}".encode(), b"{}", first_ms + i)
        for spec in probe_specs
        for i in range(20)
    ]
    produce_stamped(bootstrap, stamped)
    produced_at = time.monotonic()

    inputs = ["transactions", "labels"]
    ours_inputs = [ours.topic(n) for n in inputs]
    before_inputs = [before.topic(n) for n in inputs]
    probe_topics = [spec.name for spec in probe_specs]
    published = watermarks(bootstrap, ours_inputs + before_inputs)
    # The CreateTime topics may already be losing records to a retention check (every 2 s):
    # only the declared topics must still start at 0 here.
    assert all(low == 0 for (topic, _), (low, _) in published.items() if topic in ours_inputs)
    assert all(high > 0 for high in (published[k][1] for k in published))
    assert sum(published[k][1] for k in published if k[0] in ours_inputs) == len(records) + 3

    # The CreateTime topics lose everything at a retention check; then two more checks pass.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        gone = watermarks(bootstrap, before_inputs)
        if all(low == high for low, high in gone.values()):
            break
        time.sleep(0.5)
    deleted_at = time.monotonic()
    print(f"CreateTime topics emptied {deleted_at - produced_at:.1f} s after the produce")
    time.sleep(2.5 * RETENTION_CHECK_MS / 1000)
    after = watermarks(bootstrap, ours_inputs + before_inputs + probe_topics)
    print("log start / end offsets after the retention checks:")
    for (topic, partition), (low, high) in sorted(after.items()):
        print(f"  {topic}[{partition}]: {low} / {high}")

    for key in ((t, p) for t in before_inputs for p in range(PARTITIONS)):
        low, high = after[key]
        assert high > 0
        assert low == high, f"{key}: CreateTime with 2018 timestamps should have been deleted"
    kept = {key: low for key, (low, _) in after.items() if key[0] not in before_inputs}
    assert set(kept.values()) == {0}, {k: v for k, v in kept.items() if v}
    assert all(after[k][1] == published[k][1] for k in published if k[0] in ours_inputs)
    assert time.monotonic() - deleted_at >= 2 * RETENTION_CHECK_MS / 1000

    # The worker reads it all: every transaction scored, the bad ones dead-lettered.
    worker = WorkerProcess(
        tmp_path / "worker",
        {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "STREAM_APP_TOPIC_PREFIX": ours.topic_prefix,
            "STREAM_APP_APP_ID": ours.app_id,
            "STREAM_APP_PARTITIONS": str(PARTITIONS),
            "STREAM_APP_MODELS_DIR": str(models_dir),
            "STREAM_APP_CHAMPION": champion_version,
            "STREAM_APP_STATE_DIR": str(tmp_path / "state"),
            "STREAM_APP_WEB_PORT": str(free_ports(1)[0]),
        },
    )
    worker.start()
    try:
        worker.wait_ready()
        scores = read_topic(bootstrap, ours.topic("scores"), expect=n_transactions)
        dlq = read_topic(bootstrap, ours.topic("transactions.dlq"), expect=3)
    finally:
        worker.stop()
    envelopes = [orjson.loads(m.value()) for m in scores]
    assert len(envelopes) == n_transactions
    assert {e["event_id"] for e in envelopes} == {i.event["event_id"] for i in items}
    assert sorted(orjson.loads(m.value())["reason"] for m in dlq) == sorted(
        ["invalid_json", "not_an_object", "missing_field"]
    )
    # Outputs are stamped by the broker when they arrive, whatever their producer sets.
    started = time.time() * 1000 - 600_000
    for message in [*scores, *dlq]:
        kind, ts_ms = message.timestamp()
        assert kind == TIMESTAMP_LOG_APPEND_TIME
        assert ts_ms > started
    print(f"{n_transactions} transactions and {n_labels} labels stamped 2018-04-01..; all scored")
