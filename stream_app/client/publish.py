"""Publish transactions and labels the way the worker expects them, or learn at once why not.

Every record is checked by the worker's own decoders (``decode_transaction`` and
``decode_label`` of :mod:`stream_app.io.codecs`) before it is sent: one the worker would dead-letter
for its content raises :class:`RecordRejected` with the same reason code
(:class:`~stream_app.io.deadletter.Reason`) and message, and is not sent. (What only the worker's
state can tell, such as ``duplicate_event`` or ``too_late``, still reaches the dead-letter
topic.) A transaction is keyed by its ``customer_id``, a label by its ``terminal_id``, and
partitioned by murmur2 as the worker checks it (:mod:`stream_app.io.partitioning`): the producer
is :class:`~stream_app.sources.producer.BulkProducer` (batches of up to 1 MiB lingering 20 ms, lz4,
idempotent, ``partitioner=murmur2_random``). :meth:`Publisher.flush` waits for the broker and
returns a :class:`PublishReport` with a :class:`Delivery` (topic, partition, offset) per record.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, NoReturn, Self, TypeVar

import orjson
from confluent_kafka import KafkaError, Message, Producer

from stream_app.config import Settings
from stream_app.exceptions import StreamAppError
from stream_app.io.codecs import Label, Transaction, decode_label, decode_transaction, encode
from stream_app.io.deadletter import Reason, Rejection
from stream_app.sources.producer import BulkProducer, PublishError

Event = Mapping[str, Any] | bytes
"""A record to publish: the event as a mapping (encoded as JSON; datetimes with an offset become
RFC 3339 text) or the exact JSON bytes to send."""

D = TypeVar("D", Transaction, Label)

TRANSACTIONS = "transactions"
LABELS = "labels"


class RecordRejected(StreamAppError, ValueError):
    """A record the worker would dead-letter; it was not sent.

    ``reason`` is the dead-letter reason code, ``detail`` the worker's message, ``kind``
    ``"transaction"`` or ``"label"``, ``index`` its position in a batch call (None for one record)
    and ``event_id`` its id when it has a readable one.
    """

    def __init__(
        self,
        kind: str,
        rejection: Rejection,
        event_id: str | None = None,
        index: int | None = None,
    ) -> None:
        which = f"{kind} #{index}" if index is not None else kind
        named = f" {event_id!r}" if event_id is not None else ""
        super().__init__(
            f"{which}{named} rejected ({rejection.reason.value}): {rejection.message} "
            "It was not sent (the worker would dead-letter it); correct it and send it again."
        )
        self.kind = kind
        self.reason: Reason = rejection.reason
        self.detail = rejection.message
        self.event_id = event_id
        self.index = index


class DeliveryFailed(PublishError):
    """Records did not reach the broker; ``report`` holds every delivery of the flush."""

    def __init__(self, message: str, report: PublishReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True, slots=True)
class Delivery:
    """The broker's answer for one record: where it went, or why it did not get there."""

    topic: str
    partition: int
    offset: int
    key: str
    event_id: str
    error: str | None = None

    @property
    def ok(self) -> bool:
        """The broker has the record."""
        return self.error is None


@dataclass(slots=True)
class PublishReport:
    """What one :meth:`Publisher.flush` covered: the deliveries and the records not sent."""

    deliveries: list[Delivery] = field(default_factory=list)
    rejected: list[RecordRejected] = field(default_factory=list)

    @property
    def delivered(self) -> int:
        """How many records the broker acknowledged."""
        return sum(1 for d in self.deliveries if d.ok)

    def partitions(self, topic: str | None = None) -> dict[str, int]:
        """Key → partition of every delivered record (of ``topic``, a real name, when given)."""
        return {
            d.key: d.partition
            for d in self.deliveries
            if d.ok and (topic is None or d.topic == topic)
        }


def _event_id(event: Event) -> str | None:
    """The event's id when it has a readable one (for the error message)."""
    try:
        obj = orjson.loads(event) if isinstance(event, bytes) else event
        value = obj.get("event_id") if isinstance(obj, Mapping) else None
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, str) else None


