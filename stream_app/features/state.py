"""Per-entity window state: what a Faust table holds for one customer or one terminal.

A state object wraps a plain JSON-ready dict (the table value), so reading it from a table and
writing it back costs no conversion. Updates are idempotent: each state remembers the highest
source offset it applied, and a replayed event (after a crash, before the offset commit) is
recognised and not counted twice; its features are recomputed from the state as it stands, which
gives the same values as the first time (the window ends at the event's own time).

Both the live worker and the offline builder (``features.offline``) go through these classes:
that is what keeps training and serving features equal.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from typing import Any

from stream_app.features.definitions import Aggregate, Entity, horizon_s, window_features
from stream_app.features.windows import SlidingWindow

StateValue = dict[str, Any]

_CUSTOMER_FEATURES = window_features(Entity.CUSTOMER)
_TERMINAL_FEATURES = window_features(Entity.TERMINAL)


@dataclass(frozen=True, slots=True)
class Retention:
    """How long state keeps samples: the features' horizon plus the allowed lateness."""

    customer_s: float
    terminal_s: float
    lateness_s: float = 0.0

    @classmethod
    def for_lateness(cls, allowed_lateness_s: float) -> Retention:
        """Retention for the current feature definitions and ``allowed_lateness_s``."""
        return cls(
            horizon_s(Entity.CUSTOMER) + allowed_lateness_s,
            horizon_s(Entity.TERMINAL) + allowed_lateness_s,
            allowed_lateness_s,
        )


class CustomerState:
    """A customer's amounts by event time, their event ids, and the last source offset applied.

    ``t`` (times), ``a`` (amounts) and ``i`` (event ids, None where unknown) are aligned lists;
    ``o`` is the last source offset applied. The ids only answer :meth:`holds` (duplicate
    detection inside the retained window); no feature reads them. An event is its id at its
    event time, as labels name it (:meth:`TerminalState.apply_label`).
    """

    __slots__ = ("value", "window")

    def __init__(self, value: StateValue | None = None) -> None:
        if value is None:
            value = {"t": [], "a": [], "i": [], "o": -1}
        elif "i" not in value:  # written before ids were kept
            value["i"] = [None] * len(value["t"])
        self.value: StateValue = value
        self.window = SlidingWindow(value["t"], value["a"])

    def seen(self, offset: int) -> bool:
        """Whether the record at source ``offset`` was applied already (a replay)."""
        return 0 <= offset <= self.value["o"]

    def holds(self, ts: float, event_id: str) -> bool:
        """Whether transaction ``event_id`` at ``ts`` is among the retained samples."""
        return _holds(self.window.times, self.value["i"], ts, event_id)

    def apply(
        self,
        ts: float,
        amount: float,
        offset: int,
        retention_s: float,
        event_id: str | None = None,
    ) -> bool:
        """Add a transaction unless ``offset`` was applied already; returns whether it added."""
        if self.seen(offset):
            return False
        index = self.window.add(ts, amount)
        ids: list[str | None] = self.value["i"]
        ids.insert(index, event_id)
        if offset >= 0:
            self.value["o"] = offset
        dropped = self.window.evict_through(self.window.times[-1] - retention_s)
        if dropped:
            del ids[:dropped]
        return True

    def features(self, ts: float) -> dict[str, float]:
        """The customer window features for an event at ``ts`` (already applied)."""
        out: dict[str, float] = {}
        for feature in _CUSTOMER_FEATURES:
            start, end = feature.bounds(ts)
            count, total = self.window.count_sum(start, end)
            if feature.aggregate is Aggregate.COUNT:
                out[feature.name] = float(count)
            else:
                out[feature.name] = total / count if count else 0.0
        return out


