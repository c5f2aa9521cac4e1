"""OutputPublisher (queueing, delivery epochs: the wait before offsets are committed, failures) and
FaustTableWriter (checkpoint writes into a Faust table: its store and its changelog)."""

from __future__ import annotations

import asyncio
from typing import Any

import faust
import pytest
from faust.types import TP

from stream_app.config import Settings
from stream_app.faust_ext.tables import FaustTableWriter, bytes_table
from stream_app.outputs.publisher import OutputError, OutputPublisher


class FakeMessage:
    def __init__(self, topic: str, offset: int, partition: int = 0) -> None:
        self._topic, self._offset, self._partition = topic, offset, partition

    def topic(self) -> str:
        return self._topic

    def offset(self) -> int:
        return self._offset

    def partition(self) -> int:
        return self._partition


class FakeError:
    def str(self) -> str:
        return "Broker: Message size too large"


class FakeProducer:
    """Queues records; each poll delivers up to ``per_poll`` of them (failing those named)."""

    def __init__(self, conf: dict[str, Any], per_poll: int = 2, capacity: int = 1000) -> None:
        self.conf = conf
        self.queue: list[tuple[str, bytes, bytes | None, dict[str, Any]]] = []
        self.delivered: list[tuple[str, bytes, bytes | None, dict[str, Any]]] = []
        self.per_poll = per_poll
        self.capacity = capacity
        self.fail_values: set[bytes] = set()
        self.polls = 0

    def produce(self, topic: str, value: bytes, key: bytes | None, **extra: Any) -> None:
        if len(self.queue) >= self.capacity:
            raise BufferError("Local: Queue full")
        self.queue.append((topic, value, key, extra))

    def poll(self, timeout: float) -> int:
        self.polls += 1
        served, self.queue = self.queue[: self.per_poll], self.queue[self.per_poll :]
        for record in served:
            callback = record[3]["on_delivery"]
            if record[1] in self.fail_values:
                callback(FakeError(), FakeMessage(record[0], len(self.delivered)))
            else:
                self.delivered.append(record)
                partition = record[3].get("partition", 0)
                callback(None, FakeMessage(record[0], len(self.delivered) - 1, partition))
        return len(served)

    def flush(self, timeout: float) -> int:
        while self.queue and self.per_poll:
            self.poll(0)
        return len(self.queue)

    def __len__(self) -> int:
        return len(self.queue)


def publisher(listener: Any = None, **fake: Any) -> tuple[OutputPublisher, FakeProducer]:
    made: list[FakeProducer] = []

    def factory(conf: dict[str, Any]) -> FakeProducer:
        made.append(FakeProducer(conf, **fake))
        return made[0]

    out = OutputPublisher(
        Settings(kafka_bootstrap_servers="k:9092"),
        producer_factory=factory,
        listener=listener,
    )
    return out, made[0]


def test_config_is_idempotent_java_partitioned_and_reports_every_delivery() -> None:
    _, fake = publisher()
    assert fake.conf["bootstrap.servers"] == "k:9092"
    assert fake.conf["enable.idempotence"] is True
    assert fake.conf["acks"] == "all"
    assert fake.conf["partitioner"] == "murmur2_random"
    assert fake.conf["delivery.report.only.error"] is False  # each report counts down its epoch


def test_settle_waits_for_its_epoch_not_for_records_sent_after_it() -> None:
    out, fake = publisher(per_poll=1)
    out.send_many("scores", [(b"k1", b"a"), (b"k2", b"b")])
    first = out.rotate()
    out.send_many("scores", [(b"k3", b"c"), (b"k4", b"d"), (b"k5", b"e")])
    assert (first.pending, out.epoch.pending) == (2, 3)
    asyncio.run(out.settle(first, timeout=5))
    assert first.pending == 0
    assert [v for _, v, _, _ in fake.delivered] == [b"a", b"b"]  # the later epoch still queued
    assert out.epoch.pending == 3
    asyncio.run(out.delivered(timeout=5))
    assert out.epoch.pending == 0 and out.pending() == 0


