"""OutputPublisher: queueing, the delivery wait before a batch is acknowledged, failures."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from stream_app.config import Settings
from stream_app.outputs.publisher import OutputError, OutputPublisher


class FakeMessage:
    def __init__(self, topic: str) -> None:
        self._topic = topic

    def topic(self) -> str:
        return self._topic


class FakeError:
    def str(self) -> str:
        return "Broker: Message size too large"


class FakeProducer:
    """Queues records; each poll delivers up to ``per_poll`` of them (failing those named)."""

    def __init__(self, conf: dict[str, Any], per_poll: int = 2, capacity: int = 1000) -> None:
        self.conf = conf
        self.queue: list[tuple[str, bytes, bytes | None, Any]] = []
        self.delivered: list[tuple[str, bytes, bytes | None, Any]] = []
        self.per_poll = per_poll
        self.capacity = capacity
        self.fail_values: set[bytes] = set()
        self.polls = 0

    def produce(self, topic: str, value: bytes, key: bytes | None, headers: Any = None) -> None:
        if len(self.queue) >= self.capacity:
            raise BufferError("Local: Queue full")
        self.queue.append((topic, value, key, headers))

    def poll(self, timeout: float) -> int:
        self.polls += 1
        served, self.queue = self.queue[: self.per_poll], self.queue[self.per_poll :]
        for record in served:
            if record[1] in self.fail_values:
                self.conf["on_delivery"](FakeError(), FakeMessage(record[0]))
            else:
                self.delivered.append(record)
        return len(served)

    def flush(self, timeout: float) -> int:
        while self.queue and self.per_poll:
            self.poll(0)
        return len(self.queue)

    def __len__(self) -> int:
        return len(self.queue)


def publisher(**fake: Any) -> tuple[OutputPublisher, FakeProducer]:
    made: list[FakeProducer] = []

    def factory(conf: dict[str, Any]) -> FakeProducer:
        made.append(FakeProducer(conf, **fake))
        return made[0]

    out = OutputPublisher(Settings(kafka_bootstrap_servers="k:9092"), producer_factory=factory)
    return out, made[0]


def test_config_is_idempotent_java_partitioned_and_reports_only_errors() -> None:
    out, fake = publisher()
    assert fake.conf["bootstrap.servers"] == "k:9092"
    assert fake.conf["enable.idempotence"] is True
    assert fake.conf["acks"] == "all"
    assert fake.conf["partitioner"] == "murmur2_random"
    assert fake.conf["delivery.report.only.error"] is True
    assert fake.conf["on_delivery"] == out._on_delivery


def test_delivered_waits_until_the_queue_is_empty_and_keeps_order() -> None:
    out, fake = publisher(per_poll=2)
    out.send_many("scores", [(b"k1", b"a"), (b"k2", b"b"), (b"k3", b"c")])
    out.send("transactions.dlq", b"k4", b"d", [("dlq.reason", b"invalid_json")])
    assert out.pending() == 4
    asyncio.run(out.delivered(timeout=5))
    assert out.pending() == 0
    assert [(t, v, k) for t, v, k, _ in fake.delivered] == [
        ("scores", b"a", b"k1"),
        ("scores", b"b", b"k2"),
        ("scores", b"c", b"k3"),
        ("transactions.dlq", b"d", b"k4"),
    ]
    assert fake.delivered[3][3] == [("dlq.reason", b"invalid_json")]
    assert fake.polls == 2  # the first poll served 2, the second (after one sleep) the other 2


def test_a_failed_delivery_raises_with_the_topic_and_the_error() -> None:
    out, fake = publisher(per_poll=10)
    fake.fail_values = {b"big"}
    out.send_many("scores", [(b"k", b"ok"), (b"k", b"big"), (b"k", b"big")])
    with pytest.raises(OutputError, match=r"2 output record\(s\) failed delivery, first: topic "
                       r"scores: Broker: Message size too large"):
        asyncio.run(out.delivered(timeout=5))


def test_records_still_queued_at_the_timeout_raise() -> None:
    out, _ = publisher(per_poll=0)  # the broker never acknowledges
    out.send("scores", b"k", b"v")
    with pytest.raises(OutputError, match=r"1 output record\(s\) still undelivered after 0 s"):
        asyncio.run(out.delivered(timeout=0.05))
    assert out.close(timeout=0.1) == 1


def test_a_full_queue_is_served_until_the_record_fits() -> None:
    out, fake = publisher(per_poll=1, capacity=2)
    out.send_many("scores", [(b"k", b"1"), (b"k", b"2"), (b"k", b"3"), (b"k", b"4")])
    assert [v for _, v, _, _ in fake.delivered] == [b"1", b"2"]
    assert [v for _, v, _, _ in fake.queue] == [b"3", b"4"]
    asyncio.run(out.delivered(timeout=5))
    assert [v for _, v, _, _ in fake.delivered] == [b"1", b"2", b"3", b"4"]
