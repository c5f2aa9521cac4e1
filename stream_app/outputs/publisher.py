"""The worker's outputs (scores, repartitioned transactions, shadow, drift, dead letters) through
one librdkafka producer, delivered before the batch that made them is acknowledged.

Why not Faust's own ``topic.send``: each call builds a future, a ``FutureMessage`` and an asyncio
task, and aiokafka writes the produce requests from the event loop's thread. Profiled on the
full pipeline, that producer path and its socket writes took about a third of the worker's time.
librdkafka queues a record in a few microseconds and does batching, compression and network I/O
in its own threads, off the GIL, on the machine's other core.

Delivery contract (at least once, never less): an agent calls :meth:`OutputPublisher.delivered`
at the end of every micro-batch, before Faust acknowledges the batch's offsets; it waits until
every queued record is acknowledged by the broker and raises :class:`OutputError` if one failed
or is still queued at the timeout. The agent then stops the process without committing, and the
restart re-reads the batch. The wait polls librdkafka's queue length every millisecond with
``asyncio.sleep`` in between, so the event loop keeps reading and no thread calls into the
producer but the loop's own.

Unless asked for delivery reports (a RocksDB store needs its changelog offsets, see
:mod:`stream_app.outputs.changelog`), only failed deliveries call back into Python
(``delivery.report.only.error``), so a delivered record costs nothing after its ``produce``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from stream_app.config import Settings
from stream_app.exceptions import StreamAppError

OUTPUT_CONFIG: dict[str, str | int | bool] = {
    "linger.ms": 5,
    "batch.size": 1024 * 1024,
    "acks": "all",
    "enable.idempotence": True,
    # Java-compatible key hashing, as Faust (aiokafka) and the bulk publisher use: the terminal
    # repartition topic must put a terminal's records where its table partition is.
    "partitioner": "murmur2_random",
}
"""Producer settings on top of ``Settings.kafka_client_config()``."""
DELIVERY_POLL_S = 0.001
"""How often :meth:`OutputPublisher.delivered` looks at the queue while records are in flight."""

Headers = Sequence[tuple[str, bytes]]


class OutputError(StreamAppError, RuntimeError):
    """Output records could not be delivered to Kafka."""


class OutputPublisher:
    """Queue output records; :meth:`delivered` waits until the broker has them all."""

    def __init__(
        self,
        settings: Settings,
        *,
        report_deliveries: bool = False,
        config: Mapping[str, Any] | None = None,
        producer_factory: Callable[[dict[str, Any]], Any] = Producer,
    ) -> None:
        """``report_deliveries``: call a record's ``on_delivery`` for successes too."""
        conf: dict[str, Any] = {**settings.kafka_client_config(), **OUTPUT_CONFIG}
        conf["delivery.report.only.error"] = not report_deliveries
        conf.update(config or {})
        conf["on_delivery"] = self.on_delivery
        self.config = conf
        self._producer = producer_factory(conf)
        self.failed = 0
        self.first_error: str | None = None

    def on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        """Count a failed delivery (the default delivery callback)."""
        if err is None:
            return
        self.failed += 1
        if self.first_error is None:
            self.first_error = f"topic {msg.topic()}: {err.str()}"

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None = None,
        partition: int | None = None,
        on_delivery: Callable[[Any, Any], None] | None = None,
    ) -> None:
        """Queue one record (waits, serving callbacks, while librdkafka's queue is full).

        ``partition`` None: the partitioner picks it from the key. ``on_delivery`` replaces the
        default callback for this record.
        """
        extra: dict[str, Any] = {}
        if headers:
            extra["headers"] = list(headers)
        if partition is not None:
            extra["partition"] = partition
        if on_delivery is not None:
            extra["on_delivery"] = on_delivery
        while True:
            try:
                self._producer.produce(topic, value, key, **extra)
                return
            except BufferError:
                self._producer.poll(0.05)

    def send_many(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None:
        """Queue ``(key, value)`` records for ``topic``."""
        produce = self._producer.produce
        for key, value in records:
            try:
                produce(topic, value, key)
            except BufferError:
                self.send(topic, key, value)

    def pending(self) -> int:
        """Records queued or in flight."""
        return len(self._producer)

    def check(self) -> None:
        """Raise :class:`OutputError` if a delivery failed since the start."""
        if self.failed:
            raise OutputError(
                f"{self.failed} output record(s) failed delivery, first: {self.first_error}. "
                "Check the broker and the topic (existence, ACLs, message.max.bytes); the worker "
                "stops without committing, so the batch is re-read on restart."
            )

    async def delivered(self, timeout: float = 60.0) -> None:
        """Wait until every queued record is delivered; raise if one failed or is left."""
        producer = self._producer
        producer.poll(0)
        if len(producer):
            deadline = time.monotonic() + timeout
            while len(producer):
                if time.monotonic() > deadline:
                    raise OutputError(
                        f"{len(producer)} output record(s) still undelivered after {timeout:.0f} "
                        "s; is the broker reachable? The worker stops without committing, so "
                        "the batch is re-read on restart."
                    )
                await asyncio.sleep(DELIVERY_POLL_S)
                producer.poll(0)
        self.check()

    def close(self, timeout: float = 10.0) -> int:
        """Deliver what is queued (up to ``timeout``); return the records left undelivered."""
        return int(self._producer.flush(timeout))
