"""The live state of one customer or terminal, read without changing it, and what it answers.

The stages keep each entity's decoded state in a :class:`~stream_app.pipeline.state_store.
StateStore` cache in front of its Faust table (written back at each checkpoint). A query reads
the cached state when there is one (it holds every event the stage has taken, up to the last
micro-batch) and otherwise decodes the table's value, **without** putting it in the cache: a
query never creates, caches or marks a state. The stage loops run in the same event loop as the
web server, between micro-batches, so a query sees a state as one whole batch left it.

:func:`customer_what_if` and :func:`terminal_what_if` compute the window features a transaction
would get (the customer's on a copy of its state with the transaction added, as stage 1 would
apply it; the terminal's from its state, whose 7-day-delayed windows never hold the transaction
itself) and reject it with the reason stage 1 or 2 would dead-letter it for.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from stream_app.features.definitions import Entity
from stream_app.features.state import (
    CUSTOMER_FEATURES,
    SOURCE_PARTITIONS,
    TERMINAL_FEATURES,
    CustomerState,
    TerminalState,
    decode_state,
)
from stream_app.io.codecs import Transaction
from stream_app.io.deadletter import Reason, Rejection
from stream_app.pipeline.customer_stage import (
    duplicate_rejection,
    reused_rejection,
    too_late_rejection,
)
from stream_app.pipeline.state_store import StateStore


@dataclass(frozen=True)
class EntityTable:
    """One entity's table as the worker holds it: the Faust table (its name routes requests),
    the stage's decoded states, and the stage's input topics in source-id order (a state's
    offsets are kept per ``topic_index * SOURCE_PARTITIONS + partition``)."""

    entity: Entity
    table: Any
    states: StateStore[Any]
    sources: tuple[str, ...]

    @property
    def name(self) -> str:
        """The table's name (``customer-state``, ``terminal-state``)."""
        return str(self.table.name)

    @property
    def changelog(self) -> str:
        """The table's changelog topic: its partitions are what Faust assigns and routes."""
        return str(self.table.changelog_topic.get_topic_name())

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The window features over this entity."""
        return CUSTOMER_FEATURES if self.entity is Entity.CUSTOMER else TERMINAL_FEATURES


def peek(states: StateStore[Any], key: str, partition: int) -> CustomerState | TerminalState | None:
    """``key``'s live state (the stage's cached one, else the table's), None when it has none.
    Never caches or marks anything."""
    state = states.cache.get(key)
    if state is not None:
        return state  # type: ignore[no-any-return]
    raw = states.writer.read(key, partition)
    return None if raw is None else decode_state(raw, states.kind)


def iso(ts: float | None) -> str | None:
    """Epoch seconds as RFC 3339 UTC (``Z``), None for None."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def offsets(state: CustomerState | TerminalState, sources: tuple[str, ...]) -> list[dict[str, Any]]:
    """The last input offset applied to ``state`` per source topic partition."""
    out: list[dict[str, Any]] = []
    for source, offset in sorted(state.o.items()):
        if source < 0:  # written by code that did not keep sources
            out.append({"topic": None, "partition": None, "offset": offset})
            continue
        index, partition = divmod(source, SOURCE_PARTITIONS)
        topic = sources[index] if index < len(sources) else None
        out.append({"topic": topic, "partition": partition, "offset": offset})
    return out


def window_summary(state: CustomerState | TerminalState) -> dict[str, Any]:
    """How much history the state holds."""
    times = state.t
    summary: dict[str, Any] = {
        "samples": len(times),
        "oldest": iso(times[0]) if times else None,
        "newest": iso(times[-1]) if times else None,
    }
    if isinstance(state, TerminalState):
        summary["frauds_known"] = int(sum(state.f))
        summary["pending_fraud_labels"] = len(state.p)
    return summary


