"""Exactly-once outputs: group metadata bytes, batch offsets, the Kafka transaction sequence of a
checkpoint and its failure paths (``stream_app.outputs.kafka_transactions``), and the consumer
side (``stream_app.faust_ext.exactly_once``)."""

from __future__ import annotations

import asyncio
import ctypes
import glob
import os
from types import SimpleNamespace
from typing import Any

import confluent_kafka
import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from stream_app.config import Settings
from stream_app.faust_ext.exactly_once import ExactlyOnceConsumer, ReadCommittedConsumerThread
from stream_app.io.deadletter import SourcePosition
from stream_app.outputs.kafka_transactions import (
    TransactionalPublisher,
    batch_offsets,
    default_transactional_id,
    group_metadata,
)
from stream_app.outputs.publisher import OutputError
from stream_app.pipeline.customer_stage import InputRecord


def librdkafka_group_metadata(
    group: str, generation: int, member: str, instance: str | None
) -> bytes:
    """What librdkafka itself writes (rd_kafka_consumer_group_metadata_new_with_genid, _write),
    through the library bundled with confluent-kafka."""
    libs = os.path.join(os.path.dirname(confluent_kafka.__file__), "..", "confluent_kafka.libs")
    found = glob.glob(os.path.join(libs, "librdkafka*.so*"))
    if not found:
        pytest.skip("confluent-kafka's bundled librdkafka not found (not a manylinux wheel)")
    lib = ctypes.CDLL(found[0])
    new = lib.rd_kafka_consumer_group_metadata_new_with_genid
    new.restype = ctypes.c_void_p
    new.argtypes = [ctypes.c_char_p, ctypes.c_int32, ctypes.c_char_p, ctypes.c_char_p]
    write = lib.rd_kafka_consumer_group_metadata_write
    write.restype = ctypes.c_void_p
    write.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.POINTER(ctypes.c_size_t),
    ]
    destroy = lib.rd_kafka_consumer_group_metadata_destroy
    destroy.argtypes = [ctypes.c_void_p]
    cgmd = new(group.encode(), generation, member.encode(), instance.encode() if instance else None)
    buf, size = ctypes.c_void_p(), ctypes.c_size_t()
    assert write(cgmd, ctypes.byref(buf), ctypes.byref(size)) is None
    out = ctypes.string_at(buf, size.value)
    destroy(cgmd)
    return out


@pytest.mark.parametrize(
    ("group", "generation", "member", "instance"),
    [
        ("stream-app", 7, "aiokafka-0-5d1c", None),
        ("g", -1, "", None),
        ("fraud", 123456, "member-x", "worker-3"),
    ],
)
def test_group_metadata_is_what_librdkafka_writes(group, generation, member, instance):
    ours = group_metadata(group, generation, member, instance)
    assert ours == librdkafka_group_metadata(group, generation, member, instance)


def test_group_metadata_exact_bytes():
    assert group_metadata("grp", 7, "member-x") == b"CGMDv2:\x07\x00\x00\x00grp\x00member-x\x00\x01"


def test_group_metadata_is_accepted_by_confluent_kafka():
    # send_offsets_to_transaction parses it (rd_kafka_consumer_group_metadata_read) before
    # anything else; a malformed buffer raises at once, a good one gets as far as the state check.
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": "127.0.0.1:1", "transactional.id": "t"}
    )
    with pytest.raises(KafkaException) as bad:
        producer.send_offsets_to_transaction([TopicPartition("x", 0, 1)], b"junk", 0.1)
    with pytest.raises(KafkaException) as good:
        producer.send_offsets_to_transaction(
            [TopicPartition("x", 0, 1)], group_metadata("g", 1, "m"), 0.1
        )
    assert bad.value.args[0].code() == KafkaError._BAD_MSG  # "Input buffer is too short"
    assert good.value.args[0].code() == KafkaError._STATE  # parsed; no transaction initialized


def record(topic: str, partition: int, offset: int) -> InputRecord:
    return InputRecord(
        key=b"k", value=b"v", position=SourcePosition(topic, partition, offset, None), headers=[]
    )


def test_batch_offsets_one_past_the_last_record_per_partition():
    records = [
        record("t", 0, 5),
        record("t", 1, 9),
        record("t", 0, 6),
        record("labels", 0, 41),
        record("t", 0, 8),  # a gap (a transaction marker at 7) is fine
    ]
    got = [(tp.topic, tp.partition, tp.offset) for tp in batch_offsets(records)]
    assert got == [("labels", 0, 42), ("t", 0, 9), ("t", 1, 10)]
    assert batch_offsets([]) == []


