"""Dead letters: a rejected input keeps its original bytes, headers and position, plus a reason.

Reason codes form a closed list (``Reason``), mirrored in ``schemas/dead_letter.schema.json``.
Each names one kind of fault an operator can act on; ``schema_violation`` is what is left when no
more specific code fits. ``tests/data/bad_inputs/`` holds a corpus with an example of each.

A dead letter must itself fit in one Kafka request (the worker's producer allows 1,000,000 bytes,
base64 inflates by 4/3, and the Kafka record carries the key and headers again), or producing it
would fail and the worker would stop on every restart at the same input. So a value longer than
``KEEP_BYTES`` is kept as its first ``KEEP_BYTES`` bytes plus its length and SHA-256
(``value_bytes``, ``value_sha256``), a key longer than ``KEEP_KEY_BYTES`` likewise (``key_*``),
and the headers up to ``KEEP_HEADER_BYTES`` in all (``headers_dropped`` counts the rest); the
whole record is still at its source position. The message is cut to ``MAX_MESSAGE_CHARS``.
:func:`dead_letter_message` builds the whole Kafka record: at most about 560 KB.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson


class Reason(StrEnum):
    """Why an input was rejected."""

    EMPTY_VALUE = "empty_value"  # null (tombstone) or zero-length value
    TOO_LARGE = "too_large"  # value over ``max_message_bytes``
    NOT_UTF8 = "not_utf8"  # bytes that are not UTF-8 text (binary, pickle, Latin-1)
    INVALID_JSON = "invalid_json"  # UTF-8 text that is not one JSON document
    DUPLICATE_KEY = "duplicate_key"  # one JSON object naming a field twice (never "last wins")
    NON_FINITE_NUMBER = "non_finite_number"  # NaN, Infinity, or a number overflowing a double
    TOO_DEEP = "too_deep"  # JSON nested beyond the parser's depth limit
    NOT_AN_OBJECT = "not_an_object"  # JSON, but an array, string, number or null
    MISSING_FIELD = "missing_field"  # a required field is absent
    UNKNOWN_FIELD = "unknown_field"  # a field the schema does not declare
    WRONG_TYPE = "wrong_type"  # a field of the wrong JSON type (string amount, array id...)
    OUT_OF_RANGE = "out_of_range"  # a number outside its bounds (negative or absurd amount)
    INVALID_ID = "invalid_id"  # an id empty, too long, or with control, space or non-ASCII
    SCHEMA_VIOLATION = "schema_violation"  # any other breach of the schema
    NULL_KEY = "null_key"  # the record has no key
    KEY_MISMATCH = "key_mismatch"  # the key is not the id the topic is keyed by
    MISROUTED_KEY = "misrouted_key"  # on another partition than its key's (another partitioner)
    UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
    BAD_TIMESTAMP = "bad_timestamp"  # not RFC 3339, before 2000, a day ahead; label before event
    TOO_LATE = "too_late"  # behind its customer's latest event by more than the lateness
    DUPLICATE_EVENT = "duplicate_event"  # event_id already in the customer's window
    EVENT_ID_REUSED = "event_id_reused"  # event_id held for another time or customer: first wins
    LABEL_MISMATCH = "label_mismatch"  # a label whose customer is not its transaction's
    UNKNOWN_EVENT = "unknown_event"  # a label whose transaction the worker never held
    PROCESSING_ERROR = "processing_error"  # a bug met on this input (the worker went on)


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


KEEP_BYTES = 256 * 1024
"""Longest value kept whole in a dead letter (base64: 341 KiB)."""
KEEP_KEY_BYTES = 16 * 1024
"""Longest key kept whole in a dead letter (and as its Kafka key)."""
KEEP_HEADER_BYTES = 64 * 1024
"""Most header bytes (names and values) kept in a dead letter (and as its Kafka headers)."""
MAX_MESSAGE_CHARS = 1_000
"""Longest human message kept in a dead letter."""


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _kept(record: dict[str, Any], name: str, data: bytes | None, keep: int) -> None:
    """``<name>_b64`` of ``data``, cut to ``keep`` bytes with its length and hash when longer."""
    if data is not None and len(data) > keep:
        record[f"{name}_b64"] = _b64(data[:keep])
        record[f"{name}_bytes"] = len(data)
        record[f"{name}_sha256"] = hashlib.sha256(data).hexdigest()
    else:
        record[f"{name}_b64"] = _b64(data)


def dead_letter_record(
    rejection: Rejection,
    source: SourcePosition,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]] = (),
    now: datetime | None = None,
) -> dict[str, Any]:
    """The dead-letter record (schema ``dead_letter``) for one rejected message."""
    message = rejection.message
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 1] + "…"
    record: dict[str, Any] = {
        "reason": rejection.reason.value,
        "message": message,
        "source": {
            "topic": source.topic,
            "partition": source.partition,
            "offset": source.offset,
            "timestamp_ms": source.timestamp_ms,
        },
    }
    _kept(record, "value", value, KEEP_BYTES)
    _kept(record, "key", key, KEEP_KEY_BYTES)
    kept = kept_headers(headers)
    record["headers"] = [[name, _b64(val)] for name, val in kept]
    if len(kept) < len(headers):
        record["headers_dropped"] = len(headers) - len(kept)
    record["rejected_at"] = (now or datetime.now(UTC)).isoformat()
    return record


def kept_headers(
    headers: Sequence[tuple[str, bytes | None]],
) -> list[tuple[str, bytes | None]]:
    """The leading headers whose names and values fit in ``KEEP_HEADER_BYTES`` together."""
    kept: list[tuple[str, bytes | None]] = []
    size = 0
    for name, value in headers:
        size += len(name.encode()) + len(value or b"")
        if size > KEEP_HEADER_BYTES:
            break
        kept.append((name, value))
    return kept


def dead_letter_message(
    rejection: Rejection,
    source: SourcePosition,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]] = (),
) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
    """The Kafka record for ``transactions.dlq``: key, value, headers.

    Keyed by the original key (its first ``KEEP_KEY_BYTES`` bytes when longer), with the kept
    original headers (empty values as b"") and ``dlq.reason``.
    """
    record = dead_letter_record(rejection, source, key, value, headers)
    kafka_headers = [(name, val or b"") for name, val in kept_headers(headers)]
    kafka_headers.append(("dlq.reason", rejection.reason.value.encode()))
    kafka_key = key if key is None or len(key) <= KEEP_KEY_BYTES else key[:KEEP_KEY_BYTES]
    return kafka_key, encode_dead_letter(record), kafka_headers


def encode_dead_letter(record: dict[str, Any]) -> bytes:
    """Dead-letter record as JSON bytes."""
    return orjson.dumps(record)


def original_value(record: dict[str, Any]) -> bytes | None:
    """The original value bytes of a dead-letter record (inverse of the base64 wrap); for a value
    longer than ``KEEP_BYTES``, its first ``KEEP_BYTES`` bytes (see ``value_bytes``)."""
    raw = record.get("value_b64")
    return None if raw is None else base64.b64decode(raw)
