"""Two producers, two partitioners, on the real broker (issue 19, case 1).

Half of the records come from a producer with Java's partitioner (murmur2, what the topology
declares) and half from a confluent-kafka producer left at librdkafka's default
(``consistent_random``: CRC32), which puts about five keys in six on another partition. On main
before the fix, 40 customers x 12 transactions gave 26 ``too_late`` dead letters, 11 false
replays and 153 of 454 scored transactions with wrong customer features, and no log line.

* ``reroute`` (the default), two workers: every transaction is scored, every envelope's 15
  features equal the offline builder's, no dead letter, every label applied to its terminal's
  state, ``stream_app_misrouted_records_total`` equals the records the delivery reports put on
  the wrong partition, and the log names the CRC32 producer by its ``client-id`` header.
* ``dead_letter``: exactly the misrouted records reach the dead-letter topic as
  ``misrouted_key``, with their original bytes; every other transaction is scored.

A rerouted record takes one more hop through the broker: a customer's (or terminal's) next
event that arrives on its right partition before the copy is scored without it (README,
"Publishing events"). The publisher here keeps a customer's and a terminal's consecutive records
``GAP_S`` apart in wall-clock time, as real card payments are, so the comparison can be exact.
"""

from __future__ import annotations

import base64
import re
import time
import urllib.request
from collections import Counter

import orjson
import pytest
from confluent_kafka import Producer

from stream_app.config import Settings
from stream_app.io.partitioning import expected_partition
from stream_app.io.topics import ensure_topics
from stream_app.sources.schedule import Record, schedule
from tests.faults.harness import (
    Stream,
    Worker,
    check_scores,
    envelopes,
    make_stream,
    read_all,
    worker_env,
)
from tests.integration.conftest import free_port
from tests.kafka_reader import processed_by, read_topic

pytestmark = pytest.mark.integration

PARTITIONS = 6
N_CUSTOMERS = 40
N_EVENTS = 480  # 12 per customer, about 6 days of event time: no terminal risk window is filled
N_TERMINALS = 200
GAP_S = 0.6  # least wall-clock time between two records of one customer or one terminal
RATE = 60.0  # transactions/s at most
LABEL_RATE = 400.0


def _stream(seed: int, n_events: int = N_EVENTS) -> Stream:
    return make_stream(n_events, seed, n_customers=N_CUSTOMERS, n_terminals=N_TERMINALS)


class TwoProducers:
    """Sends each record through one of two producers (alternately) and keeps, from the
    delivery reports, the partition every record landed on."""

    def __init__(self, bootstrap: str) -> None:
        self.murmur2 = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random"})
        self.crc32 = Producer({"bootstrap.servers": bootstrap})  # librdkafka's default
        self.landed: dict[tuple[str, bytes, bytes], int] = {}
        self.errors: list[str] = []

    def _delivered(self, err, msg) -> None:
        if err is not None:
            self.errors.append(str(err))
        else:
            self.landed[(msg.topic(), msg.key(), msg.value())] = msg.partition()

    def send(self, i: int, topic: str, key: bytes, value: bytes) -> None:
        if i % 2 == 0:
            self.murmur2.produce(topic, value, key, on_delivery=self._delivered)
            self.murmur2.poll(0)
        else:
            headers = [("client-id", b"crc-service")]
            self.crc32.produce(topic, value, key, headers=headers, on_delivery=self._delivered)
            self.crc32.poll(0)

    def flush(self) -> None:
        assert self.murmur2.flush(30) == 0 and self.crc32.flush(30) == 0
        assert not self.errors, self.errors[:3]


def publish_paced(settings: Settings, stream: Stream, producers: TwoProducers) -> None:
    """Every record in time order, at most ``RATE`` transactions/s, a customer's and a
    terminal's transactions at least ``GAP_S`` apart."""
    ensure_topics(settings)
    last: dict[str, float] = {}
    t = time.monotonic()
    for i, record in enumerate(with_labels(stream)):
        if record.topic == "transactions":
            event = orjson.loads(record.value)
            who = [f"c{event['customer_id']}", f"t{event['terminal_id']}"]
            t = max([t + 1 / RATE] + [last[w] + GAP_S for w in who if w in last])
            for w in who:
                last[w] = t
        else:  # a label waits in its terminal's state if early: no order to keep
            t += 1 / LABEL_RATE
        pause = t - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        producers.send(i, settings.topic(record.topic), record.key.encode(), record.value)
    producers.flush()


def with_labels(stream: Stream) -> list[Record]:
    """The stream's transactions and their labels (7 days later: after the last transaction)."""
    return list(schedule(stream.items, labels=True))


def misrouted(producers: TwoProducers) -> Counter[str]:
    """Records that landed on another partition than their key's, per topic."""
    return Counter(
        topic
        for (topic, key, _), partition in producers.landed.items()
        if expected_partition(key, PARTITIONS) != partition
    )


