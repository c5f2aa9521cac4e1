"""What every input message of the worker goes through on its way in (transactions and labels
alike, :mod:`stream_app.io.codecs`): a JSON object from the bytes, duplicate field names, the
schema's verdict turned into a reason code, event times in the accepted range, and the fast
path's plain checks of an id and a time.

Nothing here raises for bad input: a fault is a ``Rejection`` with a reason code, classified after
it happened (the parser's error position and message, the schema rule that failed).
"""

from __future__ import annotations

import json
import re
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


def parse_time(text: str) -> float | None:
    try:  # RFC 3339 allows a lower-case "t" and "z" (section 5.6); fromisoformat does not
        moment = datetime.fromisoformat(text.upper())
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return moment.timestamp()


def load_object(raw: bytes | None, max_bytes: int) -> dict[str, Any] | Rejection:
    if not raw:
        return Rejection(Reason.EMPTY_VALUE, "The message has no value (null or empty bytes).")
    if len(raw) > max_bytes:
        return Rejection(
            Reason.TOO_LARGE, f"The value is {len(raw)} bytes; the limit is {max_bytes}."
        )
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return not_json(raw, exc)
    if not isinstance(obj, dict):
        return Rejection(
            Reason.NOT_AN_OBJECT, f"The value is JSON {type(obj).__name__}, not an object."
        )
    if raw.count(b'"') != quote_count(obj):
        name = duplicate_name(raw)
        if name is not None:
            return Rejection(
                Reason.DUPLICATE_KEY,
                f"The value names {brief(name)} more than once in one object; which one is "
                "meant cannot be told (a parser keeps either), so it is not read.",
            )
    return obj


def quote_count(obj: Any) -> int:
    """How many ``"`` characters the compact JSON of ``obj`` holds: each string's two, plus one
    per quote inside it (written ``\\"``). The raw value holds more when it names a field twice
    (the parsed object kept one of them), so a count that matches rules duplicates out."""
    count, stack = 0, [obj]
    while stack:
        item = stack.pop()
        if type(item) is str:
            count += 2 + item.count('"')
        elif type(item) is dict:
            for name, value in item.items():
                count += 2 + name.count('"')
                stack.append(value)
        elif type(item) is list:
            stack.extend(item)
    return count


def duplicate_name(raw: bytes) -> str | None:
    """The first field name some object of ``raw`` (valid JSON) holds twice, if any."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        names = set()
        for name, _ in items:
            if name in names:
                raise _Duplicate(name)
            names.add(name)
        return dict(items)

    try:
        json.loads(raw, object_pairs_hook=pairs)
    except _Duplicate as dup:
        return str(dup.args[0])
    except (ValueError, RecursionError):  # orjson read it; json may disagree on the limits
        return None
    return None


class _Duplicate(Exception):
    """A field name met twice in one object (:func:`duplicate_name`)."""


_NON_FINITE = ("NaN", "Infinity")


def not_json(raw: bytes, exc: orjson.JSONDecodeError) -> Rejection:
    """Why ``raw`` did not parse: not text, a non-finite number, too deep, or other bad JSON."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as uexc:
        return Rejection(Reason.NOT_UTF8, f"The value is not UTF-8 text: {uexc}.")
    # orjson's position counts characters of the text; NaN and (-)Infinity stop it right there,
    # a literal too large for a double (1e999) says "infinity" in the message.
    if text.startswith(_NON_FINITE, exc.pos) or "infinity" in exc.msg.lower():
        return Rejection(
            Reason.NON_FINITE_NUMBER,
            f"The value holds a non-finite number at character {exc.pos} "
            f"({text[exc.pos : exc.pos + 24]!r}); JSON has no NaN or Infinity and numbers must "
            f"fit a double: {exc.msg}.",
        )
    if "depth" in exc.msg or "recursion" in exc.msg:
        return Rejection(Reason.TOO_DEEP, f"The value is JSON nested too deeply to parse: {exc}.")
    return Rejection(Reason.INVALID_JSON, f"The value is not JSON: {exc}.")


# The rule of the first failed schema keyword → the reason (failure path only).
_RULE_REASONS = {
    "required": Reason.MISSING_FIELD,
    "additionalProperties": Reason.UNKNOWN_FIELD,
    "type": Reason.WRONG_TYPE,
    "minimum": Reason.OUT_OF_RANGE,
    "maximum": Reason.OUT_OF_RANGE,
    "exclusiveMinimum": Reason.OUT_OF_RANGE,
    "exclusiveMaximum": Reason.OUT_OF_RANGE,
}
_ID_RULES = frozenset({"pattern", "minLength", "maxLength"})
_TIME_RULES = frozenset({"format", "maxLength"})


