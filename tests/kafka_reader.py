"""An independent verifier for integration tests: reads topics with its own consumer."""

import time
import uuid

from confluent_kafka import Consumer, TopicPartition


def read_topic(
    bootstrap: str, topic: str, expect: int, timeout: float = 120.0, settle: float = 2.0
) -> list:
    """All records of ``topic`` from the beginning: waits until ``expect`` arrived (then
    ``settle`` seconds more, to catch extras) or ``timeout`` passed."""
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