class TerminalState:
    """A terminal's transactions by event time with their known fraud flags.

    ``t`` (times), ``f`` (fraud flag 0/1, set when a label arrives) and ``i`` (event ids) are
    aligned lists; ``o`` is the last source offset applied; ``p`` holds fraud labels that arrived
    before their transaction (the label and transaction topics are consumed independently), as
    ``event_id -> time``, applied when the transaction arrives.

    A label known "early" never leaks into a feature: the window for an event at ``t`` ends at
    ``t - delay``, and a transaction at ``s <= t - delay`` has its label known by ``s + delay``.
    """

    __slots__ = ("value", "window")

    def __init__(self, value: StateValue | None = None) -> None:
        self.value: StateValue = (
            value if value is not None else {"t": [], "f": [], "i": [], "o": -1, "p": {}}
        )
        self.window = SlidingWindow(self.value["t"], self.value["f"])

    def apply(
        self,
        ts: float,
        event_id: str,
        offset: int,
        retention_s: float,
        fraud: float = 0.0,
        horizon_end: float | None = None,
    ) -> bool:
        """Add a transaction unless it was applied already; returns whether it added.

        Applied already: ``offset`` is not past the last one applied, or the terminal holds the
        event (its id at its time). A customer stage that re-reads transactions after a crash
        forwards them again at new offsets of the repartition topic, which only the id reveals.

        Samples older than ``horizon_end - retention_s`` are evicted; ``horizon_end`` defaults to
        the newest sample. The live stage passes its event-time low watermark instead: terminal
        events come from several customer partitions that progress unevenly, and an event from a
        lagging partition still needs the samples its window reaches back to.
        """
        if 0 <= offset <= self.value["o"] or self.holds(ts, event_id):
            return False
        pending: dict[str, float] = self.value["p"]
        if pending and pending.pop(event_id, None) is not None:
            fraud = 1.0
        index = self.window.add(ts, fraud)
        self.value["i"].insert(index, event_id)
        if offset >= 0:
            self.value["o"] = offset
        newest = self.window.times[-1]
        cutoff = (newest if horizon_end is None else min(horizon_end, newest)) - retention_s
        dropped = self.window.evict_through(cutoff)
        if dropped:
            del self.value["i"][:dropped]
            if pending:
                for stale in [k for k, v in pending.items() if v <= cutoff]:
                    del pending[stale]
        return True

    def holds(self, ts: float, event_id: str) -> bool:
        """Whether transaction ``event_id`` at ``ts`` is among the retained samples."""
        return _holds(self.window.times, self.value["i"], ts, event_id)

    def apply_label(self, ts: float, event_id: str, label: int, keep_pending: bool = True) -> bool:
        """Record the label of transaction ``event_id`` at ``ts``.

        Returns True when the transaction is held. A fraud label for a transaction not seen yet
        is kept pending (unless ``keep_pending`` is false); a genuine one changes nothing (flags
        default to 0).
        """
        times = self.window.times
        ids = self.value["i"]
        index = bisect_left(times, ts)
        while index < len(times) and times[index] == ts:
            if ids[index] == event_id:
                self.window.values[index] = float(label)
                return True
            index += 1
        if label and keep_pending:
            self.value["p"][event_id] = ts
        return False

    def features(self, ts: float) -> dict[str, float]:
        """The terminal window features for an event at ``ts``."""
        out: dict[str, float] = {}
        for feature in _TERMINAL_FEATURES:
            start, end = feature.bounds(ts)
            count, frauds = self.window.count_sum(start, end)
            if feature.aggregate is Aggregate.COUNT:
                out[feature.name] = float(count)
            else:
                out[feature.name] = frauds / count if count else 0.0
        return out


def _holds(times: list[float], ids: list[str | None], ts: float, event_id: str) -> bool:
    """Whether ``event_id`` is among the samples at time ``ts`` (``times`` sorted, ``ids``
    aligned)."""
    if not times or ts > times[-1]:  # the usual case: an event newer than all held
        return False
    index = bisect_left(times, ts)
    while index < len(times) and times[index] == ts:
        if ids[index] == event_id:
            return True
        index += 1
    return False


def state_bytes(value: StateValue) -> int:
    """Serialized size of one entity's state (what the changelog and store hold)."""
    import orjson

    return len(orjson.dumps(value))