def metric(port: str, name: str, **labels: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    total = 0.0
    for line in body.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture
def settings(app_settings) -> Settings:
    return app_settings.model_copy(update={"partitions": PARTITIONS})


def test_mixed_partitioners_are_rerouted_and_scored_exactly(
    kafka_bootstrap, app_env, settings, tmp_path
):
    stream = _stream(seed=19)
    env = worker_env(app_env, STREAM_APP_PARTITIONS=str(PARTITIONS))
    workers = [
        Worker(tmp_path / "w1", {**env, "STREAM_APP_STATE_DIR": str(tmp_path / "w1" / "state")}),
        Worker(
            tmp_path / "w2",
            {
                **env,
                "STREAM_APP_WEB_PORT": str(free_port()),
                "STREAM_APP_STATE_DIR": str(tmp_path / "w2" / "state"),
            },
        ),
    ]
    try:
        for w in workers:
            w.start()
            w.wait_ready()
        time.sleep(5)  # the second join's rebalance settles before the first record
        producers = TwoProducers(kafka_bootstrap)
        started = time.monotonic()
        publish_paced(settings, stream, producers)
        published_s = time.monotonic() - started
        wrong = misrouted(producers)
        n_labels = sum(1 for r in with_labels(stream) if r.topic == "labels")
        envs = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            envs = envelopes(kafka_bootstrap, settings.topic("scores"))
            if len({e.event_id for e in envs}) >= N_EVENTS:
                break
            time.sleep(2)
        ports = [w.env["STREAM_APP_WEB_PORT"] for w in workers]
        deadline = time.monotonic() + 60  # labels come last (7 days after their transactions)
        while time.monotonic() < deadline:
            applied = sum(metric(p, "stream_app_labels_total", outcome="applied") for p in ports)
            if applied >= n_labels:
                break
            time.sleep(1)
        envs = envelopes(kafka_bootstrap, settings.topic("scores"))
        done_s = time.monotonic() - started
        check = check_scores(stream, envs)
        counted = {
            t: sum(
                metric(p, "stream_app_misrouted_records_total", topic=settings.topic(t))
                for p in ports
            )
            for t in ("transactions", "labels")
        }
        dlq = read_all(kafka_bootstrap, settings.topic("transactions.dlq"))
        logs = "".join(w.log_text() for w in workers)
        rerouted = len(read_all(kafka_bootstrap, settings.topic("transactions.rerouted")))
    finally:
        for w in workers:
            w.stop()
    print(
        f"\n{len(producers.landed)} records ({N_EVENTS} transactions, {n_labels} labels), "
        f"half through a CRC32 producer: on the wrong partition {dict(wrong)}; counted by the "
        f"workers {counted}; copies on transactions.rerouted {rerouted}; {check.summary()}; "
        f"labels applied {applied:.0f}/{n_labels}; dead letters {len(dlq)}; published in "
        f"{published_s:.1f} s, all scored and applied {done_s:.1f} s after the first record"
    )
    wrong_tx, wrong_labels = wrong[settings.topic("transactions")], wrong[settings.topic("labels")]
    assert wrong_tx > N_EVENTS // 4 and wrong_labels > 0, wrong
    assert counted == {"transactions": wrong_tx, "labels": wrong_labels}
    assert rerouted == wrong_tx
    check.assert_sound()
    assert dlq == [], [m.value[:300] for m in dlq[:3]]
    assert applied == n_labels
    assert re.search(r"records from producer 'crc-service' are on the wrong partition", logs)
    assert "consistent_random, CRC32" in logs


def test_dead_letter_mode_rejects_exactly_the_misrouted(
    kafka_bootstrap, app_env, settings, tmp_path
):
    stream = _stream(seed=23, n_events=160)
    env = worker_env(
        app_env, STREAM_APP_PARTITIONS=str(PARTITIONS), STREAM_APP_MISROUTED_KEYS="dead_letter"
    )
    worker = Worker(tmp_path / "w", env)
    try:
        worker.start()
        worker.wait_ready()
        producers = TwoProducers(kafka_bootstrap)
        publish_paced(settings, stream, producers)
        wrong_values = {
            value
            for (topic, key, value), partition in producers.landed.items()
            if expected_partition(key, PARTITIONS) != partition
        }
        n = len(producers.landed)
        wrong_tx = {v for v in wrong_values if b'"amount"' in v}
        right_ids = {
            orjson.loads(r.value)["event_id"] for r in stream.records if r.value not in wrong_tx
        }
        done = processed_by(settings)
        dlq = read_topic(kafka_bootstrap, settings.topic("transactions.dlq"), 0, **done)
        scored = read_topic(kafka_bootstrap, settings.topic("scores"), 0, **done)
    finally:
        worker.stop()
    letters = [orjson.loads(m.value()) for m in dlq]
    reasons = Counter(letter["reason"] for letter in letters)
    scored_ids = {orjson.loads(m.value())["event_id"] for m in scored}
    print(
        f"\n{n} records, {len(wrong_values)} on the wrong partition "
        f"({len(wrong_tx)} transactions); dead letters {dict(reasons)}; scored {len(scored_ids)}"
    )
    # A label whose transaction was dead-lettered is for an unknown event (once the stream is
    # past its time); every other dead letter is a misrouted record, each of them there.
    misrouted_letters = {
        base64.b64decode(letter["value_b64"])
        for letter in letters
        if letter["reason"] == "misrouted_key"
    }
    unknown = [letter for letter in letters if letter["reason"] == "unknown_event"]
    assert set(reasons) <= {"misrouted_key", "unknown_event"}, reasons
    assert misrouted_letters == wrong_values and reasons["misrouted_key"] == len(wrong_values)
    wrong_ids = {orjson.loads(v)["event_id"] for v in wrong_tx}
    assert all(
        orjson.loads(base64.b64decode(u["value_b64"]))["event_id"] in wrong_ids for u in unknown
    )
    assert scored_ids == right_ids
