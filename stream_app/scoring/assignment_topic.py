"""The assignment on Kafka: ``models.assignment`` read to its end, followed, and written.

The record and its bytes are :mod:`stream_app.scoring.assignment`'s. Every reader here has a
consumer of its own (manual assignment, no commits, never in the stages' group); the latest record
of the group's key wins. :func:`read_to_end` and :func:`produce_one` serve the audit topic too
(:mod:`stream_app.scoring.audit`).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from stream_app.config import Settings
from stream_app.exceptions import KafkaAccessError
from stream_app.io.security import librdkafka_config
from stream_app.scoring.assignment import (
    ASSIGNMENT_TOPIC,
    Assignment,
    AssignmentError,
    Published,
    decode,
    encode,
)

log = logging.getLogger("stream_app.models")


def _consumer(settings: Settings) -> Any:
    from confluent_kafka import Consumer

    return Consumer(
        {
            **librdkafka_config(settings),
            # never joins a group nor commits: manual assignment only
            "group.id": f"{settings.app_id}.assignment-reader.{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )


def _partitions(consumer: Any, topic: str, timeout: float) -> list[int] | None:
    """The topic's partitions; None when it does not exist."""
    from confluent_kafka import KafkaError

    meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if meta is None or meta.error is not None:
        if meta is not None and meta.error.code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
            raise KafkaAccessError(f"{topic} is not readable: {meta.error}")
        return None
    return sorted(meta.partitions)


def read_to_end(settings: Settings, topic: str, timeout: float = 15.0) -> Iterator[Any]:
    """Every record of ``topic`` from its first offset to the end it has now (confluent-kafka
    messages), read with a consumer of its own (manual assignment, nothing committed); nothing
    when the topic does not exist. :class:`KafkaAccessError` when it cannot be read in time."""
    from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

    consumer = _consumer(settings)
    try:
        try:
            partitions = _partitions(consumer, topic, timeout)
        except KafkaException as exc:
            raise KafkaAccessError(f"cannot read {topic}: {exc}") from exc
        if not partitions:
            return
        end: dict[int, int] = {}
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            if high > low:
                end[p] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in end])
        deadline = time.monotonic() + timeout
        while end:
            if time.monotonic() > deadline:
                raise KafkaAccessError(f"{topic} not read to its end within {timeout:.0f} s")
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            partition, offset = msg.partition(), msg.offset()
            if partition in end and offset + 1 >= end[partition]:
                del end[partition]
            yield msg
    finally:
        consumer.close()


def read_latest(settings: Settings, timeout: float = 15.0) -> Published | None:
    """The latest valid assignment of this group on the topic, read once from its beginning;
    None when there is none (no topic, no record of this group, or a tombstone last)."""
    topic = settings.topic(ASSIGNMENT_TOPIC)
    key = settings.app_id.encode()
    latest: Published | None = None
    for msg in read_to_end(settings, topic, timeout):
        if msg.key() != key:
            continue
        partition, offset, value = msg.partition(), msg.offset(), msg.value()
        if value is None:
            latest = None
            continue
        try:
            latest = Published(decode(value), offset, partition, msg.timestamp()[1])
        except AssignmentError as exc:
            log.error("%s[%d]@%d is not a valid assignment: %s", topic, partition, offset, exc)
    return latest


def produce_one(
    settings: Settings, topic: str, key: bytes, value: bytes, timeout: float = 30.0
) -> int:
    """Write one record (acks=all, idempotent) and wait for it; its offset.
    :class:`KafkaAccessError` says why it could not be written."""
    from confluent_kafka import KafkaException, Producer

    producer = Producer(
        {
            **librdkafka_config(settings),
            "acks": "all",
            "enable.idempotence": True,
            "message.timeout.ms": int(timeout * 1000),
        }
    )
    result: dict[str, Any] = {}

    def delivered(err: Any, msg: Any) -> None:
        result["err"], result["offset"] = err, msg.offset() if err is None else None

    try:
        producer.produce(topic, value, key, on_delivery=delivered)
    except KafkaException as exc:
        raise KafkaAccessError(f"cannot write to {topic}: {exc}") from exc
    producer.flush(timeout + 5)
    if "err" not in result:
        raise KafkaAccessError(f"{topic}: no delivery report within {timeout:.0f} s")
    if result["err"] is not None:
        raise KafkaAccessError(f"cannot write to {topic}: {result['err']}")
    return int(result["offset"])


