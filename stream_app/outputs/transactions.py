"""Where a stage's micro-batch puts its outputs, and what "done" means for the batch.

An agent opens a batch with :meth:`BatchSink.begin`, sends its outputs through the sink, and ends
with :meth:`BatchSink.finish`, given the batch's input records, before Faust acknowledges them:

- :class:`AtLeastOnceSink` (``processing_guarantee=at_least_once``): the outputs go through the
  worker's shared :class:`~stream_app.outputs.publisher.OutputPublisher`; ``finish`` waits until
  the broker has them all. Faust commits the acknowledged offsets later, so a crash re-reads and
  re-scores what was in flight (duplicates, never a loss).
- :class:`TransactionalSink` (``exactly_once``): one librdkafka transactional producer per stage.
  ``begin`` opens a transaction; ``finish`` waits until the tables' changelog records (sent
  outside the transaction, see below) are delivered, adds the batch's input offsets to the
  transaction with the consumer group's current metadata (KIP-447: a member the group has moved
  past is refused, so a zombie cannot commit), and commits. A ``read_committed`` consumer of
  ``scores`` (or ``transactions.by-terminal``, ``drift``, ``transactions.dlq``) sees a batch's
  records exactly when its offsets are committed: after a crash, the aborted attempt is invisible
  and the re-read batch commits once.

Why the changelogs stay outside the transactions: Faust 0.15 table recovery (and standbys) ends
when a changelog partition's last *record* reaches the partition's high watermark; a
transaction's commit marker occupies the last offset, so recovery would wait for Faust's
aborted-transaction timeout path, which runs only for Faust's own exactly-once mode. The stages'
state updates are idempotent by source offset instead: a changelog record of an aborted batch
holds the state the re-read batch would produce again, so table state is exactly-once in effect,
and the scores computed from it on the re-read are the same.

Shadow records (``scores.shadow``) stay best effort in either mode: the challenger runs outside
the batch, in its own process.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NoReturn, Protocol

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from stream_app.config import Settings
from stream_app.outputs.publisher import Headers, OutputError, OutputPublisher
from stream_app.pipeline.customer_stage import InputRecord

log = logging.getLogger("stream_app.outputs")

GROUP_METADATA_MAGIC = b"CGMDv2:"
"""librdkafka's serialized ``rd_kafka_consumer_group_metadata_t`` (what
``Consumer.consumer_group_metadata()`` returns and ``send_offsets_to_transaction`` reads)."""


def group_metadata(
    group_id: str, generation_id: int, member_id: str, group_instance_id: str | None = None
) -> bytes:
    """The consumer group metadata confluent-kafka's ``send_offsets_to_transaction`` takes.

    The worker's consumer is aiokafka (inside Faust), not librdkafka, so the metadata cannot come
    from ``Consumer.consumer_group_metadata()``; this writes the same bytes librdkafka's
    ``rd_kafka_consumer_group_metadata_write`` does (checked against it in the unit tests):
    magic, generation id (native int32), NUL-terminated group id and member id, then a flag byte
    (1: no group instance id; 0: the id follows, NUL-terminated).
    """
    out = (
        GROUP_METADATA_MAGIC
        + struct.pack("=i", generation_id)
        + group_id.encode()
        + b"\0"
        + member_id.encode()
        + b"\0"
    )
    if group_instance_id is None:
        return out + b"\x01"
    return out + b"\x00" + group_instance_id.encode() + b"\0"


def batch_offsets(records: Iterable[InputRecord]) -> list[TopicPartition]:
    """The offsets to commit for a batch: per input partition, one past its last record."""
    last: dict[tuple[str, int], int] = {}
    for record in records:
        pos = record.position
        key = (pos.topic, pos.partition)
        if pos.offset >= last.get(key, -1):
            last[key] = pos.offset
    return [TopicPartition(t, p, o + 1) for (t, p), o in sorted(last.items())]


def default_transactional_id(settings: Settings) -> str:
    """``STREAM_APP_TRANSACTIONAL_ID`` or ``<app id>-<host name>-<web port>``: stable across a
    worker's restarts (the new producer then aborts what the killed one left open), unique among
    the workers of one host (they cannot share a web port)."""
    if settings.transactional_id:
        return settings.transactional_id
    return f"{settings.app_id}-{socket.gethostname()}-{settings.web_port}"


class BatchSink(Protocol):
    """What an agent sends a micro-batch's outputs through."""

    async def start(self) -> None:
        """Get ready (once, before the agent's first batch)."""

    def begin(self) -> None:
        """Open the batch (before its first output)."""

    def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers | None = None
    ) -> None:
        """Queue one output record of the batch."""

    def send_many(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None:
        """Queue ``(key, value)`` output records of the batch."""

    async def finish(self, records: Sequence[InputRecord]) -> None:
        """Make the batch's outputs durable; raise :class:`OutputError` if they cannot be."""


class AtLeastOnceSink:
    """Outputs through the shared publisher; Faust commits the offsets after the batch."""

    def __init__(self, outputs: OutputPublisher) -> None:
        self.outputs = outputs

    async def start(self) -> None:
        """Nothing to set up."""

    def begin(self) -> None:
        """Nothing to open."""

    def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers | None = None
    ) -> None:
        self.outputs.send(topic, key, value, headers)

    def send_many(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None:
        self.outputs.send_many(topic, records)

    async def finish(self, records: Sequence[InputRecord]) -> None:
        """Wait until the broker has every output (and changelog record) of the batch."""
        await self.outputs.delivered()


CALL_GRACE_S = 15.0
"""How long past its own timeout a librdkafka transaction call may block before the stage gives
up on it (see :meth:`TransactionalSink._call`)."""


class TransactionalSink(AtLeastOnceSink):
    """One stage's outputs in Kafka transactions, one transaction per micro-batch.

    ``send`` and ``send_many`` are :class:`AtLeastOnceSink`'s, into a transactional publisher of
    the stage's own; ``start``, ``begin`` and ``finish`` run the transaction.
    """

    def __init__(
        self,
        settings: Settings,
        stage: str,
        changelogs: OutputPublisher,
        metadata: Callable[[], bytes],
        *,
        producer_factory: Callable[[dict[str, Any]], Any] = Producer,
        timeout_s: float = 30.0,
    ) -> None:
        """``changelogs``: the non-transactional publisher the tables' changelog records (and
        shadow records) go through. ``metadata``: the consumer group's metadata at call time."""
        self.transactional_id = f"{default_transactional_id(settings)}-{stage}"
        self.stage = stage
        self.timeout_s = timeout_s
        self.changelogs = changelogs
        self.metadata = metadata
        super().__init__(
            OutputPublisher(
                settings,
                config={
                    "transactional.id": self.transactional_id,
                    "transaction.timeout.ms": int(settings.transaction_timeout_s * 1000),
                },
                producer_factory=producer_factory,
            )
        )
        self._producer: Any = self.outputs._producer
        self._initialized = False
        self._open = False
        self.committed = 0
        self.aborted = 0

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A blocking librdkafka transaction call (given ``timeout_s``), off the event loop's
        thread. librdkafka does not always return by that timeout (seen here: an
        ``init_transactions`` right after a kill -9, under load, still blocked after 5 minutes;
        librdkafka issues #3013, #4420 report the like), and a stage waiting on it stops the
        whole worker silently; so after ``timeout_s + CALL_GRACE_S`` this raises
        :class:`OutputError` (the worker exits 70 and is restarted) and leaves the thread behind.
        """
        name = getattr(fn, "__name__", "transaction call")
        call = asyncio.get_running_loop().run_in_executor(None, fn, *args)
        try:
            return await asyncio.wait_for(call, self.timeout_s + CALL_GRACE_S)
        except TimeoutError:
            raise OutputError(
                f"{self.stage} stage: librdkafka's {name} did not return within "
                f"{self.timeout_s + CALL_GRACE_S:.0f} s (its timeout is {self.timeout_s:.0f} s); "
                "is the transaction coordinator reachable? The worker stops; on restart the "
                "batch is read again."
            ) from None

    async def start(self) -> None:
        """Register the transactional id with the coordinator; this fences a previous producer
        with the same id (a killed worker's) and aborts the transaction it left open."""
        if self._initialized:
            return
        try:
            await self._call(self._producer.init_transactions, self.timeout_s)
        except KafkaException as exc:
            raise OutputError(
                f"{self.stage} stage: cannot initialize transactions as "
                f"{self.transactional_id!r}: {exc.args[0]}. The broker must allow transactions "
                "(transaction.state.log.* settings, on one node replication factor 1 and "
                "min.isr 1) and the user needs Write and Describe on this TransactionalId."
            ) from exc
        self._initialized = True
        log.info("%s stage: transactions as %r", self.stage, self.transactional_id)

    def begin(self) -> None:
        """Open the batch's transaction (:meth:`start` must have run)."""
        if not self._initialized:
            raise OutputError(f"{self.stage} stage: transactions used before start()")
        self._producer.begin_transaction()
        self._open = True

    async def finish(self, records: Sequence[InputRecord]) -> None:
        """Changelogs delivered, then the batch's offsets and outputs committed atomically.

        Any failure aborts the transaction and raises :class:`OutputError`: the agent stops the
        worker without acknowledging the batch, and the restart re-reads it.
        """
        await self.changelogs.delivered()
        offsets = batch_offsets(records)
        try:
            if offsets:
                await self._call(
                    self._producer.send_offsets_to_transaction,
                    offsets,
                    self.metadata(),
                    self.timeout_s,
                )
            await self._call(self._producer.commit_transaction, self.timeout_s)
        except KafkaException as exc:
            await self._abort(exc)  # raises
        # Committed: every record of the transaction was delivered (else the commit fails).
        self._open = False
        self.committed += 1

    async def _abort(self, exc: KafkaException) -> NoReturn:
        error: KafkaError = exc.args[0]
        self.aborted += 1
        if not error.fatal():
            try:
                await self._call(self._producer.abort_transaction, self.timeout_s)
            except KafkaException as abort_exc:
                log.error("%s stage: abort failed too: %s", self.stage, abort_exc.args[0])
        self._open = False
        raise OutputError(
            f"{self.stage} stage: transaction not committed ({error.name()}: {error.str()}); "
            + (
                "another producer with this transactional id took over (a second worker with "
                "the same STREAM_APP_TRANSACTIONAL_ID?)"
                if error.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED)
                else "aborted, so none of the batch's outputs or offsets are visible"
            )
            + ". The worker stops; on restart the batch is read again."
        ) from exc

    def close(self, timeout: float = 10.0) -> None:
        """Abort an open transaction (its batch was not acknowledged) and close."""
        if self._open:
            try:
                self._producer.abort_transaction(timeout)
            except KafkaException as exc:
                log.warning("%s stage: abort at shutdown: %s", self.stage, exc.args[0])
            self._open = False
        self._producer.flush(timeout)
