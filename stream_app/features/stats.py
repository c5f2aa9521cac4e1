"""How much state the entities hold: serialized bytes per customer or terminal.

The size of one state is :func:`stream_app.features.state.state_bytes`: the bytes the table and
its changelog hold (a state object is encoded, bytes are measured as they are, a JSON state of
earlier code by its compact JSON). :func:`state_size_stats` sums it up over many entities, e.g.
the last changelog value of every key of a table, or the states the offline builder ends with.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from stream_app.features.state import state_bytes


@dataclass(frozen=True, slots=True)
class StateSizeStats:
    """Serialized state sizes over a set of entities."""

    count: int
    total_bytes: int
    max_bytes: int

    @property
    def mean_bytes(self) -> float:
        """Mean bytes per entity (0.0 when there are none)."""
        return self.total_bytes / self.count if self.count else 0.0

    def describe(self) -> str:
        """``n=…, mean=… B, max=… B, total=… B`` for logs and test output."""
        return (
            f"n={self.count:,}, mean={self.mean_bytes:,.0f} B, max={self.max_bytes:,} B, "
            f"total={self.total_bytes:,} B"
        )


def state_size_stats(states: Iterable[Any]) -> StateSizeStats:
    """Count, total and largest serialized size of ``states`` (one per entity: a state, its
    bytes, or a JSON state of earlier code)."""
    count = total = largest = 0
    for value in states:
        size = state_bytes(value)
        count += 1
        total += size
        largest = max(largest, size)
    return StateSizeStats(count=count, total_bytes=total, max_bytes=largest)
