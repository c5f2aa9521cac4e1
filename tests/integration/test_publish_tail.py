"""Publish and tail: the bulk producer (with a fake client) and a real round trip through Kafka.

The round-trip tests use the session fixture ``kafka_bootstrap`` (a real local broker) and a
unique topic prefix each, so they never see each other's records.
"""

from __future__ import annotations

import io
import time
import uuid
from collections import Counter, defaultdict
from datetime import UTC, date, datetime

import orjson
import pytest
import typer
from confluent_kafka import Consumer, TopicPartition
from typer.testing import CliRunner

from stream_app.cli.publish import publish, run_publish
from stream_app.cli.tail import run_tail, tail
from stream_app.config import Settings
from stream_app.exceptions import StreamAppError
from stream_app.io.security import librdkafka_config
from stream_app.sources.producer import BULK_CONFIG, BulkProducer, PublishError, TokenBucket
from stream_app.sources.schedule import LABELS, TRANSACTIONS, Record, schedule
from stream_app.sources.simulator import TransactionSimulator

# --- the producer wrapper, with a fake client ---------------------------------------------------


class FakeMessage:
    def __init__(self, topic: str) -> None:
        self._topic = topic

    def topic(self) -> str:
        return self._topic


class FakeProducer:
    """Queues up to ``capacity`` records; delivers them on poll/flush, failing topic ``bad``."""

    def __init__(self, conf: dict, capacity: int = 3) -> None:
        self.conf = conf
        self.capacity = capacity
        self.queue: list[tuple[str, object]] = []
        self.sent: list[tuple[str, object, bytes]] = []
        self.buffer_errors = 0
        self.polls: list[float] = []
        self.metadata_asked: list[str] = []

    def list_topics(self, topic: str, timeout: float) -> None:
        """A paced producer asks for a topic's metadata before its first record."""
        self.metadata_asked.append(topic)

    def produce(self, topic, value=None, key=None, on_delivery=None) -> None:
        if len(self.queue) >= self.capacity:
            self.buffer_errors += 1
            raise BufferError("queue full")
        self.queue.append((topic, on_delivery))
        self.sent.append((topic, key, value))

    def poll(self, timeout: float = 0) -> int:
        self.polls.append(timeout)
        served = len(self.queue)
        for topic, callback in self.queue:
            callback("broker says no" if topic == "bad" else None, FakeMessage(topic))
        self.queue.clear()
        return served

    def flush(self, timeout: float = 0) -> int:
        self.poll(timeout)
        return 0


def test_bulk_producer_config_and_counts():
    fakes: list[FakeProducer] = []

    def factory(conf):
        fakes.append(FakeProducer(conf))
        return fakes[-1]

    settings = Settings(kafka_bootstrap_servers="127.0.0.1:1", topic_prefix="p.")
    producer = BulkProducer(settings, producer_factory=factory)
    for i in range(10):
        producer.produce("p.transactions" if i % 2 else "p.labels", str(i), b"{}")
    assert producer.flush(1.0) == {"p.transactions": 5, "p.labels": 5}
    fake = fakes[0]
    assert fake.buffer_errors > 0  # a full queue was served by polling, nothing lost
    assert len(fake.sent) == 10
    assert fake.conf["bootstrap.servers"] == "127.0.0.1:1"
    for name, value in BULK_CONFIG.items():
        assert fake.conf[name] == value
    assert fake.conf["compression.type"] == "lz4"
    assert fake.conf["acks"] == "all"
    assert fake.conf["enable.idempotence"] is True


def test_bulk_producer_raises_on_failed_delivery():
    producer = BulkProducer(Settings(), producer_factory=lambda conf: FakeProducer(conf, 100))
    producer.produce("good", "k", b"1")
    producer.produce("bad", "k", b"2")
    producer.produce("bad", "k", b"3")
    with pytest.raises(PublishError, match="2 of 3 records failed; first error: topic bad"):
        producer.flush(1.0)
    assert isinstance(PublishError("x"), StreamAppError)


