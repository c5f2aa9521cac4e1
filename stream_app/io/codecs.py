"""Bytes → typed events at the boundary, and events → bytes on the way out.

Decoding is orjson on the raw bytes, then one compiled-schema validation, then a timestamp
parse. Anything that fails becomes a ``Rejection`` with a reason code; nothing raises. Past this
module the rest of the pipeline trusts the event (no second validation).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from stream_app.io.deadletter import Reason, Rejection
from stream_app.io.schemas import ValidationError, validator

SUPPORTED_SCHEMA_VERSIONS = frozenset({1})
# Event times before this are rejected as bad timestamps (epoch zeros, swapped fields).
MIN_EVENT_TIME = datetime(2000, 1, 1, tzinfo=UTC).timestamp()
# Event times further than this ahead of the wall clock are rejected (clock skew allowance).
MAX_FUTURE_SKEW_S = 86_400.0


@dataclass(slots=True)
class Transaction:
    """A validated transaction. ``ts`` is the event time in epoch seconds."""

    event_id: str
    event_time: str
    ts: float
    customer_id: str
    terminal_id: str
    amount: float
    extra: dict[str, float] | None = None


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


def _parse_time(text: str) -> float | None:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return moment.timestamp()


def _load_object(raw: bytes | None, max_bytes: int) -> dict[str, Any] | Rejection:
    if not raw:
        return Rejection(Reason.EMPTY_VALUE, "The message has no value (null or empty bytes).")
    if len(raw) > max_bytes:
        return Rejection(
            Reason.TOO_LARGE, f"The value is {len(raw)} bytes; the limit is {max_bytes}."
        )
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as uexc:
            return Rejection(Reason.NOT_UTF8, f"The value is not UTF-8 text: {uexc}.")
        return Rejection(Reason.INVALID_JSON, f"The value is not JSON: {exc}.")
    if not isinstance(obj, dict):
        return Rejection(
            Reason.NOT_AN_OBJECT, f"The value is JSON {type(obj).__name__}, not an object."
        )
    return obj


def _check(schema: str, obj: dict[str, Any]) -> Rejection | None:
    version = obj.get("schema_version", 1)
    if version not in SUPPORTED_SCHEMA_VERSIONS or isinstance(version, bool):
        return Rejection(
            Reason.UNSUPPORTED_SCHEMA_VERSION,
            f"schema_version {version!r} is not supported (supported: "
            f"{sorted(SUPPORTED_SCHEMA_VERSIONS)}).",
        )
    try:
        validator(schema)(obj)
    except ValidationError as exc:
        if exc.rule == "format" and str(exc.name).endswith("_time"):
            return Rejection(Reason.BAD_TIMESTAMP, f"{exc.message} (RFC 3339 with an offset).")
        return Rejection(Reason.SCHEMA_VIOLATION, f"{schema} schema: {exc.message}.")
    return None


def _check_time(field: str, text: str, now: float) -> float | Rejection:
    ts = _parse_time(text)
    if ts is None:
        return Rejection(Reason.BAD_TIMESTAMP, f"{field} {text!r} is not an RFC 3339 time.")
    if ts < MIN_EVENT_TIME:
        return Rejection(Reason.BAD_TIMESTAMP, f"{field} {text} is before 2000-01-01.")
    if ts > now + MAX_FUTURE_SKEW_S:
        return Rejection(
            Reason.BAD_TIMESTAMP, f"{field} {text} is more than a day ahead of the clock."
        )
    return ts


def decode_transaction(
    raw: bytes | None, max_bytes: int = 65_536, now: float | None = None
) -> Transaction | Rejection:
    """Decode and validate one transaction message value."""
    obj = _load_object(raw, max_bytes)
    if isinstance(obj, Rejection):
        return obj
    problem = _check("transaction", obj)
    if problem is not None:
        return problem
    ts = _check_time("event_time", obj["event_time"], now or datetime.now(UTC).timestamp())
    if isinstance(ts, Rejection):
        return ts
    return Transaction(
        event_id=obj["event_id"],
        event_time=obj["event_time"],
        ts=ts,
        customer_id=obj["customer_id"],
        terminal_id=obj["terminal_id"],
        amount=float(obj["amount"]),
        extra=obj.get("features"),
    )


def decode_label(
    raw: bytes | None, max_bytes: int = 65_536, now: float | None = None
) -> Label | Rejection:
    """Decode and validate one label message value."""
    obj = _load_object(raw, max_bytes)
    if isinstance(obj, Rejection):
        return obj
    problem = _check("label", obj)
    if problem is not None:
        return problem
    clock = now or datetime.now(UTC).timestamp()
    ts = _check_time("event_time", obj["event_time"], clock)
    if isinstance(ts, Rejection):
        return ts
    label_ts = _check_time("label_time", obj["label_time"], clock)
    if isinstance(label_ts, Rejection):
        return label_ts
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
