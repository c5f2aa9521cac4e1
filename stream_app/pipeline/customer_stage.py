"""Stage 1, on ``transactions`` (partitioned by customer): validate, update customer windows.

For each input record, in the order the worker's batch engine merged them (event time across
partitions, stream order within one): the decoded transaction or its rejection (bad ones become
dead letters); the key must be the customer id (the table is co-partitioned with the topic, so a
mis-keyed record would read the wrong state); an event the customer's window already holds (its
``event_id`` at its event time, sent again) and an event later than the allowed lateness are
dead-lettered, and so is an event whose ``event_id`` the window holds at another time
(``event_id_reused``: the first one read wins); otherwise the customer's window takes it
(idempotent by source offset) and the event goes on, with its customer features, to the
terminal-keyed repartition topic.

A record applied already (read again after a crash or a rebalance, before its offset was
committed) is forwarded again with the features it had the first time, computed from the samples
applied before it (``CustomerState.replayed_values``); one dead-lettered as a duplicate or as too
late is dead-lettered again with the same reason and message, never forwarded (the state
remembers those records, ``CustomerState.dead_lettered``).

A customer's state evicts samples relative to the partition's replay floor, not its newest
sample (:mod:`stream_app.pipeline.floors`): whatever is read again after a crash still finds the
samples its window needs. Each forward carries that floor, for the terminal stage's eviction.

A record on another partition than its key's (a producer with another partitioner) never meets
the state of that partition: it is rerouted to its key's partition of ``transactions.rerouted``,
which this stage also reads, or dead-lettered as ``misrouted_key``
(:mod:`stream_app.pipeline.routing`). A rerouted copy is known by the position it was first read
at, so a crash between rerouting and committing cannot count it twice.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from stream_app.features.customer_state import CustomerState
from stream_app.features.definitions import event_feature_values
from stream_app.features.retention import Retention
from stream_app.features.state_layout import source_id
from stream_app.io.codecs import Transaction, decode_transaction
from stream_app.io.deadletter import Reason, Rejection
from stream_app.io.records import InputRecord, RecordLike
from stream_app.pipeline.floors import CommitFloors
from stream_app.pipeline.forward import encode_forward
from stream_app.pipeline.routing import Misrouted, Reroute, Routing
from stream_app.pipeline.state_store import StateStore

_INF = float("inf")

__all__ = ["CustomerStage", "DeadLetter", "Forward", "InputRecord", "StageOutput"]


@dataclass(slots=True)
class Forward:
    """A validated transaction with its stage-1 features, bound for the terminal stage."""

    key: bytes
    value: bytes
    timestamp: int | None = None  # the source record's Kafka timestamp (ms)


@dataclass(slots=True)
class DeadLetter:
    """A rejected record and why."""

    record: RecordLike
    rejection: Rejection


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


def reused_rejection(tx: Transaction) -> Rejection:
    """Why ``tx`` is dead-lettered when its customer's window holds its id at another time."""
    return Rejection(
        Reason.EVENT_ID_REUSED,
        f"event_id {tx.event_id!r} is already held for customer {tx.customer_id!r} at another "
        f"event time than {tx.event_time}: an id names one payment; the first one read (in "
        "event-time order) is kept and scored, this one is not.",
    )


def too_late_rejection(tx: Transaction, newest: float, allowed_lateness_s: float) -> Rejection:
    """Why ``tx`` is dead-lettered when its customer's latest event was at ``newest``."""
    return Rejection(
        Reason.TOO_LATE,
        f"event_time {tx.event_time} is {newest - tx.ts:.0f} s behind the customer's latest "
        f"event; the allowed lateness is {allowed_lateness_s:.0f} s.",
    )


def processing_error(exc: Exception) -> Rejection:
    """The rejection of a record whose processing raised (a bug met on this input)."""
    return Rejection(Reason.PROCESSING_ERROR, f"{type(exc).__name__}: {exc}")


@dataclass(slots=True)
class StageOutput:
    """What one batch produced."""

    forwards: list[Forward] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    replayed: int = 0
    reroutes: list[Reroute] = field(default_factory=list)
    misrouted: list[Misrouted] = field(default_factory=list)