def test_bulk_producer_reports_undelivered_records():
    class Stuck(FakeProducer):
        def flush(self, timeout: float = 0) -> int:
            return len(self.queue)

    producer = BulkProducer(Settings(), producer_factory=lambda conf: Stuck(conf, 100))
    producer.produce("t", "k", b"1")
    with pytest.raises(PublishError, match="1 of 1 records still undelivered"):
        producer.flush(0.1)


def test_token_bucket():
    now = [100.0]
    bucket = TokenBucket(rate=10.0, burst=2.0, clock=lambda: now[0])
    assert bucket.reserve() == 0.0
    assert bucket.reserve() == 0.0
    assert bucket.reserve() == pytest.approx(0.1)  # third in the same instant waits 1/rate
    assert bucket.reserve() == pytest.approx(0.2)
    now[0] += 1.0  # refill, capped at the burst
    assert bucket.reserve() == 0.0
    assert bucket.reserve() == 0.0
    assert bucket.reserve() > 0.0
    with pytest.raises(ValueError):
        TokenBucket(0)


def test_rate_limit_paces_the_producer():
    fakes: list[FakeProducer] = []

    def factory(conf: dict) -> FakeProducer:
        fakes.append(FakeProducer(conf, 1000))
        return fakes[-1]

    producer = BulkProducer(Settings(), rate=200.0, producer_factory=factory)
    began = time.monotonic()
    for i in range(60):
        producer.produce("t", str(i), b"{}")
    elapsed = time.monotonic() - began
    # 60 records at 200/s with a burst of 20: about (60 - 20) / 200 = 0.2 s.
    assert 0.15 <= elapsed < 2.0
    assert producer.flush(1.0) == {"t": 60}
    assert fakes[0].metadata_asked == ["t"]  # once, before the topic's first record


# --- a real broker ----------------------------------------------------------------------------

START = date(2024, 1, 1)
SIM = {"n_customers": 400, "n_terminals": 800, "seed": 9}


def unique_settings(bootstrap: str) -> Settings:
    return Settings(kafka_bootstrap_servers=bootstrap, topic_prefix=f"it-{uuid.uuid4().hex[:10]}.")