def test_default_transactional_id(monkeypatch):
    monkeypatch.setattr("socket.gethostname", lambda: "host-a")
    assert default_transactional_id(Settings(app_id="fraud", web_port=6070)) == "fraud-host-a-6070"
    assert default_transactional_id(Settings(transactional_id="pod-3")) == "pod-3"


class FakeTxnProducer:
    """Records the transaction calls; ``fail`` maps a call name to the KafkaError it raises."""

    def __init__(self, conf: dict[str, Any]) -> None:
        self.conf = conf
        self.calls: list[tuple[Any, ...]] = []
        self.fail: dict[str, KafkaError] = {}
        self.queued = 0

    def _call(self, name: str, *args: Any) -> None:
        self.calls.append((name, *args))
        if name in self.fail:
            raise KafkaException(self.fail[name])

    def init_transactions(self, timeout: float) -> None:
        self._call("init")

    def begin_transaction(self) -> None:
        self._call("begin")

    def produce(self, topic: str, value: bytes, key: bytes, **extra: Any) -> None:
        self.calls.append(("produce", topic, key))

    def send_offsets_to_transaction(self, offsets: Any, metadata: bytes, timeout: float) -> None:
        self._call("offsets", [(tp.topic, tp.partition, tp.offset) for tp in offsets], metadata)

    def commit_transaction(self, timeout: float) -> None:
        self._call("commit")

    def abort_transaction(self, timeout: float) -> None:
        self._call("abort")

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        return 0

    def __len__(self) -> int:
        return self.queued


def make_sink(settings: Settings | None = None) -> tuple[TransactionalPublisher, FakeTxnProducer]:
    holder: list[FakeTxnProducer] = []

    def factory(conf: dict[str, Any]) -> FakeTxnProducer:
        holder.append(FakeTxnProducer(conf))
        return holder[0]

    sink = TransactionalPublisher(
        settings or Settings(transactional_id="w1", transaction_timeout_s=12),
        lambda: b"META",
        producer_factory=factory,
    )
    return sink, holder[0]


def offsets(*positions: tuple[str, int, int]) -> list[TopicPartition]:
    return [TopicPartition(t, p, o) for t, p, o in positions]


def test_transaction_of_one_checkpoint_in_order():
    sink, producer = make_sink()
    assert producer.conf["transactional.id"] == "w1-outputs"
    assert producer.conf["transaction.timeout.ms"] == 12_000
    assert producer.conf["enable.idempotence"] is True and producer.conf["acks"] == "all"

    async def checkpoint() -> None:
        await sink.start()
        await sink.start()  # once only
        sink.send_many("scores", [(b"a", b"1"), (b"b", b"2")])  # opens the transaction
        sink.send("transactions.dlq", b"c", b"3")
        await sink.commit(offsets(("by-terminal", 2, 11), ("labels", 0, 4)))
        await sink.commit([])  # nothing open, nothing to commit: no transaction

    asyncio.run(checkpoint())
    assert producer.calls == [
        ("init",),
        ("begin",),
        ("produce", "scores", b"a"),
        ("produce", "scores", b"b"),
        ("produce", "transactions.dlq", b"c"),
        ("offsets", [("by-terminal", 2, 11), ("labels", 0, 4)], b"META"),
        ("commit",),
    ]
    assert (sink.committed, sink.aborted) == (1, 0)


def test_offsets_alone_commit_in_a_transaction_of_their_own():
    sink, producer = make_sink()

    async def checkpoint() -> None:
        await sink.start()
        await sink.commit(offsets(("labels", 1, 7)))

    asyncio.run(checkpoint())
    assert producer.calls[1:] == [("begin",), ("offsets", [("labels", 1, 7)], b"META"), ("commit",)]


def test_send_before_start_refused():
    sink, _ = make_sink()
    with pytest.raises(OutputError, match="before start"):
        sink.send("scores", b"a", b"1")


@pytest.mark.parametrize("step", ["offsets", "commit"])
def test_abortable_failure_aborts_and_raises(step):
    sink, producer = make_sink()
    producer.fail[step] = KafkaError(KafkaError.ILLEGAL_GENERATION, "generation moved on")

    async def checkpoint() -> None:
        await sink.start()
        sink.send("scores", b"a", b"1")
        await sink.commit(offsets(("by-terminal", 0, 1)))

    with pytest.raises(OutputError, match=r"ILLEGAL_GENERATION.*aborted.*read again"):
        asyncio.run(checkpoint())
    assert producer.calls[-1] == ("abort",)
    assert ("commit",) not in producer.calls or step == "commit"
    assert (sink.committed, sink.aborted) == (0, 1)


