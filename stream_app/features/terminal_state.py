"""A terminal's window state (the scoring stage's table value): transactions by event time with
their known fraud flags, and what makes its updates idempotent (:mod:`stream_app.features.state`).
"""

from __future__ import annotations

from array import array
from bisect import bisect_right

import orjson

from stream_app.features.state_layout import (
    CUSTOMERS_MARK,
    LEGACY_SOURCE,
    TERMINAL_HEAD,
    VERSION,
    StateValue,
    join_ids,
    json_tail,
    sources_in,
    sources_out,
    split_ids,
)
from stream_app.features.state_windows import (
    TERMINAL_FEATURES,
    TERMINAL_WINDOWS,
    holds_sample,
    sample_position,
    window_values,
)


class TerminalState:
    """A terminal's transactions by event time with their known fraud flags.

    ``t`` (times), ``f`` (fraud flag 0/1, set when a label arrives) and ``i`` (event ids) are
    aligned; ``o`` maps each source to the last offset applied; ``p`` holds fraud labels that
    arrived before their transaction, as ``event_id -> time``, applied when it arrives.

    A label known "early" never leaks into a feature: the window for an event at ``t`` ends at
    ``t - delay``, and a transaction at ``s <= t - delay`` has its label known by ``s + delay``.
    """

    __slots__ = ("_ids", "c", "f", "i", "o", "p", "t")

    def __init__(self, value: StateValue | None = None) -> None:
        """An empty state, or one from its JSON view (a state written by earlier code)."""
        self.t: array[float] = array("d")
        self.f: array[int] = array("B")
        self.i: list[str | None] = []
        self.c: list[str | None] = []  # each sample's customer (None: written before kept)
        self.o: dict[int, int] = {}
        self.p: dict[str, float] = {}
        self._ids: set[str | None] | None = None  # ``i`` as a set, built when first asked
        if value is not None:
            self.t = array("d", value["t"])
            self.f = array("B", (1 if x else 0 for x in value["f"]))
            self.i = list(value.get("i") or [None] * len(value["t"]))
            self.c = list(value.get("c") or [None] * len(value["t"]))
            self.o = sources_in(value.get("o"))
            self.p = dict(value.get("p") or {})

    def encode(self) -> bytes:
        """The table value (see the module's layout)."""
        tail = json_tail(o=self.o, p=self.p)
        customers = self.c
        return b"".join(
            (
                TERMINAL_HEAD.pack(b"ST", VERSION, 0, len(self.t), len(tail)),
                self.t.tobytes(),
                self.f.tobytes(),
                tail,
                join_ids(self.i),
                CUSTOMERS_MARK + join_ids(customers) if any(customers) else b"",
            )
        )

    @classmethod
    def decode(cls, raw: bytes) -> TerminalState:
        """The state :meth:`encode` wrote."""
        _, version, _, n, tail_len = TERMINAL_HEAD.unpack_from(raw)
        if version != VERSION:
            raise ValueError(f"terminal state version {version} is not supported")
        state = cls()
        pos = TERMINAL_HEAD.size
        state.t.frombytes(raw[pos : pos + 8 * n])
        pos += 8 * n
        state.f.frombytes(raw[pos : pos + n])
        pos += n
        if tail_len:
            tail = orjson.loads(raw[pos : pos + tail_len])
            state.o = sources_in(tail.get("o"))
            state.p = tail.get("p") or {}
            pos += tail_len
        ids, _, customers = raw[pos:].partition(CUSTOMERS_MARK)
        state.i = split_ids(ids, n)
        state.c = split_ids(customers, n) if customers else [None] * n
        return state

    @property
    def value(self) -> StateValue:
        """The JSON view: ``t``, ``f`` (0.0/1.0), ``i``, ``o`` and ``p``. A copy."""
        return {
            "t": self.t.tolist(),
            "f": [float(x) for x in self.f],
            "i": list(self.i),
            "o": sources_out(self.o),
            "p": dict(self.p),
        }

    def reused(self, ts: float, event_id: str, customer_id: str) -> tuple[float, str] | None:
        """The time and customer of the sample holding ``event_id`` when that is another event
        (another time, or another customer at the same time); None when no sample holds the id
        or the one that does is this very event (a replay). A set lookup for a new id."""
        ids = self._ids
        if ids is None:
            ids = self._ids = set(self.i)
        if event_id not in ids:
            return None
        index = sample_position(self.t, self.i, ts, event_id)
        if index >= 0:
            held = self.c[index]
            return None if held is None or held == customer_id else (ts, held)
        index = self.i.index(event_id)
        return self.t[index], self.c[index] or "?"

    def apply(
        self,
        ts: float,
        event_id: str,
        offset: int,
        retention_s: float,
        fraud: float = 0.0,
        horizon_end: float | None = None,
        source: int = 0,
        customer_id: str | None = None,
    ) -> bool:
        """Add a transaction unless it was applied already; returns whether it added.

        Applied already: ``offset`` is not past the last one applied from ``source``, or the
        terminal holds the event (its id at its time). A customer stage that re-reads
        transactions after a crash forwards them again at new offsets of the repartition topic,
        which only the id reveals.

        Samples older than ``horizon_end - retention_s`` are evicted; ``horizon_end`` defaults to
        the newest sample. The live stage passes its event-time low watermark instead: terminal
        events come from several customer partitions that progress unevenly, and an event from a
        lagging partition still needs the samples its window reaches back to.
        """
        if offset >= 0:
            last = self.o.get(source, self.o.get(LEGACY_SOURCE, -1))
            if offset <= last:
                return False
        times = self.t
        if times and ts <= times[-1] and holds_sample(times, self.i, ts, event_id):
            return False
        pending = self.p
        flag = 1 if fraud else 0
        if pending and pending.pop(event_id, None) is not None:
            flag = 1
        if not times or ts >= times[-1]:
            times.append(ts)
            self.f.append(flag)
            self.i.append(event_id)
            self.c.append(customer_id)
        else:
            index = bisect_right(times, ts)
            times.insert(index, ts)
            self.f.insert(index, flag)
            self.i.insert(index, event_id)
            self.c.insert(index, customer_id)
        ids = self._ids
        if ids is not None:
            ids.add(event_id)
        if offset >= 0:
            self.o[source] = offset
            self.o.pop(LEGACY_SOURCE, None)
        newest = times[-1]
        cutoff = (newest if horizon_end is None else min(horizon_end, newest)) - retention_s
        if times[0] <= cutoff:
            dropped = bisect_right(times, cutoff)
            del times[:dropped]
            del self.f[:dropped]
            if ids is not None:
                ids.difference_update(self.i[:dropped])
            del self.i[:dropped]
            del self.c[:dropped]
            if pending:
                for stale in [k for k, v in pending.items() if v <= cutoff]:
                    del pending[stale]
        return True

    def holds(self, ts: float, event_id: str) -> bool:
        """Whether transaction ``event_id`` at ``ts`` is among the retained samples."""
        return holds_sample(self.t, self.i, ts, event_id)

    def customer_of(self, ts: float, event_id: str) -> str | None:
        """The customer of transaction ``event_id`` at ``ts`` when held and known."""
        index = sample_position(self.t, self.i, ts, event_id)
        return self.c[index] if index >= 0 else None

    def time_of(self, event_id: str) -> float | None:
        """The event time of a held sample with ``event_id`` (any time), None when none."""
        ids = self._ids
        if ids is None:
            ids = self._ids = set(self.i)
        return self.t[self.i.index(event_id)] if event_id in ids else None

    def apply_label(self, ts: float, event_id: str, label: int, keep_pending: bool = True) -> bool:
        """Record the label of transaction ``event_id`` at ``ts``.

        Returns True when the transaction is held. A fraud label for a transaction not seen yet
        is kept pending (unless ``keep_pending`` is false); a genuine one changes nothing (flags
        default to 0).
        """
        index = sample_position(self.t, self.i, ts, event_id)
        if index >= 0:
            self.f[index] = 1 if label else 0
            return True
        if label and keep_pending:
            self.p[event_id] = ts
        return False

    def feature_values(self, ts: float) -> list[float]:
        """The terminal window features (in ``TERMINAL_FEATURES`` order) for an event at
        ``ts``."""
        return window_values(self.t, self.f, ts, TERMINAL_WINDOWS, len(TERMINAL_FEATURES))

    def features(self, ts: float) -> dict[str, float]:
        """:meth:`feature_values` by name."""
        return dict(zip(TERMINAL_FEATURES, self.feature_values(ts), strict=True))
