"""Stage 1, on ``transactions`` (partitioned by customer): validate, update customer windows.

For each input record: decode and validate (bad ones become dead letters), check the key is the
customer id (the tables are co-partitioned with the topic, so a mis-keyed record would read the
wrong state), reject an event the customer's window already holds (its ``event_id`` at its event
time, sent again: counting it twice would change the features) and events later than the allowed
lateness, update the customer's window state (idempotent by source offset) and forward the event
with its customer features to the terminal-keyed repartition topic. A record applied already (read
again after a crash or a rebalance, before its offset was committed) is forwarded again with the
features it had the first time, computed from the samples that preceded it in the stream
(``CustomerState.replayed_features``); one dead-lettered as a duplicate or as too late (decisions
on the customer's state, which the re-read finds changed by the records after it) is dead-lettered
again with the same reason and message, never forwarded: the state remembers those records by
offset (``CustomerState.dead_lettered``). The state of each customer touched in a batch is written
back once per batch.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from stream_app.features.definitions import event_features
from stream_app.features.state import CustomerState, Retention
from stream_app.io.codecs import Transaction, decode_transaction
from stream_app.io.deadletter import Reason, Rejection, SourcePosition


@dataclass(frozen=True, slots=True)
class InputRecord:
    """One consumed Kafka record, as the stages see it."""

    key: bytes | None
    value: bytes | None
    position: SourcePosition
    headers: Sequence[tuple[str, bytes | None]] = ()
    handle: Any = None  # the transport's own event (Faust: needed to route table writes)

    @property
    def arrived_ms(self) -> float:
        """Kafka record timestamp (ms), the start of the latency clock."""
        return float(self.position.timestamp_ms or 0)


@dataclass(slots=True)
class Forward:
    """A validated transaction with its stage-1 features, bound for the terminal stage."""

    key: bytes
    value: bytes


@dataclass(slots=True)
class DeadLetter:
    """A rejected record and why."""

    record: InputRecord
    rejection: Rejection


StateWriter = Callable[[MutableMapping[str, Any], str, Any, InputRecord], None]


def key_rejection(key: bytes | None, field: str, expected: str, topic: str) -> Rejection:
    """Why a record keyed ``key`` is not keyed by its ``field`` (call only when it is not)."""
    if not key:
        return Rejection(
            Reason.NULL_KEY,
            f"The record has no key; {topic} must be keyed by {field} ({expected!r}).",
        )
    shown = repr(key[:64]) + ("…" if len(key) > 64 else "")
    return Rejection(
        Reason.KEY_MISMATCH,
        f"The record key {shown} is not the {field} {expected!r}; {topic} must be keyed by "
        f"{field}.",
    )


def duplicate_rejection(tx: Transaction) -> Rejection:
    """Why ``tx`` is dead-lettered when its customer's window holds its event already."""
    return Rejection(
        Reason.DUPLICATE_EVENT,
        f"event_id {tx.event_id!r} at {tx.event_time} was already applied for customer "
        f"{tx.customer_id!r} (sent again at a new offset); it is scored once.",
    )


def too_late_rejection(tx: Transaction, newest: float, allowed_lateness_s: float) -> Rejection:
    """Why ``tx`` is dead-lettered when its customer's latest event was at ``newest``."""
    return Rejection(
        Reason.TOO_LATE,
        f"event_time {tx.event_time} is {newest - tx.ts:.0f} s behind the customer's latest "
        f"event; the allowed lateness is {allowed_lateness_s:.0f} s.",
    )


def write_state(table: MutableMapping[str, Any], key: str, value: Any, record: InputRecord) -> None:
    """Plain mapping write (tests, offline); the worker passes a Faust-aware writer."""
    table[key] = value


@dataclass(slots=True)
class StageOutput:
    """What one batch produced."""

    forwards: list[Forward] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    replayed: int = 0