def routed_away(
    routing: Routing | None, record: RecordLike, key: bytes, out: StageOutput | Any
) -> bool:
    """Whether ``record`` is on the wrong partition for ``key``: then it is rerouted (or
    dead-lettered) in ``out`` (a stage output with ``misrouted``, ``reroutes`` and
    ``dead_letters``) and the caller goes no further with it."""
    if routing is None:
        return False
    expected = routing.misrouted(record, key)
    if expected is None:
        return False
    out.misrouted.append(Misrouted(record, expected))
    action = routing.reroute(record, key, expected)
    if type(action) is Reroute:
        out.reroutes.append(action)
    else:
        out.dead_letters.append(DeadLetter(record, action))  # type: ignore[arg-type]
    return True


def now_s() -> float:
    """The wall clock (epoch seconds), read once per batch for the decoders."""
    return datetime.now(UTC).timestamp()


class CustomerStage:
    """Stage-1 logic over the customer states (a :class:`StateStore`, or a plain mapping)."""

    def __init__(
        self,
        states: StateStore[CustomerState] | MutableMapping[str, Any],
        retention: Retention,
        allowed_lateness_s: float,
        max_message_bytes: int,
        topic_index: Mapping[str, int] | None = None,
        routing: Routing | None = None,
        floors: CommitFloors | None = None,
    ) -> None:
        """``topic_index``: the index of each input topic in the states' source ids (default:
        every topic is the first). ``routing``: how records on the wrong partition for their
        key are handled (None: not checked, every record is taken as partitioned right).
        ``floors``: the replay floors the worker's commits update (None: no commits, as offline
        and in tools: states evict from their newest sample and forwards carry no floor)."""
        self.states: StateStore[CustomerState] = (
            states if isinstance(states, StateStore) else StateStore(CustomerState, states)
        )
        self.retention = retention
        self.allowed_lateness_s = allowed_lateness_s
        self.max_message_bytes = max_message_bytes
        self.topic_index = dict(topic_index or {})
        self.routing = routing
        self.floors = floors
        self._floor: dict[int, float | None] = {}  # partition -> floor, for the current batch

    def decode(
        self, records: Sequence[RecordLike], now: float | None = None
    ) -> list[Transaction | Rejection]:
        """The decoded transaction (or its rejection) of each record."""
        clock = now_s() if now is None else now
        limit = self.max_message_bytes
        return [decode_transaction(r.value, limit, clock) for r in records]

    def process(
        self,
        records: Sequence[RecordLike],
        items: Sequence[Transaction | Rejection] | None = None,
    ) -> StageOutput:
        """Process one micro-batch in order (``items``: :meth:`decode` of ``records``, when the
        engine decoded them already). Changed states are marked for the next flush."""
        if items is None:
            items = self.decode(records)
        out = StageOutput()
        floors = self.floors
        self._floor.clear()  # floors change only at commits, between batches
        ends: dict[tuple[str, int], int] = {}  # (topic, partition) -> offset after the last
        newest: dict[tuple[str, int], float] = {}  # ... and its newest transaction
        for record, item in zip(records, items, strict=True):
            try:
                if type(item) is Rejection:
                    out.dead_letters.append(DeadLetter(record, item))
                    continue
                tx: Transaction = item  # type: ignore[assignment]
                if floors is not None:
                    tp = (record.topic, record.partition)
                    ends[tp] = record.offset + 1
                    if tx.ts > newest.get(tp, -_INF):
                        newest[tp] = tx.ts
                self._one(record, tx, out)
            except Exception as exc:  # the worker never crashes on input
                out.dead_letters.append(DeadLetter(record, processing_error(exc)))
        if floors is not None:
            for (topic, partition), end in ends.items():
                floors.advance(topic, partition, end, newest[topic, partition])
        return out

    def eviction_horizon(self, partition: int) -> float | None:
        """What a customer state on input ``partition`` evicts relative to: its replay floor
        (-inf before the partition's first commit: nothing), or None (its newest sample) when
        the stage keeps no floors."""
        if self.floors is None:
            return None
        floor = self.replay_floor(partition)
        return -_INF if floor is None else floor

    def replay_floor(self, partition: int) -> float | None:
        """The replay floor of input ``partition`` (None: no floors kept, or none yet)."""
        if partition in self._floor:
            return self._floor[partition]
        floors = self.floors
        if floors is None:
            value = None
        else:
            low = floors.partition_floor(partition)
            value = None if low == float("-inf") else low
        self._floor[partition] = value
        return value

    def flush(self) -> int:
        """Write the changed states back (tests, tools: the worker flushes at checkpoints)."""
        return self.states.flush()

    def _one(self, record: RecordLike, tx: Transaction, out: StageOutput) -> None:
        customer_id = tx.customer_id
        key = record.key
        if key != customer_id.encode():
            out.dead_letters.append(
                DeadLetter(record, key_rejection(key, "customer_id", customer_id, "transactions"))
            )
            return
        partition, offset = record.partition, record.offset
        routing = self.routing
        if routed_away(routing, record, key, out):
            return
        origin = routing.origin(record) if routing is not None else None
        if origin is None:
            source = source_id(partition, self.topic_index.get(record.topic, 0))
        else:  # a rerouted copy is known by where it was first read
            source = source_id(origin[1], self.topic_index.get(origin[0], 0))
            offset = origin[2]
        states = self.states
        state = states.get(customer_id, partition)
        if state.seen(offset, source):
            dead = state.dead_lettered(offset, source)
            if dead is not None:  # dead-lettered the first time: again, for the same reason
                reason, newest = dead
                if reason == Reason.DUPLICATE_EVENT:
                    rejection = duplicate_rejection(tx)
                elif reason == Reason.EVENT_ID_REUSED:
                    rejection = reused_rejection(tx)
                else:
                    rejection = too_late_rejection(tx, newest, self.allowed_lateness_s)
                out.dead_letters.append(DeadLetter(record, rejection))
                return
            # Applied before a restart or a rebalance: count once, forward again with the
            # features it had, from the samples applied before it (the state holds later ones).
            out.replayed += 1
            replayed = state.replayed_values(tx.ts, tx.event_id)
            values = state.feature_values(tx.ts) if replayed is None else replayed
        else:
            # Decisions on the state: remembered (the state is written back) for a re-read.
            latest = state.newest
            if latest is not None and tx.ts <= latest and state.holds(tx.ts, tx.event_id):
                out.dead_letters.append(DeadLetter(record, duplicate_rejection(tx)))
                state.record_dead_letter(offset, Reason.DUPLICATE_EVENT.value, source)
                states.changed(customer_id, partition)
                return
            if latest is not None and state.holds_id(tx.event_id):
                out.dead_letters.append(DeadLetter(record, reused_rejection(tx)))
                state.record_dead_letter(offset, Reason.EVENT_ID_REUSED.value, source)
                states.changed(customer_id, partition)
                return
            if latest is not None and tx.ts < latest - self.allowed_lateness_s:
                out.dead_letters.append(
                    DeadLetter(record, too_late_rejection(tx, latest, self.allowed_lateness_s))
                )
                state.record_dead_letter(offset, Reason.TOO_LATE.value, source)
                states.changed(customer_id, partition)
                return
            state.apply(
                tx.ts,
                tx.amount,
                offset,
                self.retention.customer_s,
                tx.event_id,
                source,
                horizon_end=self.eviction_horizon(partition),
            )
            states.changed(customer_id, partition)
            values = state.feature_values(tx.ts)
        features = event_feature_values(tx.amount, tx.ts)
        features += values
        timestamp = record.timestamp
        out.forwards.append(
            Forward(
                tx.terminal_id.encode(),
                encode_forward(
                    tx.event_id,
                    tx.event_time,
                    tx.ts,
                    customer_id,
                    tx.terminal_id,
                    float(timestamp or 0),
                    partition,
                    record.offset,
                    features,
                    self.replay_floor(partition),
                ),
                timestamp,
            )
        )
