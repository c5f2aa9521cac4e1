"""A thin confluent-kafka producer for bulk publishing, and the loop that publishes a schedule.

Throughput settings on top of ``librdkafka_config(settings)``: ``linger.ms`` 20 and
``batch.size`` 1 MiB (large batches), ``compression.type`` lz4 (cheap on CPU), ``acks`` all with
``enable.idempotence`` (no duplicates or reordering within a partition on retries). Publishing at
a rate (a live stream) keeps the order across topics instead (``PACED_CONFIG``). Records keep
librdkafka's default timestamp, the produce time; the event time is inside the value.

Failures are counted by the delivery callback and raised once, at :meth:`BulkProducer.flush`, as
:class:`PublishError` with the first error, so a bulk run does not stop on the first transient
problem but never ends silently incomplete.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Self

from confluent_kafka import KafkaError, Message, Producer

from stream_app.config import Settings
from stream_app.exceptions import StreamAppError
from stream_app.io.security import librdkafka_config
from stream_app.sources.schedule import Record

BULK_CONFIG: dict[str, str | int | bool] = {
    "linger.ms": 20,
    "batch.size": 1024 * 1024,
    "compression.type": "lz4",
    "acks": "all",
    "enable.idempotence": True,
    # Java-compatible key hashing, as aiokafka (Faust) uses: a key lands on the same partition
    # whoever produces it, which keeps labels co-partitioned with the worker's own topics.
    "partitioner": "murmur2_random",
}
"""Producer settings added to the client configuration for bulk publishing."""
PACED_CONFIG: dict[str, str | int | bool] = {
    "linger.ms": 0,
    "max.in.flight.requests.per.connection": 1,
}
"""Added when publishing at a rate (a live stream): records reach the broker in the order they
were produced, across topics and partitions. With ``linger.ms`` 20 each partition's batch left
on its own timer, so a transaction could be appended up to 20 ms before a label produced ahead
of it, and a worker that keeps up scored it without that label (the offline features have it;
the worker counts such labels in ``stream_app_labels_late_total``). One request in flight at a
time, each carrying whatever was produced by then, keeps the order at a paced rate."""
POLL_EVERY = 1_000
"""Serve delivery callbacks after this many produce calls."""
DeliveryCallback = Callable[[KafkaError | None, Message], None]
"""librdkafka's delivery report: the error (None when delivered) and the message."""


class PublishError(StreamAppError, RuntimeError):
    """Records could not be delivered to Kafka."""


