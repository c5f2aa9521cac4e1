"""Exact event-time sliding windows over one entity's history.

Faust's windowed tables offer tumbling and hopping windows only; fraud features need the exact
window ``(start, end]`` ending at each event. ``SlidingWindow`` keeps the entity's samples sorted
by event time (appends are O(1) for in-order events, late events are inserted in place) and
answers count / sum queries with two binary searches.

>>> w = SlidingWindow()
>>> [w.add(ts, amount) for ts, amount in [(0.0, 10.0), (5.0, 20.0), (10.0, 30.0)]]  # indexes
[0, 1, 2]
>>> w.count_sum(0.0, 10.0)   # (0, 10]: excludes the sample at 0
(2, 50.0)
>>> w.evict_through(5.0)      # drop samples at or before 5
2
>>> w.times
[10.0]
"""

from __future__ import annotations

from bisect import bisect_right


class SlidingWindow:
    """Samples ``(time, value)`` of one entity, sorted by time.

    ``times`` and ``values`` are plain lists so the state serializes to JSON as it is.
    """

    __slots__ = ("times", "values")

    def __init__(self, times: list[float] | None = None, values: list[float] | None = None) -> None:
        self.times: list[float] = [] if times is None else times
        self.values: list[float] = [] if values is None else values
        if len(self.times) != len(self.values):
            raise ValueError("times and values must have the same length")

    def __len__(self) -> int:
        return len(self.times)

    def add(self, ts: float, value: float = 0.0) -> int:
        """Add a sample (after any with an equal time); returns the index it went to."""
        times = self.times
        if not times or ts >= times[-1]:
            times.append(ts)
            self.values.append(value)
            return len(times) - 1
        index = bisect_right(times, ts)
        times.insert(index, ts)
        self.values.insert(index, value)
        return index

    def count(self, start: float, end: float) -> int:
        """Number of samples with ``start < time <= end``."""
        times = self.times
        return bisect_right(times, end) - bisect_right(times, start)

    def count_sum(self, start: float, end: float) -> tuple[int, float]:
        """Count and sum of values of the samples with ``start < time <= end``."""
        times = self.times
        lo = bisect_right(times, start)
        hi = bisect_right(times, end)
        return hi - lo, sum(self.values[lo:hi])

    def evict_through(self, cutoff: float) -> int:
        """Drop samples with ``time <= cutoff``; returns how many were dropped."""
        n = bisect_right(self.times, cutoff)
        if n:
            del self.times[:n]
            del self.values[:n]
        return n
