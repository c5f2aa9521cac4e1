"""What both entity states are made of outside memory: their JSON view, their source ids, and
the parts of their bytes (:meth:`~stream_app.features.customer_state.CustomerState.encode`,
:meth:`~stream_app.features.terminal_state.TerminalState.encode`).

A state remembers the highest offset it applied per *source*: one topic partition of one of its
stage's input topics (:func:`source_id`).
"""

from __future__ import annotations

import struct
from typing import Any

import orjson

StateValue = dict[str, Any]
"""The JSON view of a state (:attr:`CustomerState.value`): tests, tools, earlier changelogs."""

SOURCE_PARTITIONS = 1 << 16
"""Source ids: ``topic_index * SOURCE_PARTITIONS + partition`` (:func:`source_id`)."""
LEGACY_SOURCE = -1
"""The source of an offset recorded by a state written before sources were kept."""


def source_id(partition: int, topic_index: int = 0) -> int:
    """The id of input ``partition`` of the stage's ``topic_index``-th input topic."""
    return topic_index * SOURCE_PARTITIONS + partition


# Binary layout:
#
# Customer:  b"SC" version(1) flags(1) n(u32) next_seq(u32) tail_len(u32)
#            t[n] f64 · a[n] f64 · q · tail: JSON {"o", "d"} · ids: UTF-8 joined by \x1f
#            q is q[n] u32, or (flag Q_RUN: the samples were applied in the order they sit, as
#            for every customer whose events came in time order) the first number alone, u32
# Terminal:  b"ST" version(1) flags(1) n(u32) tail_len(u32)
#            t[n] f64 · f[n] u8 · tail: JSON {"o", "p"} · ids joined by \x1f
#            · (when any sample's customer is known) \x1e and the customers joined by \x1f
# Ids are printable ASCII (the schemas' id pattern), so \x1f never occurs in one; an unknown id
# (a sample loaded from a state written before ids were kept) is the empty string.

CUSTOMER_HEAD = struct.Struct("<2sBBIII")
TERMINAL_HEAD = struct.Struct("<2sBBII")
VERSION = 1
SEP = "\x1f"
CUSTOMERS_MARK = b"\x1e"  # terminal: ids, then (when any is known) \x1e and the samples' customers
Q_RUN = 1  # customer flag: q is q0, q0 + 1, ...: only q0 is stored
U32 = struct.Struct("<I")


def join_ids(ids: list[str | None]) -> bytes:
    return SEP.join([i or "" for i in ids]).encode()


def split_ids(raw: bytes, n: int) -> list[str | None]:
    if n == 0:
        return []
    return [i or None for i in raw.decode().split(SEP)]


def sources_out(offsets: dict[int, int]) -> dict[str, int]:
    return {str(k): v for k, v in offsets.items()}


def json_tail(**parts: Any) -> bytes:
    """The JSON tail of a state's bytes: its small irregular parts, the empty ones left out."""
    kept = {name: value for name, value in parts.items() if value}
    if not kept:
        return b""
    if "o" in kept:
        kept["o"] = sources_out(kept["o"])
    return orjson.dumps(kept)


def sources_in(raw: Any) -> dict[int, int]:
    if isinstance(raw, int):  # a JSON state written before sources were kept
        return {LEGACY_SOURCE: raw} if raw >= 0 else {}
    return {int(k): int(v) for k, v in (raw or {}).items()}
