"""Which partition a key belongs on, and what to say about a producer that put it elsewhere.

The topology's partitioner is Java's default: ``murmur2`` over the key bytes, sign bit cleared,
modulo the partition count (``partitioner=murmur2_random`` in librdkafka; the default of the
Java client, kafka-python and aiokafka). The worker's tables are co-partitioned with their input
topics, so a record on another partition would meet another partition's state: the stages check
every keyed input record with :func:`expected_partition` and reroute (or dead-letter) the ones
on the wrong partition (see ``stream_app.pipeline.customer_stage``).

A rerouted copy carries :data:`ORIGIN_HEADER`: the topic, partition and offset it was first read
at, so that reading it again (after a crash) is recognised as the same record.

>>> expected_partition(b"21", 6)
0
>>> crc32_partition(b"21", 6)
4
>>> parse_origin(origin_value("transactions", 3, 1207))
('transactions', 3, 1207)
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from aiokafka.partitioner import murmur2

ORIGIN_HEADER = "stream-app-rerouted-from"
"""Header of a rerouted record: ``topic/partition/offset`` where it was first read."""

CLIENT_ID_HEADERS = ("client-id", "client_id", "producer")
"""Headers a producer may name itself in (the log names it when one is present)."""


@lru_cache(maxsize=1 << 16)
def expected_partition(key: bytes, partitions: int) -> int:
    """The partition ``key`` belongs on: murmur2 as Java's default partitioner computes it."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def crc32_partition(key: bytes, partitions: int) -> int:
    """Where librdkafka's default partitioner (``consistent_random``: CRC32) puts ``key``."""
    return zlib.crc32(key) % partitions


def guess_partitioner(key: bytes, partitions: int, partition: int) -> str:
    """A person's description of the partitioner that put ``key`` on ``partition``."""
    if crc32_partition(key, partitions) == partition:
        return (
            "librdkafka's default partitioner (consistent_random, CRC32: confluent-kafka, "
            "the Go and .NET clients over librdkafka)"
        )
    return "another partitioner (random, round-robin, a custom one, or an explicit partition)"


FIX = (
    "set partitioner=murmur2_random in the producer's configuration (confluent-kafka and other "
    "librdkafka clients); the Java client, kafka-python and aiokafka use murmur2 by default; "
    "never pass an explicit partition"
)
"""How to make a producer put keys where the topology expects them."""


def origin_value(topic: str, partition: int, offset: int) -> bytes:
    """The :data:`ORIGIN_HEADER` value for a record first read at ``topic[partition]@offset``."""
    return f"{topic}/{partition}/{offset}".encode()


def parse_origin(value: bytes | None) -> tuple[str, int, int] | None:
    """``(topic, partition, offset)`` of an :data:`ORIGIN_HEADER` value (None if malformed)."""
    if not value:
        return None
    try:
        topic, partition, offset = value.decode().rsplit("/", 2)
        return topic, int(partition), int(offset)
    except ValueError:
        return None


def header(headers: Any, name: str) -> bytes | None:
    """The value of header ``name`` (the last one when repeated) of a record's headers."""
    if not headers:
        return None
    items: Iterable[tuple[str, bytes | None]] = (
        headers.items() if hasattr(headers, "items") else headers
    )
    found = None
    for key, value in items:
        if key == name:
            found = value
    return found


def producer_name(headers: Any) -> str | None:
    """The producer's own name when its record carries one in a header."""
    for name in CLIENT_ID_HEADERS:
        value = header(headers, name)
        if value:
            return value[:64].decode(errors="replace")
    return None
