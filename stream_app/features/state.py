"""Per-entity window state: what a Faust table holds for one customer or one terminal.

A state object wraps a plain JSON-ready dict (the table value), so reading it from a table and
writing it back costs no conversion. Updates are idempotent: each state remembers the highest
source offset it applied, and a replayed event (after a crash or a rebalance, before the offset
commit) is recognised and not counted twice. Its features are recomputed from the samples that
preceded it in the stream (:meth:`CustomerState.replayed_features`), not from the state as it
stands: that already holds the customer's later events, and one at the event's own second, or a
late one placed before it, falls inside its windows. A record the stage dead-lettered by a decision
on the state (a duplicate, too late) is remembered by its offset (:meth:`CustomerState.
dead_lettered`), so that reading it again reaches the same decision instead of forwarding it.

Both the live worker and the offline builder (``features.offline``) go through these classes:
that is what keeps training and serving features equal.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
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
    ``o`` is the last source offset applied. The ids answer :meth:`holds` (duplicate detection
    inside the retained window) and find a replayed event among the samples
    (:meth:`replayed_features`); no feature reads them. An event is its id at its event time, as
    labels name it (:meth:`TerminalState.apply_label`).

    Samples at one time stay in the order they were applied (stream order): a sample goes after
    any at an equal time. ``l``, present only while it is not empty, lists the samples that were
    applied out of order (placed before the newest sample, within the allowed lateness) as
    ``[time, event_id, source offset]``: with the tie order, that is all it takes to tell which
    samples at or before a replayed event's time came after it in the stream (an in-order sample
    applied after it has a later time, or its time and a place after it).

    ``d``, present only while it is not empty, lists the records the customer stage
    dead-lettered by a decision on this state (a duplicate event, an event too late) as
    ``[source offset, reason, newest time]``, the newest time being the customer's latest event
    time at the decision: a record read again after a crash or a rebalance (:meth:`seen`, since a
    later one was applied) is dead-lettered again with the same reason (and message) instead of
    being forwarded. At most :attr:`DEAD_LETTERS_KEPT` are kept (the oldest dropped first), and
    each is dropped when its newest time leaves the retention (that is when the sample at that
    time is evicted): a re-read reaches back to the last committed offset, not further.

    Changelog format: ``l`` and ``d`` are optional keys, so a state written by earlier code loads
    as it is (it has recorded no late sample, so a replay right after the upgrade of an event that
    a late sample followed still counts that one; ties are told apart in any state; and it has
    recorded no dead letter, so a record dead-lettered before the upgrade and re-read right after
    it is forwarded as earlier code did), and earlier code reading a newer state carries ``l`` and
    ``d`` along unread.
    """

    __slots__ = ("value", "window")

    #: How many dead-lettered records a state remembers (see ``d``); more than a customer sees
    #: between two offset commits unless its events are being sent again wholesale.
    DEAD_LETTERS_KEPT = 16

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
        window = self.window
        index = window.add(ts, amount)
        value = self.value
        ids: list[str | None] = value["i"]
        ids.insert(index, event_id)
        if offset >= 0:
            value["o"] = offset
            if index != len(window.times) - 1 and event_id is not None:  # late: placed before
                value.setdefault("l", []).append([ts, event_id, offset])
        cutoff = window.times[-1] - retention_s
        dropped = window.evict_through(cutoff)
        if dropped:
            del ids[:dropped]
            if "l" in value:  # late samples: [time, ...]
                _forget_through(value, "l", 0, cutoff)
            if "d" in value:  # dead letters: [..., newest time]
                _forget_through(value, "d", 2, cutoff)
        return True

    def record_dead_letter(self, offset: int, reason: str) -> None:
        """Remember that the record at source ``offset`` was dead-lettered for ``reason`` by a
        decision on this state (it holds a sample: the event is a duplicate of one, or too late
        behind the newest), so that :meth:`dead_lettered` finds it when it is read again."""
        times = self.window.times
        if offset < 0 or not times or self.dead_lettered(offset) is not None:
            return  # (decided again: read again before a later record was applied)
        dead = self.value.setdefault("d", [])
        dead.append([offset, reason, times[-1]])
        if len(dead) > self.DEAD_LETTERS_KEPT:
            del dead[: len(dead) - self.DEAD_LETTERS_KEPT]

    def dead_lettered(self, offset: int) -> tuple[str, float] | None:
        """The reason and the customer's newest event time at the decision, if the record at
        source ``offset`` was dead-lettered by a decision on this state (and is still
        remembered); None otherwise."""
        dead = self.value.get("d")
        if dead:
            for entry in dead:
                if entry[0] == offset:
                    return entry[1], entry[2]
        return None

    def features(self, ts: float) -> dict[str, float]:
        """The customer window features for an event at ``ts`` (already applied).

        Every sample at or before ``ts`` counts: right for the event just applied (it is the last
        sample at ``ts``), not for a replayed one (:meth:`replayed_features`).
        """
        out: dict[str, float] = {}
        for feature in _CUSTOMER_FEATURES:
            start, end = feature.bounds(ts)
            count, total = self.window.count_sum(start, end)
            if feature.aggregate is Aggregate.COUNT:
                out[feature.name] = float(count)
            else:
                out[feature.name] = total / count if count else 0.0
        return out

    def replayed_features(self, ts: float, event_id: str, offset: int) -> dict[str, float] | None:
        """The features of the event ``event_id`` at ``ts``, applied already from source
        ``offset`` and read again: from itself and the samples applied before it, as when it was
        first applied. For a stream in event-time order that is also what the offline builder
        computes (it orders events by time, ties by stream position).

        Excluded: the samples at ``ts`` placed after it (applied later: ties keep stream order)
        and the late samples (``l``) applied after ``offset``. None when the event is not among
        the samples (evicted since, or a state written before ids were kept): the caller cannot
        tell which samples followed it.
        """
        times = self.window.times
        ids = self.value["i"]
        index = _position(times, ids, ts, event_id)
        if index < 0:
            return None
        stop = index + 1  # samples [0, stop): itself and all before it
        late = self.value.get("l")  # [time, event id, offset] of samples applied out of order
        skip = None
        if late:  # those applied after this event, before it in time: their indices
            skip = [
                _position(times, ids, t, e) for t, e, applied in late if applied > offset and t < ts
            ]
        values = self.window.values
        out: dict[str, float] = {}
        for feature in _CUSTOMER_FEATURES:
            start, end = feature.bounds(ts)
            lo = bisect_right(times, start)
            hi = bisect_right(times, end)
            if hi > stop:
                hi = stop
            inside = [j for j in skip if lo <= j < hi] if skip else None
            if inside:
                count = hi - lo - len(inside)
                total = sum(values[j] for j in range(lo, hi) if j not in inside)
            else:
                count = hi - lo  # >= 0: the event itself is after the start
                total = sum(values[lo:hi])
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
    return _position(times, ids, ts, event_id) >= 0


def _position(times: list[float], ids: list[str | None], ts: float, event_id: str) -> int:
    """The index of sample ``event_id`` at ``ts`` (-1 when it is not held)."""
    index = bisect_left(times, ts)
    while index < len(times) and times[index] == ts:
        if ids[index] == event_id:
            return index
        index += 1
    return -1


def _forget_through(value: StateValue, key: str, field: int, cutoff: float) -> None:
    """Drop the entries of the optional list ``value[key]`` whose time (at ``field``) is at or
    before ``cutoff``, and the key with the last of them."""
    kept = [entry for entry in value[key] if entry[field] > cutoff]
    if kept:
        value[key] = kept
    else:
        del value[key]


def state_bytes(value: StateValue) -> int:
    """Serialized size of one entity's state (what the changelog and store hold)."""
    import orjson

    return len(orjson.dumps(value))
