"""The worker's outputs (scores, repartitioned transactions, shadow, drift, dead letters, the
tables' changelog records) through one librdkafka producer, delivered before the offsets of the
records that made them are committed.

Why not Faust's own ``topic.send``: each call builds a future, a ``FutureMessage`` and an asyncio
task, and aiokafka writes the produce requests from the event loop's thread. librdkafka queues a
record in a microsecond or two and does batching, compression and network I/O in its own
threads, off the GIL, on the machine's other core.

Delivery contract (at least once, never less): records are counted in *epochs*. Everything sent
goes into the current epoch; a checkpoint closes it (:meth:`OutputPublisher.rotate`) right after
the offsets it will commit are read, and waits (:meth:`OutputPublisher.settle`) until every
record of that epoch and of the epochs before it is acknowledged by the broker. Only then are
the offsets committed. Records sent after the rotation belong to the next epoch: the stages
never wait for each other's outputs, or for a commit. A failed delivery makes ``settle`` raise
:class:`OutputError`; the worker then stops without committing, and the restart re-reads.

Every delivery report calls back into Python (one call per record, served by ``poll`` on the
event loop's thread, so no lock is needed); with ``listener`` set, that callback also tells it
(a RocksDB store needs its changelog offsets, see :mod:`stream_app.outputs.changelog`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from stream_app.config import Settings
from stream_app.exceptions import StreamAppError
from stream_app.io.security import librdkafka_config

OUTPUT_CONFIG: dict[str, str | int | bool] = {
    # Batching: a record waits up to 5 ms for others to the same partition (librdkafka sends
    # earlier when a batch fills); 1 MiB batches, at most 1,000,000 bytes per request.
    "linger.ms": 5,
    "batch.size": 1024 * 1024,
    "acks": "all",
    "enable.idempotence": True,
    # Java-compatible key hashing, as Faust (aiokafka) and the bulk publisher use: the terminal
    # repartition topic must put a terminal's records where its table partition is.
    "partitioner": "murmur2_random",
    "delivery.report.only.error": False,  # every report counts down its epoch
}
"""Producer settings on top of ``librdkafka_config(settings)`` (see README, Performance)."""
DELIVERY_POLL_S = 0.001
"""How often :meth:`OutputPublisher.settle` looks at the epoch while records are in flight."""

Headers = Sequence[tuple[str, bytes | None]]
Listener = Callable[[Any, Any], None]


class OutputError(StreamAppError, RuntimeError):
    """Output records could not be delivered to Kafka."""


class Epoch:
    """Records sent between two checkpoints, and how many are still in flight."""

    __slots__ = ("callback", "failed", "first_error", "number", "pending")

    def __init__(self, number: int, listener: Listener | None) -> None:
        self.number = number
        self.pending = 0
        self.failed = 0
        self.first_error: str | None = None
        self.callback = self._with(listener) if listener is not None else self._count

    def _count(self, err: KafkaError | None, msg: Message) -> None:
        self.pending -= 1
        if err is not None:
            self.failed += 1
            if self.first_error is None:
                self.first_error = f"topic {msg.topic()}: {err.str()}"

    def _with(self, listener: Listener) -> Callable[[Any, Any], None]:
        count = self._count

        def callback(err: KafkaError | None, msg: Message) -> None:
            count(err, msg)
            listener(err, msg)

        return callback


class OutputPublisher:
    """Queue output records; :meth:`settle` waits until the broker has an epoch's records."""

    def __init__(
        self,
        settings: Settings,
        *,
        config: Mapping[str, Any] | None = None,
        producer_factory: Callable[[dict[str, Any]], Any] = Producer,
        listener: Listener | None = None,
    ) -> None:
        """``listener``: told of every delivery report (err, msg) after it is counted."""
        conf: dict[str, Any] = {**librdkafka_config(settings), **OUTPUT_CONFIG}
        conf.update(config or {})
        self.config = conf
        self._producer = producer_factory(conf)
        self.listener = listener
        self._epochs: list[Epoch] = []  # closed, not yet settled
        self.epoch = Epoch(0, listener)
        self.failed = 0
        self.first_error: str | None = None
        self.sent = 0
        self.last_delivery = time.monotonic()  # when a delivery report last came (liveness)

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None = None,
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> None:
        """Queue one record (waits, serving callbacks, while librdkafka's queue is full).

        ``partition`` None: the partitioner picks it from the key. ``timestamp`` (ms) None: the
        produce time.
        """
        extra: dict[str, Any] = {}
        if headers:
            extra["headers"] = list(headers)
        if partition is not None:
            extra["partition"] = partition
        if timestamp:
            extra["timestamp"] = timestamp
        epoch = self.epoch
        while True:
            try:
                self._producer.produce(topic, value, key, on_delivery=epoch.callback, **extra)
                break
            except BufferError:
                self._producer.poll(0.05)
        epoch.pending += 1
        self.sent += 1

    def send_many(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None:
        """Queue ``(key, value)`` records for ``topic``."""
        produce = self._producer.produce
        epoch = self.epoch
        callback = epoch.callback
        for key, value in records:
            try:
                produce(topic, value, key, on_delivery=callback)
            except BufferError:
                self.send(topic, key, value)
                continue
            epoch.pending += 1
        self.sent += len(records)

    def send_timed(self, topic: str, records: Sequence[tuple[bytes, bytes, int | None]]) -> None:
        """Queue ``(key, value, timestamp ms)`` records for ``topic``."""
        produce = self._producer.produce
        epoch = self.epoch
        callback = epoch.callback
        for key, value, timestamp in records:
            try:
                if timestamp:
                    produce(topic, value, key, on_delivery=callback, timestamp=timestamp)
                else:
                    produce(topic, value, key, on_delivery=callback)
            except BufferError:
                self.send(topic, key, value, timestamp=timestamp)
                continue
            epoch.pending += 1
        self.sent += len(records)

    def poll(self) -> None:
        """Serve the delivery reports that have arrived (never waits)."""
        if self._producer.poll(0):
            self.last_delivery = time.monotonic()

    def pending(self) -> int:
        """Records queued or in flight."""
        return len(self._producer)

    def rotate(self) -> Epoch:
        """Close the current epoch (returned) and open the next one."""
        closed = self.epoch
        self._epochs.append(closed)
        self.epoch = Epoch(closed.number + 1, self.listener)
        return closed

    def _check(self, epoch: Epoch) -> None:
        if epoch.failed:
            self.failed += epoch.failed
            self.first_error = self.first_error or epoch.first_error
            raise OutputError(
                f"{epoch.failed} output record(s) failed delivery, first: {epoch.first_error}. "
                "Check the broker and the topic (existence, ACLs, message.max.bytes); the worker "
                "stops without committing, so the input is read again on restart."
            )

    def check(self) -> None:
        """Raise :class:`OutputError` if a delivery of a settled or current epoch failed."""
        if self.failed:
            raise OutputError(
                f"{self.failed} output record(s) failed delivery, first: {self.first_error}."
            )
        for epoch in [*self._epochs, self.epoch]:
            if epoch.failed:
                self._check(epoch)

    async def settle(self, epoch: Epoch, timeout: float = 60.0) -> None:
        """Wait until every record of ``epoch`` and of the epochs closed before it is delivered;
        raise :class:`OutputError` if one failed or is left at the timeout."""
        producer = self._producer
        producer.poll(0)
        waiting = [e for e in self._epochs if e.number <= epoch.number]
        deadline = time.monotonic() + timeout
        while any(e.pending > 0 for e in waiting):
            for e in waiting:
                if e.failed:
                    self._check(e)
            if time.monotonic() > deadline:
                left = sum(e.pending for e in waiting)
                raise OutputError(
                    f"{left} output record(s) still undelivered after {timeout:.0f} s; is the "
                    "broker reachable? The worker stops without committing, so the input is "
                    "read again on restart."
                )
            await asyncio.sleep(DELIVERY_POLL_S)
            if producer.poll(0):
                self.last_delivery = time.monotonic()
        for e in waiting:
            self._check(e)
        self._epochs = [e for e in self._epochs if e.number > epoch.number]

    async def delivered(self, timeout: float = 60.0) -> None:
        """Wait until everything sent so far is delivered (rotate, then settle)."""
        await self.settle(self.rotate(), timeout)

    def close(self, timeout: float = 10.0) -> int:
        """Deliver what is queued (up to ``timeout``); return the records left undelivered."""
        return int(self._producer.flush(timeout))
