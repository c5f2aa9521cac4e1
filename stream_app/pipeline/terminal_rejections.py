"""Why the scoring stage dead-letters a record: a by-terminal record that is not a forward, an
event id its terminal holds for another event, a label that does not fit the transaction its
terminal holds."""

from __future__ import annotations

import orjson

from stream_app.features.terminal_state import TerminalState
from stream_app.io.codecs import Label
from stream_app.io.deadletter import Reason, Rejection
from stream_app.io.input_checks import not_json
from stream_app.pipeline.forward import Forward


def forward_rejection(raw: bytes | None, exc: Exception) -> Rejection:
    """Why a ``transactions.by-terminal`` record is not a forward (written by something else
    than a worker): the decoding reasons of an input, or ``schema_violation`` for JSON that is
    not a repartition record."""
    if not raw:
        return Rejection(Reason.EMPTY_VALUE, "The repartition record has no value.")
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError as json_exc:
        return not_json(raw, json_exc)
    return Rejection(Reason.SCHEMA_VIOLATION, f"Not a repartition record: {exc}.")


def reused_forward(fwd: Forward, held_ts: float, held_customer: str) -> Rejection:
    """Why ``fwd`` is dead-lettered when its terminal holds its id for another event."""
    return Rejection(
        Reason.EVENT_ID_REUSED,
        f"event_id {fwd.event_id!r} (customer {fwd.customer_id!r}, {fwd.event_time}) is "
        f"already held by terminal {fwd.terminal_id!r} for customer {held_customer!r} at "
        f"{held_ts:.3f} (epoch s): an id names one payment; the first one read is kept and "
        "scored, this one is not (its own customer's window, in stage 1, has counted it). Its "
        f"value was read from transactions at partition {fwd.source_partition}, offset "
        f"{fwd.source_offset}; this dead letter holds its repartition record.",
    )


def label_mismatch(state: TerminalState, label: Label) -> Rejection | None:
    """Why ``label`` does not fit the transaction its terminal holds under its id: another
    customer, or another event time; None when it fits or the id is not held."""
    held = state.customer_of(label.ts, label.event_id)
    if held is not None and held != label.customer_id:
        return Rejection(
            Reason.LABEL_MISMATCH,
            f"The label's customer_id {label.customer_id!r} is not the customer "
            f"{held!r} of transaction {label.event_id!r} at {label.event_time}; not applied.",
        )
    if held is None and not state.holds(label.ts, label.event_id):
        when = state.time_of(label.event_id)
        if when is not None:
            return Rejection(
                Reason.LABEL_MISMATCH,
                f"The label names transaction {label.event_id!r} at {label.event_time}; "
                f"terminal {label.terminal_id!r} holds it at {when:.3f} (epoch s); not applied.",
            )
    return None
