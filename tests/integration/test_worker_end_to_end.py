"""Events in, scores out, on the real broker: exact counts, schema-valid envelopes, dead letters."""

import base64
from datetime import UTC, datetime

import orjson
import pytest

from stream_app.io.schemas import validate
from stream_app.sources.producer import BulkProducer
from stream_app.sources.schedule import schedule
from stream_app.sources.simulator import simulate
from tests.kafka_reader import processed_by, read_topic

pytestmark = pytest.mark.integration


def events(n, seed):
    return list(
        simulate(
            n_customers=200,
            n_terminals=300,
            n_events=n,
            seed=seed,
            start=datetime(2026, 3, 1, tzinfo=UTC),
        )
    )


def test_1000_events_give_1000_valid_envelopes(worker, app_settings, kafka_bootstrap):
    items = events(1000, seed=21)
    with BulkProducer(app_settings) as producer:
        for record in schedule(items):
            producer.produce(app_settings.topic(record.topic), record.key, record.value)
    done = processed_by(app_settings)
    scores = read_topic(kafka_bootstrap, app_settings.topic("scores"), 1000, **done)
    envelopes = [orjson.loads(m.value()) for m in scores]
    assert len(envelopes) == 1000
    assert {e["event_id"] for e in envelopes} == {i.event["event_id"] for i in items}
    for message, envelope in zip(scores, envelopes, strict=True):
        validate("score_envelope", envelope)
        assert message.key().decode() == envelope["customer_id"]
        # which input contract produced it
        assert envelope["data_contract"] == "https://stream-app.dev/schemas/transaction.schema.json"
        assert envelope["data_contract_version"] == 1
    assert read_topic(kafka_bootstrap, app_settings.topic("transactions.dlq"), 0, **done) == []


MALFORMED = [
    (b"c1", b"{not json"),
    (b"c1", b""),
    (b"c1", b"\xff\xfe\xfd"),
    (b"c1", b"[1,2,3]"),
    (b"c1", b"null"),
    (b"c1", b'{"event_id": "m1"}'),
    (
        b"c1",
        b'{"event_id":"m2","event_time":"2026-03-01T00:00:00Z","customer_id":"c1",'
        b'"terminal_id":"t","amount":"12","schema_version":1}',
    ),
    (
        b"c1",
        b'{"event_id":"m3","event_time":"2026-03-01T00:00:00Z","customer_id":"c1",'
        b'"terminal_id":"t","amount":-5,"schema_version":1}',
    ),
    (
        b"c1",
        b'{"event_id":"m4","event_time":"yesterday","customer_id":"c1",'
        b'"terminal_id":"t","amount":5,"schema_version":1}',
    ),
    (
        b"c1",
        b'{"event_id":"m5","event_time":"1971-03-01T00:00:00Z","customer_id":"c1",'
        b'"terminal_id":"t","amount":5,"schema_version":1}',
    ),
    (
        b"c1",
        b'{"event_id":"m6","event_time":"2999-03-01T00:00:00Z","customer_id":"c1",'
        b'"terminal_id":"t","amount":5,"schema_version":1}',
    ),
    (
        b"c1",
        b'{"event_id":"m7","event_time":"2026-03-01T00:00:00Z","customer_id":"c1",'
        b'"terminal_id":"t","amount":5,"schema_version":9}',
    ),
    (
        b"c1",
        b'{"event_id":"m8","event_time":"2026-03-01T00:00:00Z","customer_id":"c1",'
        b'"terminal_id":"t","amount":5,"schema_version":1,"surprise":true}',
    ),
    (
        b"other",
        b'{"event_id":"m9","event_time":"2026-03-01T00:00:00Z","customer_id":"c1",'
        b'"terminal_id":"t","amount":5,"schema_version":1}',
    ),
    (
        None,
        b'{"event_id":"m10","event_time":"2026-03-01T00:00:00Z","customer_id":"c1",'
        b'"terminal_id":"t","amount":5,"schema_version":1}',
    ),
    (
        b"c1",
        b'{"event_id":"m11","event_time":"2026-03-01T00:00:00Z","customer_id":"c1",'
        b'"terminal_id":"t","amount":NaN,"schema_version":1}',
    ),
    (
        b"c1",
        b'{"event_id":"m12","event_time":"2026-03-01T00:00:00Z","customer_id":"c1",'
        b'"terminal_id":"t","amount":1e999,"schema_version":1}',
    ),
    (
        b"c1",
        b'{"event_id":"bad id","event_time":"2026-03-01T00:00:00Z","customer_id":"c1",'
        b'"terminal_id":"t","amount":5,"schema_version":1}',
    ),
    (b"c1", b"x" * 70_000),
    (b"c1", b"\x80\x04\x95pickle"),
]


def test_malformed_events_land_in_dlq_and_good_ones_are_scored(
    worker, app_settings, kafka_bootstrap
):
    items = events(300, seed=22)
    topic = app_settings.topic("transactions")
    with BulkProducer(app_settings) as producer:
        for i, record in enumerate(schedule(items, labels=False)):
            producer.produce(topic, record.key, record.value)
            if i % 15 == 0 and i // 15 < len(MALFORMED):
                key, value = MALFORMED[i // 15]
                producer.produce(topic, key, value)
    assert len(MALFORMED) == 20
    done = processed_by(app_settings)
    dlq = read_topic(kafka_bootstrap, app_settings.topic("transactions.dlq"), 20, **done)
    scores = read_topic(kafka_bootstrap, app_settings.topic("scores"), 300, **done)
    assert {orjson.loads(m.value())["event_id"] for m in scores} == {
        i.event["event_id"] for i in items
    }
    assert len(scores) == 300
    records = [orjson.loads(m.value()) for m in dlq]
    assert len(records) == 20
    for record in records:
        validate("dead_letter", record)
        assert record["message"]
        assert record["source"]["topic"] == topic
    originals = sorted(
        (base64.b64decode(r["value_b64"]) if r["value_b64"] else b"") for r in records
    )
    assert originals == sorted(value for _, value in MALFORMED)
    reasons = sorted(r["reason"] for r in records)
    assert len(set(reasons)) >= 8, reasons


def test_the_repartition_topic_is_purged_up_to_the_committed_offsets(
    app_env, app_settings, kafka_bootstrap, tmp_path
):
    """transactions.by-terminal keeps records with no time limit (their timestamps are their
    sources'); the worker deletes what the terminal stage committed (DeleteRecords)."""
    import time

    from confluent_kafka import Consumer, TopicPartition

    from stream_app.devtools.worker_process import WorkerProcess

    env = {**app_env, "STREAM_APP_REPARTITION_PURGE_S": "1", "BROKER_COMMIT_INTERVAL": "0.5"}
    proc = WorkerProcess(tmp_path / "purging-worker", env)
    proc.start()
    try:
        proc.wait_ready()
        items = events(600, seed=22)
        with BulkProducer(app_settings) as producer:
            for record in schedule(items, labels=False):
                producer.produce(app_settings.topic(record.topic), record.key, record.value)
        read_topic(kafka_bootstrap, app_settings.topic("scores"), expect=600)
        topic = app_settings.topic("transactions.by-terminal")
        consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": "purge-check"})
        try:
            partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            deadline = time.monotonic() + 30
            while True:
                marks = [
                    consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                    for p in partitions
                ]
                if all(low == high for low, high in marks) or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
        finally:
            consumer.close()
    finally:
        proc.stop()
    assert sum(high for _, high in marks) == 600  # every forward was written...
    assert all(low == high for low, high in marks), marks  # ...and deleted once committed