def publish(settings: Settings, assignment: Assignment, timeout: float = 30.0) -> int:
    """Write ``assignment`` to the topic (acks=all, idempotent); its offset."""
    topic = settings.topic(ASSIGNMENT_TOPIC)
    return produce_one(settings, topic, settings.app_id.encode(), encode(assignment), timeout)


class AssignmentFollower:
    """A thread that reads the control topic from its beginning and keeps this group's latest
    assignment; ``on_change`` is called (from the thread) after each new one."""

    def __init__(self, settings: Settings, on_change: Callable[[], None] = lambda: None) -> None:
        self.settings = settings
        self.topic = settings.topic(ASSIGNMENT_TOPIC)
        self.key = settings.app_id.encode()
        self.on_change = on_change
        self._latest: Published | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.caught_up = threading.Event()
        """Set once the topic was read to the end seen at start (or found empty)."""
        self.error: str | None = None
        """The latest record of this group, when it is not a valid assignment."""
        self._thread = threading.Thread(target=self._run, name="assignment-follower", daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (it closes its consumer)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def latest(self) -> Published | None:
        """This group's latest valid assignment, if any."""
        with self._lock:
            return self._latest

    def _set(self, published: Published | None, error: str | None) -> None:
        with self._lock:
            self._latest, self.error = published, error
        self.on_change()

    def _run(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

        while not self._stop.is_set():
            consumer = None
            try:
                consumer = _consumer(self.settings)
                partitions = _partitions(consumer, self.topic, 10.0)
                if not partitions:  # not created yet: `topics apply` or a promote creates it
                    self.caught_up.set()
                    self._stop.wait(5.0)
                    continue
                waiting = set()
                for p in partitions:
                    low, high = consumer.get_watermark_offsets(
                        TopicPartition(self.topic, p), timeout=10.0
                    )
                    if high > low:
                        waiting.add(p)
                if not waiting:
                    self.caught_up.set()
                consumer.assign(
                    [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions]
                )
                while not self._stop.is_set():
                    msg = consumer.poll(0.5)
                    if msg is None:
                        continue
                    err = msg.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            waiting.discard(msg.partition())
                            if not waiting and not self.caught_up.is_set():
                                self.caught_up.set()
                                self.on_change()  # the latest record is known: apply it
                        else:
                            log.debug("%s: %s", self.topic, err)
                        continue
                    if msg.key() != self.key:
                        continue
                    self._record(msg.partition(), msg.offset(), msg.value(), msg.timestamp()[1])
            except Exception as exc:  # the broker is away: try again
                log.warning("reading %s failed (%r); trying again in 5 s", self.topic, exc)
                self._stop.wait(5.0)
            finally:
                if consumer is not None:
                    consumer.close()

    def _record(
        self, partition: int, offset: int, value: bytes | None, timestamp_ms: int | None = None
    ) -> None:
        if value is None:
            log.warning(
                "%s[%d]@%d: the assignment of %s was deleted (tombstone); serving what is served",
                self.topic,
                partition,
                offset,
                self.settings.app_id,
            )
            self._set(None, None)
            return
        try:
            assignment = decode(value)
        except AssignmentError as exc:
            message = f"{self.topic}[{partition}]@{offset} is not a valid assignment: {exc}"
            log.error("%s; serving what is served", message)
            with self._lock:
                self.error = message
            return
        self._set(Published(assignment, offset, partition, timestamp_ms), None)