def test_fenced_producer_is_not_aborted_and_says_why():
    sink, producer = make_sink()
    producer.fail["commit"] = KafkaError(KafkaError._FENCED, "fenced", fatal=True)

    async def checkpoint() -> None:
        await sink.start()
        await sink.commit(offsets(("by-terminal", 0, 1)))

    with pytest.raises(OutputError, match="same STREAM_APP_TRANSACTIONAL_ID"):
        asyncio.run(checkpoint())
    assert ("abort",) not in producer.calls


def test_init_failure_says_what_to_do():
    sink, producer = make_sink()
    producer.fail["init"] = KafkaError(KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, "no")
    with pytest.raises(OutputError, match="TransactionalId"):
        asyncio.run(sink.start())


def test_close_aborts_an_open_transaction_only():
    sink, producer = make_sink()
    asyncio.run(sink.start())
    sink.close()
    assert ("abort",) not in producer.calls
    sink.begin()
    sink.close()
    assert producer.calls[-1] == ("abort",)


def test_exactly_once_consumer_commits_nothing_itself():
    consumer = object.__new__(ExactlyOnceConsumer)
    assert asyncio.run(consumer._commit({})) is True


def test_read_committed_thread_sets_isolation(monkeypatch):
    import aiokafka
    from faust.transport.drivers import aiokafka as faust_aiokafka

    async def build() -> aiokafka.AIOKafkaConsumer:  # aiokafka wants a running loop
        return aiokafka.AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1")

    made = asyncio.run(build())
    assert made._isolation_level == "read_uncommitted"
    monkeypatch.setattr(
        faust_aiokafka.AIOKafkaConsumerThread,
        "_create_worker_consumer",
        lambda self, transport: made,
    )
    thread = object.__new__(ReadCommittedConsumerThread)
    thread.app = SimpleNamespace(fetch_max_wait_ms=100)
    assert made._fetch_max_wait_ms == 500  # aiokafka's default; Faust passes 1500
    assert thread._create_worker_consumer(None) is made
    assert made._isolation_level == "read_committed"
    assert made._fetch_max_wait_ms == 100  # the app's, as BatchConsumerThread sets it


def test_a_call_librdkafka_never_returns_from_stops_the_worker(monkeypatch):
    import threading

    sink, producer = make_sink()
    sink.timeout_s = 0.05
    monkeypatch.setattr("stream_app.outputs.kafka_transactions.CALL_GRACE_S", 0.1)
    release = threading.Event()

    def init_transactions(timeout: float) -> None:  # ignores its timeout, as librdkafka can
        release.wait(1)

    producer.init_transactions = init_transactions  # type: ignore[method-assign]
    try:
        with pytest.raises(OutputError, match=r"init_transactions did not return within 0 s"):
            asyncio.run(sink.start())
    finally:
        release.set()
    assert not sink._initialized


def test_a_transaction_the_group_moved_past_is_aborted_not_committed():
    """A member dropped while its transaction was open (a zombie) must not commit it under the
    membership it has after rejoining, or under the reset one (generation -1 skips fencing)."""
    membership = [group_metadata("g", 2, "m-a")]
    holder: list[FakeTxnProducer] = []

    def factory(conf: dict[str, Any]) -> FakeTxnProducer:
        holder.append(FakeTxnProducer(conf))
        return holder[0]

    sink = TransactionalPublisher(
        Settings(transactional_id="w1"), lambda: membership[0], producer_factory=factory
    )

    async def checkpoints() -> None:
        await sink.start()
        sink.send("scores", b"a", b"1")
        await sink.commit(offsets(("tx", 0, 5)))  # same membership: committed with it
        sink.send("scores", b"b", b"2")
        membership[0] = group_metadata("g", -1, "")  # dropped: aiokafka reset it
        with pytest.raises(OutputError, match="the consumer group moved on while it was open"):
            await sink.commit(offsets(("tx", 0, 6)))

    asyncio.run(checkpoints())
    producer = holder[0]
    assert producer.calls == [
        ("init",),
        ("begin",),
        ("produce", "scores", b"a"),
        ("offsets", [("tx", 0, 5)], group_metadata("g", 2, "m-a")),
        ("commit",),
        ("begin",),
        ("produce", "scores", b"b"),
        ("abort",),
    ]
    assert (sink.committed, sink.aborted) == (1, 1)
