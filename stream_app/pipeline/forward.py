"""The repartition record: a validated transaction with its stage-1 features, on its way from the
customer stage to the terminal stage over ``transactions.by-terminal`` (keyed by terminal id).

It is an internal record, written and read only by the worker, so it is a flat JSON array in a
fixed order rather than an object: a third of the bytes, and half the time to encode and decode.

``[FORWARD_VERSION, event_id, event_time, ts, customer_id, terminal_id, arrived_ms,
source_partition, source_offset, [features], floor]``, where ``features`` are the event features
and the customer window features in ``stream_app.features.definitions`` order
(``FORWARDED_FEATURES``), and ``floor`` is the source partition's replay floor in stage 1 when
the record was written (null before its first commit): stage 1 may forward again, after a crash,
only events at or after it less the allowed lateness, so the terminal stage evicts nothing they
need (:mod:`stream_app.pipeline.floors`).
A record written by earlier code (version 1 without the floor, or a JSON object with a
``features`` mapping) still decodes, with no floor.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson

from stream_app.features.definitions import EVENT_FEATURES
from stream_app.features.state_windows import CUSTOMER_FEATURES

FORWARD_VERSION = 2
FORWARDED_FEATURES: tuple[str, ...] = tuple(f.name for f in EVENT_FEATURES) + CUSTOMER_FEATURES
"""The features a forward carries, in its order: the event's, then the customer's."""
_LENGTH = 11
_LENGTH_V1 = 10
_N_FEATURES = len(FORWARDED_FEATURES)
_NUMBER = (float, int)


class Forward(NamedTuple):
    """A decoded repartition record."""

    event_id: str
    event_time: str
    ts: float
    customer_id: str
    terminal_id: str
    arrived_ms: float
    source_partition: int
    source_offset: int
    features: list[float]  # FORWARDED_FEATURES order
    floor: float | None = None  # stage 1's replay floor of the source partition (None: none)


def encode_forward(
    event_id: str,
    event_time: str,
    ts: float,
    customer_id: str,
    terminal_id: str,
    arrived_ms: float,
    source_partition: int,
    source_offset: int,
    features: list[float],
    floor: float | None = None,
) -> bytes:
    """The record's value (``features`` in ``FORWARDED_FEATURES`` order; ``floor``: the source
    partition's replay floor, None or -inf for none)."""
    return orjson.dumps(
        [
            FORWARD_VERSION,
            event_id,
            event_time,
            ts,
            customer_id,
            terminal_id,
            arrived_ms,
            source_partition,
            source_offset,
            features,
            floor if floor is not None and floor > _NO_FLOOR else None,
        ]
    )


_NO_FLOOR = float("-inf")


_make = Forward._make


class ForwardError(ValueError):
    """A by-terminal record that is not a forward this code can read."""


def decode_forward(raw: bytes | None) -> Forward:
    """The forward in ``raw``; :class:`ForwardError` when it is not one."""
    try:
        value: Any = orjson.loads(raw or b"")
    except orjson.JSONDecodeError as exc:
        raise ForwardError(f"not JSON: {exc}") from None
    if type(value) is list:
        n = len(value)
        if (
            not (
                (n == _LENGTH and value[0] == FORWARD_VERSION)
                or (n == _LENGTH_V1 and value[0] == 1)
            )
            or type(value[9]) is not list
            or len(value[9]) != _N_FEATURES
        ):
            raise ForwardError(
                f"a forward of {len(value)} fields, version {value[0] if value else None!r}; "
                f"this worker reads version {FORWARD_VERSION} ({_LENGTH} fields) and 1 "
                f"({_LENGTH_V1}), the tenth {_N_FEATURES} features (a worker with other feature "
                "definitions wrote it?)"
            )
        if not (
            type(value[1]) is str
            and type(value[2]) is str
            and type(value[3]) is float
            and type(value[4]) is str
            and type(value[5]) is str
            and type(value[6]) in _NUMBER
            and type(value[7]) is int
            and type(value[8]) is int
            and all(type(x) is float for x in value[9])
            and (n == _LENGTH_V1 or value[10] is None or type(value[10]) is float)
        ):
            raise ForwardError(
                "a forward whose fields are not of the types this worker writes (strings, "
                "numbers, float features): not written by a worker"
            )
        return _make(value[1:]) if n == _LENGTH else _make([*value[1:], None])
    if type(value) is dict:  # written by earlier code
        try:
            features = value["features"]
            source = value["source"]
            return Forward(
                value["event_id"],
                value["event_time"],
                value["ts"],
                value["customer_id"],
                value["terminal_id"],
                value["arrived_ms"],
                source[1],
                source[2],
                [features[name] for name in FORWARDED_FEATURES],
            )
        except (KeyError, IndexError, TypeError) as exc:
            raise ForwardError(f"an object forward without {exc}") from None
    raise ForwardError(f"JSON {type(value).__name__}, not a forward")


def forward_view(raw: bytes) -> dict[str, Any]:
    """A forward as a readable object (tests, tools): named fields and named features."""
    fwd = decode_forward(raw)
    out = fwd._asdict()
    out["features"] = dict(zip(FORWARDED_FEATURES, fwd.features, strict=True))
    return out
