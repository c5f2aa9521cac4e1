"""Read the worker's outputs as typed objects: an iterator and an async iterator over a topic.

A :class:`Subscription` reads one output topic (``scores``, ``scores.shadow``, ``drift`` or
``metrics``) with a confluent-kafka consumer and yields its records as the dataclass of that
topic's schema (:mod:`stream_app.client.records`), or as :class:`Message` (the object plus its
topic, partition, offset, timestamp and key) from :meth:`Subscription.messages`.

Two ways to say where to start:

- **with a consumer group** (``group="fraud-desk"``): the group's committed offsets, shared by
  every reader of the group (each gets some partitions), ``start`` "earliest" or "latest" when the
  group has none yet. Offsets are stored after the loop body has taken a record (at least once)
  and committed every 5 s and at the end.
- **without a group** (the default): every partition, from ``start``: ``"latest"`` (only records
  that arrive from now on), ``"earliest"``, an offset (the same one in every partition), a mapping
  partition → offset, or a ``datetime`` (each partition's first record at or after it, by record
  timestamp). Nothing is committed, so no group's offsets move (as ``stream-app tail``).

It ends after ``limit`` records, when nothing has arrived for ``timeout`` seconds, or, with
``until_end``, at the log end each partition had when the subscription opened (of an
exactly-once worker's topics: what was committed by then); otherwise it follows the topic until
the loop stops. A subscription is read once and closes when its loop
ends, however it ends.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Generic, Literal, Self

from stream_app.client.records import InvalidRecord, R, parse
from stream_app.config import Settings
from stream_app.exceptions import ConfigError, KafkaAccessError, StreamAppError

Start = Literal["earliest", "latest"] | int | Mapping[int, int] | datetime
"""Where a subscription starts (see the module docstring)."""

FETCH_MAX = 500
"""Records asked for per fetch."""
FETCH_WAIT_S = 0.5
"""Longest one fetch waits (the loop checks ``timeout`` and closing between fetches)."""


@dataclass(frozen=True, slots=True)
class Message(Generic[R]):
    """A typed record with its place on the topic."""

    value: R
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: str | None


class Subscription(Generic[R]):
    """Records of ``record_type.topic`` as ``record_type`` objects (``for`` or ``async for``).

    ``settings``: the worker's (broker, topic prefix, security), by default from the environment.
    ``on_invalid``: ``"raise"`` :class:`InvalidRecord` on a record its schema refuses, or
    ``"skip"`` it (counted in :attr:`skipped`). ``config``: extra librdkafka consumer settings.
    """

    def __init__(
        self,
        record_type: type[R],
        settings: Settings | None = None,
        *,
        group: str | None = None,
        start: Start = "latest",
        limit: int | None = None,
        timeout: float | None = None,
        until_end: bool = False,
        on_invalid: Literal["raise", "skip"] = "raise",
        config: Mapping[str, Any] | None = None,
    ) -> None:
        if group is not None and start not in ("earliest", "latest"):
            raise ConfigError(
                f"start={start!r} with group={group!r}: a group resumes from its committed "
                "offsets (start only says where a group without any begins: 'earliest' or "
                "'latest'); leave group out to read from an offset or a time"
            )
        if group is not None and until_end:
            raise ConfigError(
                "until_end needs every partition and a group reads only its share of them; "
                "leave group out, or stop with limit or timeout"
            )
        if limit is not None and limit < 1:
            raise ConfigError(f"limit must be at least 1 record, got {limit}")
        if timeout is not None and timeout < 0:
            raise ConfigError(f"timeout must not be negative, got {timeout}")
        if on_invalid not in ("raise", "skip"):
            raise ConfigError(f"on_invalid must be 'raise' or 'skip', got {on_invalid!r}")
        self.record_type: type[R] = record_type
        self.settings = settings if settings is not None else Settings()
        self.topic = self.settings.topic(record_type.topic)
        self.group = group
        self.start = start
        self.limit = limit
        self.timeout = timeout
        self.until_end = until_end
        self.on_invalid = on_invalid
        self.config = dict(config or {})
        self.received = 0
        self.skipped = 0
        self._consumer: Any = None
        self._ends: dict[int, int] = {}
        self._news: float | None = None  # when the last record arrived (or reading began)
        self._state: Literal["new", "open", "closed"] = "new"
        self._lock = threading.Lock()

    # --- opening -------------------------------------------------------------------------

    def _open(self) -> None:
        if self._state != "new":
            raise StreamAppError(
                f"this subscription to {self.topic} has been read already; a subscription is "
                "read once: create a new one (with a group, it resumes where the group committed)"
            )
        from confluent_kafka import Consumer

        from stream_app.io.security import check_access, librdkafka_config

        check_access(self.settings)  # wrong credentials or no broker: a clear error in seconds
        conf: dict[str, Any] = {
            **librdkafka_config(self.settings),
            "group.id": self.group or f"stream-app-client-{uuid.uuid4().hex}",
            "enable.auto.commit": self.group is not None,
            "enable.auto.offset.store": False,
            "auto.offset.reset": self.start if isinstance(self.start, str) else "earliest",
            **self.config,
        }
        self._consumer = Consumer(conf)
        self._state = "open"
        try:
            if self.group is not None:
                from stream_app.io.topic_reader import partitions_of

                partitions_of(self._consumer, self.settings, self.record_type.topic)
                self._consumer.subscribe([self.topic])
            else:
                self._assign()
        except BaseException:
            self.close()
            raise

    def _assign(self) -> None:
        from confluent_kafka import TopicPartition

        from stream_app.io.topic_reader import partitions_of

        consumer, topic = self._consumer, self.topic
        partitions = partitions_of(consumer, self.settings, self.record_type.topic)
        if isinstance(self.start, Mapping):
            unknown = sorted(set(self.start) - set(partitions))
            if unknown:
                raise ConfigError(
                    f"{topic} has partitions {partitions}, not {unknown}: give offsets for "
                    "partitions of the topic"
                )
            partitions = sorted(self.start)
        # The watermarks first: a partition with no record at or after the start time starts at
        # its end as it was *before* the time lookup, so a record written in between (the worker
        # scoring right now) is read, not skipped.
        marks = {
            partition: consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=10, cached=False
            )
            for partition in partitions
        }
        times: dict[int, int] = {}
        if isinstance(self.start, datetime):
            if self.start.tzinfo is None:
                raise ConfigError(
                    f"start={self.start.isoformat()} has no time zone; give an aware datetime "
                    "(e.g. datetime(..., tzinfo=UTC))"
                )
            ms = int(self.start.timestamp() * 1000)
            found = consumer.offsets_for_times(
                [TopicPartition(topic, p, ms) for p in partitions], timeout=10
            )
            times = {tp.partition: tp.offset for tp in found}
        assignment = []
        for partition in partitions:
            low, high = marks[partition]
            if self.start == "earliest":
                offset = low
            elif self.start == "latest":
                offset = high
            elif isinstance(self.start, datetime):
                offset = times[partition] if times[partition] >= 0 else high
            elif isinstance(self.start, Mapping):
                offset = self.start[partition]
            else:
                offset = self.start
            offset = min(max(offset, low), high)
            if self.until_end:
                if offset >= high:
                    continue
                self._ends[partition] = high
            assignment.append(TopicPartition(topic, partition, offset))
        consumer.assign(assignment)

    # --- reading -------------------------------------------------------------------------

    def _full(self) -> bool:
        return self.limit is not None and self.received >= self.limit

    def _finished(self) -> bool:
        """Nothing more to read: the limit is reached, or (``until_end``) every partition was
        read to its end (a fetch has taken it all; its records may still be to hand out)."""
        return (self.until_end and not self._ends) or self._full()

    def _fetch(self) -> list[Message[R]]:
        """One fetch: the typed records that arrived (an empty list when none did)."""
        with self._lock:
            if self._state != "open":
                return []
            batch = self._consumer.consume(FETCH_MAX, timeout=FETCH_WAIT_S)
        out: list[Message[R]] = []
        for msg in batch:
            error = msg.error()
            if error is not None:
                if error.fatal():
                    raise KafkaAccessError(f"reading {self.topic} failed: {error}")
                continue
            partition, offset = msg.partition(), msg.offset()
            if self.until_end:
                end = self._ends.get(partition)
                if end is None or offset >= end:
                    continue
                if offset + 1 >= end:
                    del self._ends[partition]
            try:
                value = parse(self.record_type, msg.value(), self.topic, partition, offset)
            except InvalidRecord:
                if self.on_invalid == "raise":
                    raise
                self.skipped += 1
                self._store(partition, offset)
                continue
            _, stamp = msg.timestamp()
            key = msg.key()
            out.append(
                Message(
                    value=value,
                    topic=self.topic,
                    partition=partition,
                    offset=offset,
                    timestamp_ms=stamp if stamp >= 0 else None,
                    key=None if key is None else key.decode("utf-8", "replace"),
                )
            )
        if self.until_end and self._ends:
            self._drop_read_to_end()
        return out

    def _drop_read_to_end(self) -> None:
        """``until_end``: a partition whose position has reached its end is done, though its last
        offsets were never handed out (transaction markers, aborted records: an exactly-once
        worker writes both)."""
        from confluent_kafka import TopicPartition

        with self._lock:
            if self._state != "open":
                return
            positions = self._consumer.position(
                [TopicPartition(self.topic, partition) for partition in self._ends]
            )
        for tp in positions:
            if tp.offset >= self._ends.get(tp.partition, tp.offset + 1):
                del self._ends[tp.partition]

    def _store(self, partition: int, offset: int) -> None:
        """With a group: the record at ``offset`` has been taken; commit past it."""
        if self.group is None:
            return
        from confluent_kafka import TopicPartition

        with self._lock:
            if self._state == "open":
                self._consumer.store_offsets(
                    offsets=[TopicPartition(self.topic, partition, offset + 1)]
                )

    def _idle(self, batch: list[Message[R]]) -> bool:
        """After a fetch: whether nothing has arrived for ``timeout`` s (time to stop)."""
        now = time.monotonic()
        if batch or self._news is None:
            self._news = now
            return False
        return self.timeout is not None and now - self._news >= self.timeout

    def _handed(self, message: Message[R]) -> bool:
        """After the caller took ``message``: count it, store its offset (with a group), and
        say whether the limit is reached."""
        self.received += 1
        self._store(message.partition, message.offset)
        return self._full()

    def messages(self) -> Iterator[Message[R]]:
        """The records with their topic, partition, offset, timestamp and key."""
        self._open()
        try:
            while not self._finished():
                batch = self._fetch()
                if self._idle(batch):
                    return
                for message in batch:
                    yield message
                    if self._handed(message):
                        return
        finally:
            self.close()

    async def amessages(self) -> AsyncIterator[Message[R]]:
        """:meth:`messages` for ``async for``: each fetch runs in a worker thread, so the event
        loop goes on while it waits for the broker."""
        await asyncio.to_thread(self._open)
        try:
            while not self._finished():
                batch = await asyncio.to_thread(self._fetch)
                if self._idle(batch):
                    return
                for message in batch:
                    yield message
                    if self._handed(message):
                        return
        finally:
            await asyncio.to_thread(self.close)

    def __iter__(self) -> Iterator[R]:
        """The records as typed objects."""
        return (message.value for message in self.messages())

    async def _values(self) -> AsyncIterator[R]:
        async for message in self.amessages():
            yield message.value

    def __aiter__(self) -> AsyncIterator[R]:
        """The records as typed objects, for ``async for``."""
        return self._values()

    # --- closing -------------------------------------------------------------------------

    def commit(self) -> None:
        """With a group: commit what has been taken so far now (it is also committed every 5 s
        and when the subscription closes)."""
        from confluent_kafka import KafkaError, KafkaException

        with self._lock:
            if self.group is None or self._state != "open":
                return
            try:
                self._consumer.commit(asynchronous=False)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError._NO_OFFSET:  # nothing new to commit
                    raise

    def close(self) -> None:
        """Stop reading: commit what was taken (with a group) and leave the group."""
        if self._state != "open":
            self._state = "closed"
            return
        try:
            self.commit()
        finally:
            with self._lock:
                self._state = "closed"
                self._consumer.close()

    def __enter__(self) -> Self:
        """The subscription (it opens on the first read)."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close it."""
        self.close()

    async def __aenter__(self) -> Self:
        """The subscription (it opens on the first read)."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close it."""
        await asyncio.to_thread(self.close)