def schema_rejection(schema: str, exc: ValidationError) -> Rejection:
    """The most specific reason for a schema failure."""
    rule, name = exc.rule, str(exc.name)
    if name.endswith("_time") and rule in _TIME_RULES:
        return Rejection(Reason.BAD_TIMESTAMP, f"{exc.message} (RFC 3339 with an offset).")
    if name.endswith("_id") and rule in _ID_RULES:
        return Rejection(
            Reason.INVALID_ID,
            f"{exc.message} (got {brief(exc.value)}); ids are 1 to "
            f"{exc.definition.get('maxLength', '?')} printable ASCII characters, no spaces or "
            "control characters.",
        )
    reason = _RULE_REASONS.get(str(rule), Reason.SCHEMA_VIOLATION)
    if rule == "enum":  # label 2 is out of range, label "1" or true is the wrong type
        number = isinstance(exc.value, int | float) and not isinstance(exc.value, bool)
        reason = Reason.OUT_OF_RANGE if number else Reason.WRONG_TYPE
    return Rejection(reason, f"{schema} schema: {exc.message}.")


def check_schema(schema: str, obj: dict[str, Any]) -> Rejection | None:
    version = obj.get("schema_version", 1)
    try:
        supported = version in SUPPORTED_SCHEMA_VERSIONS and not isinstance(version, bool)
    except TypeError:  # an array or object: unhashable
        supported = False
    if not supported:
        return Rejection(
            Reason.UNSUPPORTED_SCHEMA_VERSION,
            f"schema_version {brief(version)} is not supported (supported: "
            f"{sorted(SUPPORTED_SCHEMA_VERSIONS)}).",
        )
    try:
        validator(schema)(obj)
    except ValidationError as exc:
        if exc.rule == "additionalProperties" and "features" in obj:
            return Rejection(Reason.UNKNOWN_FIELD, _FEATURES_REFUSED)
        return schema_rejection(schema, exc)
    return None


_FEATURES_REFUSED = (
    "The value carries 'features': precomputed features are not accepted. The worker computes "
    "every feature itself from the transactions it has seen (so that serving equals training), "
    "and a producer's features would be read by no model; send the transaction without them."
)


def brief(value: Any, limit: int = 60) -> str:
    """A value from the input for a message: scalars as ``repr`` (cut), containers by size."""
    if isinstance(value, dict | list):
        return f"(a JSON {'object' if isinstance(value, dict) else 'array'} of {len(value)})"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check_time(field: str, text: str, now: float) -> float | Rejection:
    ts = parse_time(text)
    if ts is None:
        return Rejection(Reason.BAD_TIMESTAMP, f"{field} {text!r} is not an RFC 3339 time.")
    if ts < MIN_EVENT_TIME:
        return Rejection(Reason.BAD_TIMESTAMP, f"{field} {text} is before 2000-01-01.")
    if ts > now + MAX_FUTURE_SKEW_S:
        return Rejection(
            Reason.BAD_TIMESTAMP, f"{field} {text} is more than a day ahead of the clock."
        )
    return ts


RFC3339_COMMON = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?(?:Z|[+-][0-9]{2}:[0-9]{2})",
    re.ASCII,
).fullmatch
"""The usual shape of an RFC 3339 time (upper-case T and Z, colon in the offset): a subset of the
schema's ``date-time`` format. Other valid shapes take the full path."""


def fast_id(value: Any, longest: int) -> bool:
    """``value`` is an id the schema accepts: 1..``longest`` printable ASCII, no space."""
    return (
        type(value) is str
        and 0 < len(value) <= longest
        and value.isascii()
        and value.isprintable()
        and " " not in value
    )


def fast_time(value: Any, now: float) -> float | None:
    """The epoch seconds of an RFC 3339 time of the common shape inside the accepted range; None
    when ``value`` is anything else (the full path then decides)."""
    if type(value) is not str or len(value) > 40 or not RFC3339_COMMON(value):
        return None
    try:
        ts = datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None
    if ts < MIN_EVENT_TIME or ts > now + MAX_FUTURE_SKEW_S:
        return None
    return ts