class Publisher:
    """Validate, key, batch and send transactions and labels; collect the delivery reports.

    Use as a context manager (a clean exit flushes and raises on any failed delivery) or call
    :meth:`flush`. ``settings``: the worker's (broker, topic prefix, security, message size
    limit), by default read from the environment as the worker reads them. ``rate``: records/s
    (0 = as fast as possible).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        rate: float = 0.0,
        config: Mapping[str, Any] | None = None,
        producer_factory: Callable[[dict[str, Any]], Any] = Producer,
    ) -> None:
        self.settings = settings if settings is not None else Settings()
        self._producer = BulkProducer(
            self.settings, rate=rate, config=config, producer_factory=producer_factory
        )
        self._topics = {kind: self.settings.topic(kind) for kind in (TRANSACTIONS, LABELS)}
        self._report = PublishReport()

    def _encoded(self, kind: str, event: Event, index: int | None) -> bytes:
        if isinstance(event, bytes):
            return event
        try:
            return encode(dict(event))
        except TypeError as exc:  # orjson: a value JSON has no type for
            raise RecordRejected(
                kind,
                Rejection(Reason.WRONG_TYPE, f"The {kind} cannot be written as JSON: {exc}."),
                _event_id(event),
                index,
            ) from exc

    def _reject(self, kind: str, rejection: Rejection, event: Event, index: int | None) -> NoReturn:
        error = RecordRejected(kind, rejection, _event_id(event), index)
        self._report.rejected.append(error)
        raise error

    def _send(self, topic: str, key: str, value: bytes, event_id: str) -> None:
        def delivered(err: KafkaError | None, msg: Message) -> None:
            partition, offset = msg.partition(), msg.offset()
            self._report.deliveries.append(
                Delivery(
                    topic=msg.topic() or topic,
                    partition=-1 if partition is None else partition,
                    offset=-1 if offset is None else offset,
                    key=key,
                    event_id=event_id,
                    error=None if err is None else str(err),
                )
            )

        self._producer.produce(topic, key, value, on_delivery=delivered)

    def _checked(
        self,
        kind: str,
        event: Event,
        index: int | None,
        decode: Callable[[bytes, int], D | Rejection],
    ) -> tuple[D, bytes]:
        """``event`` decoded as the worker decodes it, and its bytes; raises on a rejection."""
        value = self._encoded(kind, event, index)
        decoded = decode(value, self.settings.max_message_bytes)
        if isinstance(decoded, Rejection):
            self._reject(kind, decoded, event, index)
        return decoded, value

    def send_transaction(self, event: Event, *, index: int | None = None) -> Transaction:
        """Validate ``event`` as the worker does and queue it on ``transactions``, keyed by its
        ``customer_id``; return it decoded. Raises :class:`RecordRejected` (nothing sent)."""
        tx, value = self._checked("transaction", event, index, decode_transaction)
        self._send(self._topics[TRANSACTIONS], tx.customer_id, value, tx.event_id)
        return tx

    def send_label(self, event: Event, *, index: int | None = None) -> Label:
        """Validate ``event`` as the worker does and queue it on ``labels``, keyed by its
        ``terminal_id``; return it decoded. Raises :class:`RecordRejected` (nothing sent)."""
        label, value = self._checked("label", event, index, decode_label)
        self._send(self._topics[LABELS], label.terminal_id, value, label.event_id)
        return label

    def send_transactions(self, events: Iterable[Event]) -> list[RecordRejected]:
        """Queue every valid transaction of ``events``; return the rejected ones' errors (each
        with its ``index`` in ``events``), which are not sent."""
        return self._send_all(self.send_transaction, events)

    def send_labels(self, events: Iterable[Event]) -> list[RecordRejected]:
        """Queue every valid label of ``events``; return the rejected ones' errors."""
        return self._send_all(self.send_label, events)

    @staticmethod
    def _send_all(send: Callable[..., object], events: Iterable[Event]) -> list[RecordRejected]:
        rejected: list[RecordRejected] = []
        for index, event in enumerate(events):
            try:
                send(event, index=index)
            except RecordRejected as exc:
                rejected.append(exc)
        return rejected

    def flush(self, timeout: float = 60.0) -> PublishReport:
        """Wait up to ``timeout`` s until the broker has every queued record; return what was
        delivered and rejected since the last flush. Raises :class:`DeliveryFailed` when a record
        failed or is still undelivered (the deliveries are in its ``report``)."""
        try:
            self._producer.flush(timeout)  # the delivery callbacks fill self._report
        except PublishError as exc:
            report, self._report = self._report, PublishReport()
            failed = [d for d in report.deliveries if not d.ok][:3]
            detail = "; ".join(f"{d.event_id} on {d.topic}: {d.error}" for d in failed)
            raise DeliveryFailed(f"{exc}{'; ' + detail if detail else ''}", report) from exc
        report, self._report = self._report, PublishReport()
        return report

    def close(self, timeout: float = 5.0) -> int:
        """Give queued records ``timeout`` s without raising; return how many remain unsent."""
        return self._producer.abort(timeout)

    def __enter__(self) -> Self:
        """The publisher is ready."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Flush on a clean exit; after an error, give queued records a short chance only."""
        if exc_type is None:
            self.flush()
        else:
            self.close()
