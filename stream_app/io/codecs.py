"""Bytes → typed events at the boundary, and events → bytes on the way out.

Decoding is orjson on the raw bytes, then one compiled-schema validation, then a timestamp
parse. Anything that fails becomes a ``Rejection`` with a reason code; nothing raises. Past this
module the rest of the pipeline trusts the event (no second validation).

Good input pays for none of the reason codes: a failure is classified after it happened (the
parser's error position and message, the schema rule that failed), never by checks up front.

Well-formed input takes a fast path first (:func:`_fast_transaction`, :func:`_fast_label`): a
handful of type, length and character checks written out for exactly the common shape of the
message, each one a subset of what the compiled schema accepts. Anything the fast path does not
accept outright (an optional field, an unusual but valid timestamp, any fault) goes through the
full path above, which decides and explains; so the result for every input is the full path's,
only reached sooner. ``tests/unit/test_codecs.py`` checks the two agree.

The checks both kinds of message share (JSON object, duplicate names, schema rule → reason, times,
the fast path's id and time) are :mod:`stream_app.io.input_checks`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from stream_app.io.deadletter import Reason, Rejection
from stream_app.io.input_checks import (
    check_schema,
    check_time,
    fast_id,
    fast_time,
    load_object,
)


@dataclass(slots=True)
class Transaction:
    """A validated transaction. ``ts`` is the event time in epoch seconds."""

    event_id: str
    event_time: str
    ts: float
    customer_id: str
    terminal_id: str
    amount: float


@dataclass(slots=True)
class Label:
    """A validated label for transaction ``event_id``; ``ts`` is the transaction's event time."""

    event_id: str
    customer_id: str
    terminal_id: str
    event_time: str
    ts: float
    label: int
    label_ts: float


_TRANSACTION_KEYS = frozenset(
    ("event_id", "event_time", "customer_id", "terminal_id", "amount", "schema_version")
)
_LABEL_KEYS = frozenset(
    ("event_id", "customer_id", "terminal_id", "event_time", "label", "label_time")
)
_LABEL_KEYS_VERSIONED = _LABEL_KEYS | {"schema_version"}


def _fast_transaction(obj: Any, now: float) -> Transaction | None:
    """The transaction in ``obj`` when it has exactly the schema's required fields, each plainly
    valid; None otherwise (not a verdict: the full path decides)."""
    if type(obj) is not dict or obj.keys() != _TRANSACTION_KEYS:
        return None
    event_id, customer_id, terminal_id = obj["event_id"], obj["customer_id"], obj["terminal_id"]
    amount, version = obj["amount"], obj["schema_version"]
    if not (
        fast_id(event_id, 128)
        and fast_id(customer_id, 64)
        and fast_id(terminal_id, 64)
        and (type(amount) is float or type(amount) is int)
        and 0 <= amount <= 1_000_000
        and type(version) is int
        and version == 1
    ):
        return None
    event_time = obj["event_time"]
    ts = fast_time(event_time, now)
    if ts is None:
        return None
    return Transaction(event_id, event_time, ts, customer_id, terminal_id, float(amount))


def _fast_label(obj: Any, now: float) -> Label | None:
    """:func:`_fast_transaction` for a label."""
    if type(obj) is not dict:
        return None
    keys = obj.keys()
    if keys == _LABEL_KEYS_VERSIONED:
        version = obj["schema_version"]
        if type(version) is not int or version != 1:
            return None
    elif keys != _LABEL_KEYS:
        return None
    event_id, customer_id, terminal_id = obj["event_id"], obj["customer_id"], obj["terminal_id"]
    label = obj["label"]
    if not (
        fast_id(event_id, 128)
        and fast_id(customer_id, 64)
        and fast_id(terminal_id, 64)
        and type(label) is int
        and (label == 0 or label == 1)
    ):
        return None
    event_time = obj["event_time"]
    ts = fast_time(event_time, now)
    label_ts = fast_time(obj["label_time"], now)
    if ts is None or label_ts is None or label_ts < ts:
        return None
    return Label(event_id, customer_id, terminal_id, event_time, ts, label, label_ts)


def decode_transaction(
    raw: bytes | None, max_bytes: int = 65_536, now: float | None = None
) -> Transaction | Rejection:
    """Decode and validate one transaction message value. ``now``: the clock (epoch seconds)
    for the "ahead of the clock" check; pass it once per batch on a hot path."""
    clock = now if now is not None else datetime.now(UTC).timestamp()
    # 20 quotes: six names and four string values, none holding a quote. More: a name may be
    # there twice (orjson keeps the last one silently); the full path tells.
    if raw and len(raw) <= max_bytes and raw.count(b'"') == 20:
        try:
            fast = _fast_transaction(orjson.loads(raw), clock)
        except orjson.JSONDecodeError:
            fast = None
        if fast is not None:
            return fast
    return _decode_transaction(raw, max_bytes, clock)


def _decode_transaction(raw: bytes | None, max_bytes: int, now: float) -> Transaction | Rejection:
    """The full path: every check, and the reason of the first that fails."""
    obj = load_object(raw, max_bytes)
    if isinstance(obj, Rejection):
        return obj
    problem = check_schema("transaction", obj)
    if problem is not None:
        return problem
    ts = check_time("event_time", obj["event_time"], now)
    if isinstance(ts, Rejection):
        return ts
    return Transaction(
        event_id=obj["event_id"],
        event_time=obj["event_time"],
        ts=ts,
        customer_id=obj["customer_id"],
        terminal_id=obj["terminal_id"],
        amount=float(obj["amount"]),
    )


def decode_label(
    raw: bytes | None, max_bytes: int = 65_536, now: float | None = None
) -> Label | Rejection:
    """Decode and validate one label message value (``now`` as for
    :func:`decode_transaction`)."""
    clock = now if now is not None else datetime.now(UTC).timestamp()
    if raw and len(raw) <= max_bytes:
        try:
            obj = orjson.loads(raw)
            # Each name's two quotes and five string values': no name twice (as for a
            # transaction).
            fast = _fast_label(obj, clock) if raw.count(b'"') == 2 * len(obj) + 10 else None
        except (orjson.JSONDecodeError, TypeError):
            fast = None
        if fast is not None:
            return fast
    return _decode_label(raw, max_bytes, clock)


def _decode_label(raw: bytes | None, max_bytes: int, clock: float) -> Label | Rejection:
    """The full path for a label."""
    obj = load_object(raw, max_bytes)
    if isinstance(obj, Rejection):
        return obj
    problem = check_schema("label", obj)
    if problem is not None:
        return problem
    ts = check_time("event_time", obj["event_time"], clock)
    if isinstance(ts, Rejection):
        return ts
    label_ts = check_time("label_time", obj["label_time"], clock)
    if isinstance(label_ts, Rejection):
        return label_ts
    if label_ts < ts:
        return Rejection(
            Reason.BAD_TIMESTAMP,
            f"label_time {obj['label_time']} is before the transaction's event_time "
            f"{obj['event_time']}: a label cannot be known before its payment happened.",
        )
    return Label(
        event_id=obj["event_id"],
        customer_id=obj["customer_id"],
        terminal_id=obj["terminal_id"],
        event_time=obj["event_time"],
        ts=ts,
        label=int(obj["label"]),
        label_ts=label_ts,
    )


def encode(obj: dict[str, Any]) -> bytes:
    """JSON bytes for an outgoing record (orjson; numpy scalars allowed)."""
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