def test_settle_covers_the_epochs_closed_before() -> None:
    out, fake = publisher(per_poll=1)
    out.send("scores", b"k", b"1")
    out.rotate()
    out.send("scores", b"k", b"2")
    second = out.rotate()
    asyncio.run(out.settle(second, timeout=5))
    assert [v for _, v, _, _ in fake.delivered] == [b"1", b"2"]


def test_timestamps_and_partitions_go_to_the_producer() -> None:
    out, fake = publisher()
    out.send_timed("by", [(b"t1", b"v1", 1234), (b"t2", b"v2", None)])
    out.send("changelog", b"k", b"v", partition=3, timestamp=99)
    extras = [{k: v for k, v in r[3].items() if k != "on_delivery"} for r in fake.queue]
    assert extras == [{"timestamp": 1234}, {}, {"partition": 3, "timestamp": 99}]


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
    assert fake.delivered[3][3]["headers"] == [("dlq.reason", b"invalid_json")]
    assert fake.polls == 2  # the first poll served 2, the second (after one sleep) the other 2


def test_a_failed_delivery_raises_with_the_topic_and_the_error() -> None:
    out, fake = publisher(per_poll=10)
    fake.fail_values = {b"big"}
    out.send_many("scores", [(b"k", b"ok"), (b"k", b"big"), (b"k", b"big")])
    with pytest.raises(
        OutputError,
        match=r"2 output record\(s\) failed delivery, first: topic "
        r"scores: Broker: Message size too large",
    ):
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


class OffsetStore(dict[str, Any]):
    """A table store that keeps changelog offsets, as Faust's RocksDB store does."""

    def __init__(self) -> None:
        super().__init__()
        self.persisted: dict[Any, int] = {}

    def set_persisted_offset(self, tp: Any, offset: int) -> None:
        self.persisted[tp] = offset


def faust_table(name: str = "customer-state") -> Any:
    app = faust.App("t", store="memory://", autodiscover=False)
    return bytes_table(app, name, 3)


def test_table_writer_stores_the_value_and_sends_what_faust_would_send() -> None:
    out, fake = publisher()
    table = faust_table()
    writer = FaustTableWriter(table, out, persist_offsets=False)
    writer.write("C1", 2, b"\x01state")
    assert table.data["C1"] == b"\x01state"
    assert writer.read("C1", 2) == b"\x01state"
    assert writer.read("C2", 2) is None
    topic, value, key, extra = fake.queue[0]
    assert (topic, key, value) == ("t-customer-state-changelog", b'"C1"', b"\x01state")
    assert extra["partition"] == 2  # the table partition the key lives in
    # Faust's recovery reads it back with the changelog topic's own codecs:
    changelog = table.changelog_topic
    assert (
        table.app.serializers.loads_key(table.key_type, key, serializer=changelog.key_serializer)
        == "C1"
    )
    assert (
        table.app.serializers.loads_value(
            table.value_type, value, serializer=changelog.value_serializer
        )
        == b"\x01state"
    )


def test_table_writer_persists_the_newest_delivered_offset_per_partition() -> None:
    writers: list[FaustTableWriter] = []
    out, fake = publisher(lambda err, msg: writers[0].on_delivery(err, msg), per_poll=10)
    table = faust_table()
    table._data = OffsetStore()  # what the data property returns
    writer = FaustTableWriter(table, out, persist_offsets=True)
    writers.append(writer)
    fake.delivered.extend([("other", b"", None, {})] * 7)  # the next offsets given are 7, 8, 9
    writer.write("C1", 0, b"1")
    writer.write("C2", 1, b"2")
    writer.write("C1", 0, b"3")
    writer.persist()
    assert table.data.persisted == {}  # nothing delivered yet
    asyncio.run(out.delivered(timeout=5))
    writer.persist()
    changelog = "t-customer-state-changelog"
    assert table.data.persisted == {TP(changelog, 0): 9, TP(changelog, 1): 8}
    table.data.persisted.clear()
    writer.persist()
    assert table.data.persisted == {}  # each delivery is persisted once