def consume_all(settings: Settings, topic: str, expected: int, timeout: float = 60.0) -> list:
    """Every record of a topic from the beginning, until ``expected`` arrived."""
    consumer = Consumer(
        {
            **librdkafka_config(settings),
            "group.id": f"it-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    name = settings.topic(topic)
    try:
        partitions = consumer.list_topics(name, timeout=10).topics[name].partitions
        consumer.assign([TopicPartition(name, p, 0) for p in partitions])
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            out.append(msg)
        # Anything beyond the expected count would be a duplicate: give it a moment to show.
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                out.append(msg)
        return out
    finally:
        consumer.close()


@pytest.fixture(scope="module")
def published(kafka_bootstrap):
    """500 synthetic transactions and their 500 labels, published once for this module."""
    settings = unique_settings(kafka_bootstrap)
    summary = run_publish(settings, synthetic=500, date_from=START, progress=False, **_cli(SIM))
    return settings, summary


def _cli(sim: dict) -> dict:
    return {"customers": sim["n_customers"], "terminals": sim["n_terminals"], "seed": sim["seed"]}


def expected_records() -> list[Record]:
    start = datetime(START.year, START.month, START.day, tzinfo=UTC)
    return list(schedule(TransactionSimulator(start=start, n_events=500, **SIM)))


@pytest.mark.integration
def test_publish_counts_and_summary(published):
    _, summary = published
    assert summary.transactions == 500
    assert summary.labels == 500
    assert summary.withheld_labels == 0
    assert summary.delivered == {TRANSACTIONS: 500, LABELS: 500}
    assert summary.first_event_time is not None
    assert summary.first_event_time.date() == START
    assert summary.events_per_second > 0


@pytest.mark.integration
def test_consumed_records_match_the_schedule(published):
    settings, _ = published
    expected = expected_records()
    for topic in (TRANSACTIONS, LABELS):
        want = [r for r in expected if r.topic == topic]
        got = consume_all(settings, topic, len(want))
        assert len(got) == len(want) == 500
        assert Counter(m.key().decode() for m in got) == Counter(r.key for r in want)
        assert sorted(m.value() for m in got) == sorted(r.value for r in want)
        # Kafka keeps order per partition, so per key the schedule's order is kept.
        got_by_key: defaultdict[str, list[bytes]] = defaultdict(list)
        for m in sorted(got, key=lambda m: (m.partition(), m.offset())):
            got_by_key[m.key().decode()].append(m.value())
        want_by_key: defaultdict[str, list[bytes]] = defaultdict(list)
        for r in want:
            want_by_key[r.key].append(r.value)
        assert got_by_key == want_by_key
        if topic == TRANSACTIONS:
            for m in got:
                assert orjson.loads(m.value())["customer_id"] == m.key().decode()
        else:
            for m in got:
                assert orjson.loads(m.value())["terminal_id"] == m.key().decode()


@pytest.mark.integration
def test_tail_prints_n_records(published):
    settings, _ = published
    keys = {r.key for r in expected_records() if r.topic == TRANSACTIONS}
    out = io.StringIO()
    began = time.monotonic()
    printed = run_tail(
        settings, TRANSACTIONS, n=7, json_=True, from_beginning=True, timeout=20, out=out
    )
    assert time.monotonic() - began < 15  # stopped at n, not at the timeout
    lines = out.getvalue().splitlines()
    assert printed == len(lines) == 7
    for line in lines:
        record = orjson.loads(line)
        assert record["topic"] == settings.topic(TRANSACTIONS)
        assert record["key"] in keys
        assert record["value"]["customer_id"] == record["key"]
        assert record["value"]["schema_version"] == 1
        assert {"partition", "offset", "timestamp"} <= set(record)


@pytest.mark.integration
def test_tail_stops_on_timeout_with_fewer_records(published):
    settings, _ = published
    out = io.StringIO()
    began = time.monotonic()
    printed = run_tail(
        settings, LABELS, n=10_000, json_=True, from_beginning=True, timeout=2.0, out=out
    )
    assert printed == 500
    assert time.monotonic() - began < 30


@pytest.mark.integration
def test_cli_publish_and_tail(kafka_bootstrap):
    settings = unique_settings(kafka_bootstrap)
    app = typer.Typer()
    app.command("publish")(publish)
    app.command("tail")(tail)
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "STREAM_APP_TOPIC_PREFIX": settings.topic_prefix,
    }
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "publish",
            "--synthetic",
            "120",
            "--no-labels",
            "--from",
            "2024-01-01",
            "--customers",
            "100",
            "--terminals",
            "200",
        ],
        env=env,
    )
    assert result.exit_code == 0, result.output
    assert "120" in result.output
    assert "events/s" in result.output

    result = runner.invoke(app, ["tail", "transactions", "-n", "3", "--json"], env=env)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("{")]
    assert len(lines) == 3
    assert all(orjson.loads(line)["value"]["schema_version"] == 1 for line in lines)

    result = runner.invoke(app, ["tail", "transactions", "-n", "2"], env=env)
    assert result.exit_code == 0, result.output
    assert result.output.count("partition") == 2

    result = runner.invoke(app, ["tail", "no-such-topic", "--timeout", "1"], env=env)
    assert result.exit_code == 1
    assert "does not exist" in result.output

    result = runner.invoke(app, ["publish", "--synthetic", "5", "--csv", "x.csv"], env=env)
    assert result.exit_code == 2
    assert "exactly one" in result.output
