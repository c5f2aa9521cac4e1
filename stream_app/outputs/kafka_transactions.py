"""Exactly-once outputs: one Kafka (librdkafka) transaction per checkpoint.

"Transaction" here is always a Kafka transaction (atomic writes and offset commits); the card
payments the worker scores are the ``transactions`` topic's records, which this module never reads.

With ``processing_guarantee=exactly_once`` the stages' outputs (``scores``,
``transactions.by-terminal``, ``drift``, ``transactions.dlq``) go through
:class:`TransactionalPublisher`, one transactional producer for the whole worker. A transaction
opens with the first output after a checkpoint and is committed by the next checkpoint
(:meth:`TransactionalPublisher.commit`) together with the input offsets of every record processed
since, with the consumer group's current metadata (KIP-447: a member the group has moved past is
refused, so a zombie cannot commit). A ``read_committed`` consumer of the outputs sees a
checkpoint's records exactly when its offsets are committed: after a crash the aborted attempt
is invisible and the re-read records commit once. While a transaction commits, the stages wait
(the worker's batch engine holds its processing lock).

Why the tables' changelogs stay outside the transactions: Faust 0.15 table recovery (and
standbys) ends when a changelog partition's last *record* reaches the partition's high
watermark; a transaction's commit marker occupies the last offset, so recovery would wait for
Faust's aborted-transaction timeout path, which runs only for Faust's own exactly-once mode. The
changelog records of a checkpoint are delivered (outside the transaction) before it commits, and
the stages' state updates are idempotent by source offset: a changelog record of an aborted
attempt holds the state the re-read records produce again, so table state is exactly-once in
effect, and the features computed from it on the re-read are the same.

Shadow records (``scores.shadow``) stay best effort in either mode: the challenger runs outside
the batch, in its own process.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NoReturn

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from stream_app.config import Settings
from stream_app.io.records import RecordLike
from stream_app.outputs.publisher import Headers, OutputError, OutputPublisher

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


def batch_offsets(records: Iterable[RecordLike]) -> list[TopicPartition]:
    """The offsets to commit for records: per input partition, one past its last record."""
    last: dict[tuple[str, int], int] = {}
    for record in records:
        key = (record.topic, record.partition)
        if record.offset >= last.get(key, -1):
            last[key] = record.offset
    return [TopicPartition(t, p, o + 1) for (t, p), o in sorted(last.items())]


def default_transactional_id(settings: Settings) -> str:
    """``STREAM_APP_TRANSACTIONAL_ID`` or ``<app id>-<host name>-<web port>``: stable across a
    worker's restarts (the new producer then aborts what the killed one left open), unique among
    the workers of one host (they cannot share a web port)."""
    if settings.transactional_id:
        return settings.transactional_id
    return f"{settings.app_id}-{socket.gethostname()}-{settings.web_port}"


CALL_GRACE_S = 15.0
"""How long past its own timeout a librdkafka transaction call may block before the worker gives
up on it (see :meth:`TransactionalPublisher._call`)."""


class TransactionalPublisher(OutputPublisher):
    """The stages' outputs in Kafka transactions, one transaction per checkpoint."""

    def __init__(
        self,
        settings: Settings,
        metadata: Callable[[], bytes],
        *,
        producer_factory: Callable[[dict[str, Any]], Any] = Producer,
        timeout_s: float = 30.0,
    ) -> None:
        """``metadata``: the consumer group's metadata at call time."""
        self.transactional_id = f"{default_transactional_id(settings)}-outputs"
        self.timeout_s = timeout_s
        self.metadata = metadata
        super().__init__(
            settings,
            config={
                "transactional.id": self.transactional_id,
                "transaction.timeout.ms": int(settings.transaction_timeout_s * 1000),
            },
            producer_factory=producer_factory,
        )
        self._initialized = False
        self._open = False
        self._began_as: bytes | None = None  # the group metadata when the open one began
        self.committed = 0
        self.aborted = 0

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A blocking librdkafka transaction call (given ``timeout_s``), off the event loop's
        thread. librdkafka does not always return by that timeout (seen here: an
        ``init_transactions`` right after a kill -9, under load, still blocked after 5 minutes;
        librdkafka issues #3013, #4420 report the like), and a worker waiting on it scores
        nothing, silently; so after ``timeout_s + CALL_GRACE_S`` this raises
        :class:`OutputError` (the worker exits 70 and is restarted) and leaves the thread behind.
        """
        name = getattr(fn, "__name__", "transaction call")
        call = asyncio.get_running_loop().run_in_executor(None, fn, *args)
        try:
            return await asyncio.wait_for(call, self.timeout_s + CALL_GRACE_S)
        except TimeoutError:
            raise OutputError(
                f"librdkafka's {name} did not return within {self.timeout_s + CALL_GRACE_S:.0f} "
                f"s (its timeout is {self.timeout_s:.0f} s); is the transaction coordinator "
                "reachable? The worker stops; on restart the input is read again."
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
                f"cannot initialize transactions as {self.transactional_id!r}: {exc.args[0]}. "
                "The broker must allow transactions (transaction.state.log.* settings, on one "
                "node replication factor 1 and min.isr 1) and the user needs Write and Describe "
                "on this TransactionalId."
            ) from exc
        self._initialized = True
        log.info("outputs in transactions as %r", self.transactional_id)

    def begin(self) -> None:
        """Open a transaction unless one is open (:meth:`start` must have run)."""
        if self._open:
            return
        if not self._initialized:
            raise OutputError("transactions used before start()")
        self._producer.begin_transaction()
        self._open = True
        # The member (generation, member id) whose records this transaction's outputs come from.
        # It commits the offsets under that membership, never a later one: a member the group
        # dropped (frozen, then resumed: a zombie) has its generation reset by aiokafka before
        # the revoke's checkpoint, and offsets sent with generation -1 skip the coordinator's
        # fencing check (kept for pre-KIP-447 producers), so its late transaction committed
        # what the partitions' new owner had already re-read (tests/faults/
        # test_exactly_once_zombie.py: 470-1,196 events scored twice under read_committed).
        self._began_as = self.metadata()

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None = None,
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> None:
        """Queue one record in the open transaction (opening one if needed)."""
        if not self._open:
            self.begin()
        super().send(topic, key, value, headers, partition, timestamp)

    def send_many(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None:
        """Queue ``(key, value)`` records in the open transaction."""
        if not self._open:
            self.begin()
        super().send_many(topic, records)

    def send_timed(self, topic: str, records: Sequence[tuple[bytes, bytes, int | None]]) -> None:
        """Queue ``(key, value, timestamp)`` records in the open transaction."""
        if not self._open:
            self.begin()
        super().send_timed(topic, records)

    async def commit(self, offsets: Sequence[TopicPartition]) -> None:
        """Commit the open transaction with ``offsets`` (the input positions it covers).

        Any failure aborts the transaction and raises :class:`OutputError`: the worker stops
        without committing, and the restart re-reads.
        """
        if not offsets and not self._open:
            return
        self.begin()
        began_as = self._began_as
        if offsets and began_as is not None and self.metadata() != began_as:
            await self._abort_moved()  # raises
        try:
            if offsets:
                await self._call(
                    self._producer.send_offsets_to_transaction,
                    list(offsets),
                    began_as if began_as is not None else self.metadata(),
                    self.timeout_s,
                )
            await self._call(self._producer.commit_transaction, self.timeout_s)
        except KafkaException as exc:
            await self._abort(exc)  # raises
        # Committed: every record of the transaction was delivered (else the commit fails).
        self._open = False
        self.committed += 1
        self.rotate()
        self._epochs.clear()

    async def _abort_moved(self) -> NoReturn:
        """Abort the open transaction: the group moved on while it was open (this member was
        dropped, or a rebalance passed), so its records may be another member's now."""
        self.aborted += 1
        try:
            await self._call(self._producer.abort_transaction, self.timeout_s)
        except KafkaException as abort_exc:
            log.error("abort failed too: %s", abort_exc.args[0])
        self._open = False
        raise OutputError(
            "transaction aborted: the consumer group moved on while it was open (this worker "
            "was dropped from the group, e.g. frozen past its session timeout, and its "
            "partitions went to another member), so none of its outputs or offsets are "
            "visible. The worker stops; on restart it rejoins and reads from the committed "
            "offsets."
        )

    async def _abort(self, exc: KafkaException) -> NoReturn:
        error: KafkaError = exc.args[0]
        self.aborted += 1
        if not error.fatal():
            try:
                await self._call(self._producer.abort_transaction, self.timeout_s)
            except KafkaException as abort_exc:
                log.error("abort failed too: %s", abort_exc.args[0])
        self._open = False
        raise OutputError(
            f"transaction not committed ({error.name()}: {error.str()}); "
            + (
                "another producer with this transactional id took over (a second worker with "
                "the same STREAM_APP_TRANSACTIONAL_ID?)"
                if error.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED)
                else "aborted, so none of its outputs or offsets are visible"
            )
            + ". The worker stops; on restart the input is read again."
        ) from exc

    def close(self, timeout: float = 10.0) -> int:
        """Abort an open transaction (its offsets were not committed) and close."""
        if self._open:
            try:
                self._producer.abort_transaction(timeout)
            except KafkaException as exc:
                log.warning("abort at shutdown: %s", exc.args[0])
            self._open = False
        return int(self._producer.flush(timeout))
