"""A consumed Kafka record as the stages see it.

The worker hands the stages the records its consumer fetched (aiokafka's ``ConsumerRecord``):
anything with ``topic``, ``partition``, ``offset``, ``timestamp`` (ms, or None), ``key``,
``value`` and ``headers`` will do (:class:`RecordLike`). Tests and tools build
:class:`InputRecord`, which has the same attributes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from stream_app.io.deadletter import SourcePosition


class RecordLike(Protocol):
    """The attributes of a consumed record the stages read."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int | None: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Any: ...


class InputRecord:
    """A consumed record built by hand: raw key and value, its position, its headers."""

    __slots__ = ("headers", "key", "position", "value")

    def __init__(
        self,
        key: bytes | None,
        value: bytes | None,
        position: SourcePosition,
        headers: Sequence[tuple[str, bytes | None]] = (),
    ) -> None:
        self.key = key
        self.value = value
        self.position = position
        self.headers = headers

    @property
    def topic(self) -> str:
        """The topic it was read from."""
        return self.position.topic

    @property
    def partition(self) -> int:
        """The partition it was read from."""
        return self.position.partition

    @property
    def offset(self) -> int:
        """Its offset."""
        return self.position.offset

    @property
    def timestamp(self) -> int | None:
        """Its Kafka timestamp (ms), if any."""
        return self.position.timestamp_ms

    def __repr__(self) -> str:
        p = self.position
        return f"InputRecord({p.topic}[{p.partition}]@{p.offset}, key={self.key!r})"


def position_of(record: RecordLike) -> SourcePosition:
    """Where ``record`` was read: topic, partition, offset and timestamp."""
    return SourcePosition(record.topic, record.partition, record.offset, record.timestamp)


def headers_of(record: RecordLike) -> list[tuple[str, bytes | None]]:
    """``record``'s headers as ``(name, value)`` pairs (aiokafka gives a tuple of pairs)."""
    raw = record.headers
    if not raw:
        return []
    items = raw.items() if hasattr(raw, "items") else raw
    return [(str(k), v) for k, v in items]


def arrived_ms(record: RecordLike) -> float:
    """The record's Kafka timestamp in ms (0.0 without one): the start of the latency clock."""
    return float(record.timestamp or 0)
