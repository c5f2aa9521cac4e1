"""Dead letters: a rejected input keeps its original bytes, headers and position, plus a reason.

Reason codes form a closed list (``Reason``), mirrored in ``schemas/dead_letter.schema.json``.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson


class Reason(StrEnum):
    """Why an input was rejected."""

    EMPTY_VALUE = "empty_value"
    TOO_LARGE = "too_large"
    NOT_UTF8 = "not_utf8"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    SCHEMA_VIOLATION = "schema_violation"
    KEY_MISMATCH = "key_mismatch"
    UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
    BAD_TIMESTAMP = "bad_timestamp"
    TOO_LATE = "too_late"
    DUPLICATE_EVENT = "duplicate_event"
    UNKNOWN_EVENT = "unknown_event"
    PROCESSING_ERROR = "processing_error"


@dataclass(frozen=True, slots=True)
class Rejection:
    """A decoding or validation failure: a reason code and a message for a person."""

    reason: Reason
    message: str


@dataclass(frozen=True, slots=True)
class SourcePosition:
    """Where the rejected record came from."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def dead_letter_record(
    rejection: Rejection,
    source: SourcePosition,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]] = (),
    now: datetime | None = None,
) -> dict[str, Any]:
    """The dead-letter record (schema ``dead_letter``) for one rejected message."""
    return {
        "reason": rejection.reason.value,
        "message": rejection.message,
        "source": {
            "topic": source.topic,
            "partition": source.partition,
            "offset": source.offset,
            "timestamp_ms": source.timestamp_ms,
        },
        "value_b64": _b64(value),
        "key_b64": _b64(key),
        "headers": [[name, _b64(val)] for name, val in headers],
        "rejected_at": (now or datetime.now(UTC)).isoformat(),
    }


def encode_dead_letter(record: dict[str, Any]) -> bytes:
    """Dead-letter record as JSON bytes."""
    return orjson.dumps(record)


def original_value(record: dict[str, Any]) -> bytes | None:
    """The original value bytes of a dead-letter record (inverse of the base64 wrap)."""
    raw = record.get("value_b64")
    return None if raw is None else base64.b64decode(raw)
