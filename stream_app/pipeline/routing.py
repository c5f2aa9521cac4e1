"""Records on the wrong partition: rerouted to their key's partition, or dead-lettered.

A stage's state is co-partitioned with its input: the record of customer ``c`` must be on
partition ``murmur2(c) % n`` of ``transactions`` (``stream_app.io.partitioning``), where the
table partition holding ``c``'s window is. A producer with another partitioner (librdkafka's
default is CRC32) puts it elsewhere, where the state it would meet is not ``c``'s. Each stage
checks every keyed record it is about to apply (:meth:`Routing.misrouted`) and, for one on the
wrong partition, either

* **reroutes** it (the default): the same key, value and headers, plus
  ``stream-app-rerouted-from: topic/partition/offset``, are sent to the same partition number
  of the stage's *reroute topic* (``transactions.rerouted``, ``labels.rerouted``: internal,
  co-partitioned with the input, read by the same stage), where the worker that owns the key's
  state reads it and processes it like any other record, under its first position (so reading
  it twice, after a crash, is recognised); as Kafka Streams repartitions after a key change;
* or **dead-letters** it with reason ``misrouted_key`` (``STREAM_APP_MISROUTED_KEYS=dead_letter``),
  for a team that prefers to fix its producers first.
"""

from __future__ import annotations

from dataclasses import dataclass

from stream_app.io.deadletter import Reason, Rejection
from stream_app.io.partitioning import (
    ORIGIN_HEADER,
    expected_partition,
    header,
    origin_value,
    parse_origin,
)
from stream_app.io.records import RecordLike, headers_of


@dataclass(slots=True)
class Reroute:
    """A misrouted record's copy, bound for its key's partition of a reroute topic."""

    topic: str
    partition: int
    key: bytes
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    timestamp: int | None


@dataclass(slots=True)
class Misrouted:
    """A record read on ``record.partition`` whose key belongs on ``expected``."""

    record: RecordLike
    expected: int


@dataclass(frozen=True, slots=True)
class Routing:
    """How a stage checks its keyed input: ``partitions`` of the topology (every co-partitioned
    topic has that many); misrouted records go to ``reroute_topic``, or to the dead-letter topic
    when it is None."""

    partitions: int
    reroute_topic: str | None

    def misrouted(self, record: RecordLike, key: bytes) -> int | None:
        """The partition ``key`` belongs on if ``record`` is not on it, else None."""
        expected = expected_partition(key, self.partitions)
        return None if expected == record.partition else expected

    def reroute(self, record: RecordLike, key: bytes, expected: int) -> Reroute | Rejection:
        """What to do with a misrouted record: its copy for the reroute topic, or its rejection."""
        if self.reroute_topic is None:
            return Rejection(
                Reason.MISROUTED_KEY,
                f"The key {key[:64]!r} belongs on partition {expected} of {record.topic} "
                f"(murmur2 over the key bytes, modulo {self.partitions}: Java's default "
                f"partitioner), not on {record.partition}; the producer uses another "
                "partitioner. Set partitioner=murmur2_random in librdkafka clients "
                "(confluent-kafka), or STREAM_APP_MISROUTED_KEYS=reroute.",
            )
        headers = headers_of(record)
        if header(headers, ORIGIN_HEADER) is None:
            headers.append(
                (ORIGIN_HEADER, origin_value(record.topic, record.partition, record.offset))
            )
        return Reroute(self.reroute_topic, expected, key, record.value, headers, record.timestamp)

    def origin(self, record: RecordLike) -> tuple[str, int, int] | None:
        """Where a record of the reroute topic was first read (None for any other record, or
        one whose header is missing or malformed: it is then known by its own position)."""
        if record.topic != self.reroute_topic:
            return None
        return parse_origin(header(record.headers, ORIGIN_HEADER))
