"""An independent verifier for integration tests: reads topics with its own consumer."""

import time
import uuid
from collections.abc import Sequence

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition


def read_topic(
    bootstrap: str,
    topic: str,
    expect: int,
    timeout: float = 120.0,
    settle: float = 2.0,
    *,
    group: str | None = None,
    inputs: Sequence[str] = (),
) -> list:
    """All records of ``topic`` from the beginning.

    With ``group`` (the worker's consumer group) and ``inputs`` (every topic its stages read):
    waits until the group has committed every partition of every input at its log end (the
    worker has processed and checkpointed all it was sent, so every output record is written),
    then reads ``topic`` to the end offsets it has then: a duplicate or a stray record written
    late is read too, however loaded the machine. Without: waits until ``expect`` records
    arrived, then ``settle`` seconds more (for topics no consumer group stands behind)."""
    if group is not None:
        deadline = time.monotonic() + timeout
        wait_processed(bootstrap, group, inputs, timeout)
        return read_to_end_offsets(bootstrap, topic, max(1.0, deadline - time.monotonic()))
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"verify-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([topic])
    records = []
    deadline = time.monotonic() + timeout
    settle_until = None
    try:
        while time.monotonic() < deadline:
            batch = consumer.consume(1000, timeout=0.5)
            records += [m for m in batch if m.error() is None]
            if len(records) >= expect:
                if settle_until is None:
                    settle_until = time.monotonic() + settle
                elif time.monotonic() >= settle_until:
                    break
    finally:
        consumer.close()
    return records


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """Log-end offset per partition."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"verify-{uuid.uuid4()}"})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in meta.partitions
        }
    finally:
        consumer.close()


STAGE_INPUTS = (
    "transactions",
    "transactions.rerouted",
    "transactions.by-terminal",
    "labels",
    "labels.rerouted",
)


def processed_by(settings) -> dict:
    """``read_topic`` keywords that read an output of the worker of ``settings`` once it has
    processed everything it was sent."""
    return {"group": settings.app_id, "inputs": [settings.topic(t) for t in STAGE_INPUTS]}


def wait_processed(bootstrap: str, group: str, inputs: Sequence[str], timeout: float) -> None:
    """Until ``group`` has committed each partition of each of ``inputs`` at its log end, all at
    once (a stage's output is another stage's input: they are checked together, again and
    again, until they agree)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    deadline = time.monotonic() + timeout
    behind: dict[tuple[str, int], tuple[int, int]] = {}
    try:
        while True:
            behind = {}
            for topic in inputs:
                meta = consumer.list_topics(topic, timeout=10).topics[topic]
                tps = [TopicPartition(topic, p) for p in meta.partitions]
                done = {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=10)}
                for tp in tps:
                    end = consumer.get_watermark_offsets(tp, timeout=10)[1]
                    if end > 0 and done[tp.partition] < end:
                        behind[(topic, tp.partition)] = (done[tp.partition], end)
            if not behind:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"group {group} has not committed its input: {behind}")
            time.sleep(0.5)
    finally:
        consumer.close()


def read_to_end_offsets(bootstrap: str, topic: str, timeout: float = 120.0) -> list:
    """Every record of ``topic`` (``read_committed``) up to the end offsets taken at the call."""
    ends = {p: e for p, e in end_offsets(bootstrap, topic).items() if e > 0}
    if not ends:
        return []
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"verify-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
    position = dict.fromkeys(ends, 0)
    records = []
    deadline = time.monotonic() + timeout
    try:
        while any(position[p] < ends[p] for p in ends):
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {topic} to its end: {position} vs {ends}")
            for msg in consumer.consume(1000, timeout=0.5):
                if msg.error() is None and msg.offset() < ends[msg.partition()]:
                    records.append(msg)
                    position[msg.partition()] = msg.offset() + 1
            for tp in consumer.position([TopicPartition(topic, p) for p in ends]):
                if tp.offset >= 0:  # past transaction markers and aborted records too
                    position[tp.partition] = max(position[tp.partition], tp.offset)
    finally:
        consumer.close()
    return records