def encode_forward(
    tx: Transaction, features: dict[str, float], arrived_ms: float, source: SourcePosition
) -> bytes:
    """The repartition record: the transaction, its stage-1 features, its origin."""
    return orjson.dumps(
        {
            "event_id": tx.event_id,
            "event_time": tx.event_time,
            "ts": tx.ts,
            "customer_id": tx.customer_id,
            "terminal_id": tx.terminal_id,
            "amount": tx.amount,
            "features": features,
            "arrived_ms": arrived_ms,
            "source": [source.topic, source.partition, source.offset],
        }
    )


class CustomerStage:
    """Stage-1 logic over a table (any mutable mapping customer id → state dict)."""

    def __init__(
        self,
        table: MutableMapping[str, Any],
        retention: Retention,
        allowed_lateness_s: float,
        max_message_bytes: int,
        writer: StateWriter = write_state,
    ) -> None:
        self.table = table
        self.writer = writer
        self.retention = retention
        self.allowed_lateness_s = allowed_lateness_s
        self.max_message_bytes = max_message_bytes

    def process(self, records: Sequence[InputRecord]) -> StageOutput:
        """Process one micro-batch in order."""
        out = StageOutput()
        touched: dict[str, CustomerState] = {}
        last: dict[str, InputRecord] = {}
        for record in records:
            try:
                customer_id = self._one(record, touched, out)
                if customer_id is not None:
                    last[customer_id] = record
            except Exception as exc:  # the worker never crashes on input
                out.dead_letters.append(
                    DeadLetter(
                        record, Rejection(Reason.PROCESSING_ERROR, f"{type(exc).__name__}: {exc}")
                    )
                )
        for customer_id, record in last.items():
            self.writer(self.table, customer_id, touched[customer_id].value, record)
        return out

    def _one(
        self, record: InputRecord, touched: dict[str, CustomerState], out: StageOutput
    ) -> str | None:
        """Process one record; returns the customer whose state it changed, if any."""
        tx = decode_transaction(record.value, self.max_message_bytes)
        if isinstance(tx, Rejection):
            out.dead_letters.append(DeadLetter(record, tx))
            return None
        if record.key != tx.customer_id.encode():
            out.dead_letters.append(
                DeadLetter(
                    record, key_rejection(record.key, "customer_id", tx.customer_id, "transactions")
                )
            )
            return None
        state = touched.get(tx.customer_id)
        if state is None:
            state = CustomerState(self.table.get(tx.customer_id))
            touched[tx.customer_id] = state
        offset = record.position.offset
        if state.seen(offset):
            dead = state.dead_lettered(offset)
            if dead is not None:  # dead-lettered the first time: again, for the same reason
                reason, newest = dead
                rejection = (
                    duplicate_rejection(tx)
                    if reason == Reason.DUPLICATE_EVENT
                    else too_late_rejection(tx, newest, self.allowed_lateness_s)
                )
                out.dead_letters.append(DeadLetter(record, rejection))
                return None
            # Applied before a restart or a rebalance: count once, forward again with the
            # features it had, from the samples that preceded it (the state holds later ones).
            out.replayed += 1
            replayed = state.replayed_features(tx.ts, tx.event_id, offset)
            customer = state.features(tx.ts) if replayed is None else replayed
        else:
            # Decisions on the state: remembered (the state is written back) for a re-read.
            if state.holds(tx.ts, tx.event_id):
                out.dead_letters.append(DeadLetter(record, duplicate_rejection(tx)))
                state.record_dead_letter(offset, Reason.DUPLICATE_EVENT.value)
                return tx.customer_id
            times = state.window.times
            if times and tx.ts < times[-1] - self.allowed_lateness_s:
                out.dead_letters.append(
                    DeadLetter(record, too_late_rejection(tx, times[-1], self.allowed_lateness_s))
                )
                state.record_dead_letter(offset, Reason.TOO_LATE.value)
                return tx.customer_id
            state.apply(tx.ts, tx.amount, offset, self.retention.customer_s, tx.event_id)
            customer = state.features(tx.ts)
        features = event_features(tx.amount, tx.ts)
        features.update(customer)
        out.forwards.append(
            Forward(
                tx.terminal_id.encode(),
                encode_forward(tx, features, record.arrived_ms, record.position),
            )
        )
        return tx.customer_id