class TokenBucket:
    """Rate limiter: ``rate`` tokens per second, bursts up to ``burst``, on a monotonic clock.

    :meth:`reserve` takes one token and returns how long the caller must wait before using it
    (0.0 when one was available). Tokens may go negative, so waits queue up fairly.
    """

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``burst`` defaults to a tenth of a second's worth of tokens (at least one)."""
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.rate = float(rate)
        self.burst = max(1.0, rate / 10.0) if burst is None else float(burst)
        self._clock = clock
        self._tokens = self.burst
        self._last = clock()

    def reserve(self, tokens: float = 1.0) -> float:
        """Take ``tokens``; return the seconds to wait before they may be used."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        self._tokens -= tokens
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


class BulkProducer:
    """Produce many records fast; count deliveries per topic and failures.

    Use as a context manager or call :meth:`flush` at the end: it waits for the outstanding
    records, returns the delivered counts per topic and raises :class:`PublishError` if any
    record failed or is still undelivered.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        rate: float = 0.0,
        config: Mapping[str, Any] | None = None,
        producer_factory: Callable[[dict[str, Any]], Any] = Producer,
    ) -> None:
        """``rate`` events/s (0 = as fast as possible); ``config`` overrides client settings."""
        if rate < 0:
            raise ValueError(f"rate must not be negative, got {rate}")
        conf: dict[str, Any] = {**librdkafka_config(settings), **BULK_CONFIG}
        if rate > 0:
            conf.update(PACED_CONFIG)
        conf.update(config or {})
        self.config = conf
        self._producer = producer_factory(conf)
        self._bucket = TokenBucket(rate) if rate > 0 else None
        self._known_topics: set[str] = set()  # paced: topics whose partitions are known
        self.produced = 0
        self.delivered: Counter[str] = Counter()
        self.failed = 0
        self.first_error: str | None = None

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.delivered[msg.topic() or ""] += 1
            return
        self.failed += 1
        if self.first_error is None:
            self.first_error = f"topic {msg.topic()}: {err}"

    def _reporting(self, report: DeliveryCallback) -> DeliveryCallback:
        """A delivery callback that counts the record, then hands its report to ``report``."""

        def callback(err: KafkaError | None, msg: Message) -> None:
            self._on_delivery(err, msg)
            report(err, msg)

        return callback

    def _wait(self, seconds: float) -> None:
        """Sleep ``seconds`` while serving delivery callbacks."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self._producer.poll(left)

    def _learn(self, topic: str) -> None:
        """Fetch ``topic``'s partitions before its first record (paced publishing). Otherwise
        that record waits in librdkafka for the topic's metadata while the records produced
        after it, to topics already known, go out: the first labels of a stream reached the
        broker tens of milliseconds after the transactions that followed them."""
        self._producer.list_topics(topic, timeout=30)
        self._known_topics.add(topic)

    def produce(
        self,
        topic: str,
        key: str | bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
        timestamp: int = 0,
        on_delivery: DeliveryCallback | None = None,
    ) -> None:
        """Queue one record (rate-limited if a rate was set); waits when the queue is full.
        ``headers``, ``timestamp`` (ms; 0: the producer's clock): as Kafka takes them.
        ``on_delivery``: also called with this record's delivery report (after it is counted)."""
        if self._bucket is not None:
            wait = self._bucket.reserve()
            if wait > 0:
                self._wait(wait)
            if topic not in self._known_topics:
                self._learn(topic)
        extra: dict[str, Any] = {}
        if headers:
            extra["headers"] = headers
        if timestamp:
            extra["timestamp"] = timestamp
        callback = self._on_delivery if on_delivery is None else self._reporting(on_delivery)
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, on_delivery=callback, **extra)
                break
            except BufferError:
                self._producer.poll(0.05)
        self.produced += 1
        if self.produced % POLL_EVERY == 0:
            self._producer.poll(0)

    def flush(self, timeout: float = 60.0) -> dict[str, int]:
        """Wait up to ``timeout`` s for delivery; return delivered counts per topic.

        Raises :class:`PublishError` if records are still queued after ``timeout`` or any failed.
        """
        remaining = self._producer.flush(timeout)
        if remaining:
            raise PublishError(
                f"{remaining} of {self.produced} records still undelivered after {timeout:g} s; "
                "is the broker reachable (KAFKA_BOOTSTRAP_SERVERS)?"
            )
        if self.failed:
            raise PublishError(
                f"{self.failed} of {self.produced} records failed; first error: {self.first_error}"
            )
        return dict(self.delivered)

    def __enter__(self) -> Self:
        """Enter: the producer is ready."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Flush on a clean exit; on an error, give queued records a short chance only."""
        if exc_type is None:
            self.flush()
        else:
            self.abort()

    def abort(self, timeout: float = 5.0) -> int:
        """After an error elsewhere: give queued records ``timeout`` s; return how many remain."""
        return int(self._producer.flush(timeout))


def publish_records(
    settings: Settings,
    records: Iterable[Record],
    *,
    rate: float = 0.0,
    flush_timeout: float = 60.0,
    on_progress: Callable[[int], None] | None = None,
    progress_every: int = 2_000,
    producer_factory: Callable[[dict[str, Any]], Any] = Producer,
) -> dict[str, int]:
    """Publish a schedule's records; return delivered counts per declared topic name.

    Declared names (``"transactions"``, ``"labels"``) go through ``settings.topic``.
    ``on_progress(n)`` is called with the number of records produced since its last call.
    """
    real: dict[str, str] = {}
    producer = BulkProducer(settings, rate=rate, producer_factory=producer_factory)
    pending = 0
    try:
        for record in records:
            topic = real.get(record.topic)
            if topic is None:
                topic = real[record.topic] = settings.topic(record.topic)
            producer.produce(topic, record.key, record.value)
            pending += 1
            if on_progress is not None and pending >= progress_every:
                on_progress(pending)
                pending = 0
        if on_progress is not None and pending:
            on_progress(pending)
    except BaseException:
        producer.abort()  # a source error still delivers what was queued, then propagates
        raise
    delivered = producer.flush(flush_timeout)
    declared = {name: logical for logical, name in real.items()}
    return {declared.get(name, name): count for name, count in delivered.items()}