def samples(state: CustomerState | TerminalState) -> list[dict[str, Any]]:
    """Every retained sample: id, event time, and the amount (customer) or fraud flag
    (terminal)."""
    if isinstance(state, CustomerState):
        return [
            {"event_id": i, "event_time": iso(t), "amount": a}
            for t, a, i in zip(state.t, state.a, state.i, strict=True)
        ]
    return [
        {"event_id": i, "event_time": iso(t), "fraud": int(f), "customer_id": c}
        for t, f, i, c in zip(state.t, state.f, state.i, state.c, strict=True)
    ]


def entity_view(
    entity: EntityTable,
    key: str,
    partition: int,
    state: CustomerState | TerminalState,
    at: float | None = None,
    with_samples: bool = False,
) -> dict[str, Any]:
    """The answer of ``GET /v1/{customers|terminals}/{id}/features`` for a held state: the
    window features at ``at`` (default: the entity's newest event time, i.e. the features its
    latest transaction was scored with), the offsets and event time they reflect, the window."""
    newest = state.t[-1] if state.t else None
    when = at if at is not None else newest
    values = state.feature_values(when) if when is not None else [0.0] * len(entity.feature_names)
    view: dict[str, Any] = {
        "entity": entity.entity.value,
        "id": key,
        "partition": partition,
        "event_time": iso(newest),
        "offsets": offsets(state, entity.sources),
        "features_at": iso(when),
        "features": dict(zip(entity.feature_names, values, strict=True)),
        "window": window_summary(state),
    }
    if with_samples:
        view["samples"] = samples(state)
    return view


def customer_what_if(
    state: CustomerState | None, tx: Transaction, retention_s: float, allowed_lateness_s: float
) -> list[float] | Rejection:
    """The customer window features ``tx`` would be scored with (the customer's state as it
    stands plus ``tx``, applied to a copy), or the rejection stage 1 would dead-letter it with."""
    copy = CustomerState()
    if state is not None and state.t:
        latest = state.t[-1]
        if tx.ts <= latest and state.holds(tx.ts, tx.event_id):
            return duplicate_rejection(tx)
        if state.holds_id(tx.event_id):
            return reused_rejection(tx)
        if tx.ts < latest - allowed_lateness_s:
            return too_late_rejection(tx, latest, allowed_lateness_s)
        copy.t = array("d", state.t)
        copy.a = array("d", state.a)
        copy.q = array("I", state.q)
        copy.i = list(state.i)
        copy.n = state.n
    copy.apply(tx.ts, tx.amount, -1, retention_s, tx.event_id)
    return copy.feature_values(tx.ts)


def terminal_what_if(state: TerminalState | None, tx: Transaction) -> list[float] | Rejection:
    """The terminal window features ``tx`` would be scored with, or the rejection stage 2 would
    dead-letter it with (its id held by the terminal for another payment)."""
    if state is None:
        return TerminalState().feature_values(tx.ts)
    held = state.reused(tx.ts, tx.event_id, tx.customer_id)
    if held is not None:
        held_ts, held_customer = held
        return Rejection(
            Reason.EVENT_ID_REUSED,
            f"event_id {tx.event_id!r} (customer {tx.customer_id!r}, {tx.event_time}) is "
            f"already held by terminal {tx.terminal_id!r} for customer {held_customer!r} at "
            f"{iso(held_ts)}: an id names one payment; the stream would not score this one.",
        )
    return state.feature_values(tx.ts)


WhatIf = Callable[[Any, Transaction], list[float] | Rejection]


def what_if_for(
    entity: Entity, retention: Mapping[Entity, float], allowed_lateness_s: float
) -> WhatIf:
    """The what-if function of ``entity``: ``(state or None, transaction) -> values``."""
    if entity is Entity.CUSTOMER:
        customer_s = retention[Entity.CUSTOMER]
        return lambda state, tx: customer_what_if(state, tx, customer_s, allowed_lateness_s)
    return terminal_what_if


def entity_key(entity: Entity, tx: Transaction) -> str:
    """The id of ``entity`` in ``tx``."""
    return tx.customer_id if entity is Entity.CUSTOMER else tx.terminal_id
