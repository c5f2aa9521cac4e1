"""A customer's window state (the customer stage's table value): amounts by event time, and what
makes its updates idempotent (:mod:`stream_app.features.state`)."""

from __future__ import annotations

from array import array
from bisect import bisect_right
from typing import Any

import orjson

from stream_app.features.state_layout import (
    CUSTOMER_HEAD,
    LEGACY_SOURCE,
    Q_RUN,
    U32,
    VERSION,
    StateValue,
    join_ids,
    json_tail,
    sources_in,
    sources_out,
    split_ids,
)
from stream_app.features.state_windows import (
    CUSTOMER_FEATURES,
    CUSTOMER_WINDOWS,
    holds_sample,
    sample_position,
    window_values,
)


class CustomerState:
    """A customer's amounts by event time, their event ids, and the offsets applied per source.

    ``t`` (times), ``a`` (amounts), ``i`` (event ids, None where unknown) and ``q`` (the number
    of the application that added the sample) are aligned; ``n`` is the next application number;
    ``o`` maps each source to the last offset applied from it. The ids answer :meth:`holds`
    (duplicate detection inside the retained window) and find a replayed event among the samples
    (:meth:`replayed_features`); no feature reads them or ``q``. An event is its id at its event
    time, as labels name it.

    Samples at one time stay in the order they were applied (stream order): a sample goes after
    any at an equal time. A late sample (within the allowed lateness, before the newest) is
    inserted at its time.

    ``d`` lists the records the customer stage dead-lettered by a decision on this state (a
    duplicate event, an event too late) as ``[source, offset, reason, newest time]``, the newest
    time being the customer's latest event time at the decision: a record read again after a
    crash or a rebalance (:meth:`seen`) is dead-lettered again with the same reason (and message)
    instead of being forwarded. At most :attr:`DEAD_LETTERS_KEPT` are kept (the oldest dropped
    first), and each is dropped when its newest time leaves the retention: a re-read reaches back
    to the last committed offset, not further.
    """

    __slots__ = ("_ids", "a", "d", "i", "n", "o", "q", "t")

    #: How many dead-lettered records a state remembers (see ``d``); more than a customer sees
    #: between two offset commits unless its events are being sent again wholesale.
    DEAD_LETTERS_KEPT = 16

    def __init__(self, value: StateValue | None = None) -> None:
        """An empty state, or one from its JSON view (a state written by earlier code)."""
        self.t: array[float] = array("d")
        self.a: array[float] = array("d")
        self.q: array[int] = array("I")
        self.i: list[str | None] = []
        self.n = 0
        self.o: dict[int, int] = {}
        self.d: list[list[Any]] = []
        self._ids: set[str | None] | None = None  # ``i`` as a set, built when first asked
        if value is not None:
            self._load_json(value)

    def _load_json(self, value: StateValue) -> None:
        times = value["t"]
        self.t = array("d", times)
        self.a = array("d", value["a"])
        self.i = list(value.get("i") or [None] * len(times))
        if "q" in value:
            self.q = array("I", value["q"])
            self.n = int(value.get("n", max(value["q"], default=-1) + 1))
        else:
            self.q = array("I", range(len(times)))  # earlier code kept stream order in place
            self.n = len(times)
        self.o = sources_in(value.get("o"))
        # ``l`` (earlier code's late samples) needs no conversion: numbering the samples in
        # place treats a late one as applied before the samples after it in time, which only
        # matters for a replay of those, right after the upgrade.
        dead = value.get("d") or []
        self.d = [entry if len(entry) == 4 else [LEGACY_SOURCE, *entry] for entry in dead]

    # --- the changelog / table value ----------------------------------------------------------

    def encode(self) -> bytes:
        """The table value: typed arrays behind a fixed header (see the module's layout)."""
        tail = json_tail(o=self.o, d=self.d)
        q = self.q
        n = len(q)
        run = n > 0 and q[-1] - q[0] == n - 1 and array("I", range(q[0], q[0] + n)) == q
        return b"".join(
            (
                CUSTOMER_HEAD.pack(
                    b"SC", VERSION, Q_RUN if run else 0, len(self.t), self.n, len(tail)
                ),
                self.t.tobytes(),
                self.a.tobytes(),
                U32.pack(q[0]) if run else q.tobytes(),
                tail,
                join_ids(self.i),
            )
        )

    @classmethod
    def decode(cls, raw: bytes) -> CustomerState:
        """The state :meth:`encode` wrote."""
        _, version, flags, n, next_seq, tail_len = CUSTOMER_HEAD.unpack_from(raw)
        if version != VERSION:
            raise ValueError(f"customer state version {version} is not supported")
        state = cls()
        pos = CUSTOMER_HEAD.size
        state.t.frombytes(raw[pos : pos + 8 * n])
        pos += 8 * n
        state.a.frombytes(raw[pos : pos + 8 * n])
        pos += 8 * n
        if flags & Q_RUN:
            (q0,) = U32.unpack_from(raw, pos)
            state.q = array("I", range(q0, q0 + n))
            pos += 4
        else:
            state.q.frombytes(raw[pos : pos + 4 * n])
            pos += 4 * n
        if tail_len:
            tail = orjson.loads(raw[pos : pos + tail_len])
            state.o = sources_in(tail.get("o"))
            state.d = tail.get("d") or []
            pos += tail_len
        state.i = split_ids(raw[pos:], n)
        state.n = next_seq
        return state

    @property
    def value(self) -> StateValue:
        """The JSON view: ``t``, ``a``, ``i``, ``q``, ``n``, ``o`` (source id as a string →
        offset) and ``d`` when not empty. A copy: changing it changes nothing."""
        out: StateValue = {
            "t": self.t.tolist(),
            "a": self.a.tolist(),
            "i": list(self.i),
            "q": self.q.tolist(),
            "n": self.n,
            "o": sources_out(self.o),
        }
        if self.d:
            out["d"] = [list(entry) for entry in self.d]
        return out

    # --- decisions ----------------------------------------------------------------------------

    @property
    def newest(self) -> float | None:
        """The latest event time held (None when empty)."""
        return self.t[-1] if self.t else None

    def seen(self, offset: int, source: int = 0) -> bool:
        """Whether the record at ``offset`` of ``source`` was applied already (a replay)."""
        last = self.o.get(source)
        if last is None:
            last = self.o.get(LEGACY_SOURCE)
            if last is None:
                return False
        return 0 <= offset <= last

    def holds(self, ts: float, event_id: str) -> bool:
        """Whether transaction ``event_id`` at ``ts`` is among the retained samples."""
        return holds_sample(self.t, self.i, ts, event_id)

    def holds_id(self, event_id: str) -> bool:
        """Whether ``event_id`` is among the retained samples, at any time (a set lookup: the
        set is built once per loaded state and kept up to date by :meth:`apply`)."""
        ids = self._ids
        if ids is None:
            ids = self._ids = set(self.i)
        return event_id in ids

    def apply(
        self,
        ts: float,
        amount: float,
        offset: int,
        retention_s: float,
        event_id: str | None = None,
        source: int = 0,
        horizon_end: float | None = None,
    ) -> bool:
        """Add a transaction unless ``offset`` of ``source`` was applied already; returns whether
        it added. ``offset`` < 0: no position (the offline builder).

        Samples older than ``horizon_end - retention_s`` are evicted; ``horizon_end`` defaults
        to the newest sample. The live stage passes its replay floor instead
        (:mod:`stream_app.pipeline.floors`): a record read again after a crash needs the samples
        its window reaches back to, however far ahead of it the recovered state is."""
        if offset >= 0 and self.seen(offset, source):
            return False
        times = self.t
        if not times or ts >= times[-1]:
            times.append(ts)
            self.a.append(amount)
            self.q.append(self.n)
            self.i.append(event_id)
        else:  # late, within the allowed lateness: placed at its time, after equal times
            index = bisect_right(times, ts)
            times.insert(index, ts)
            self.a.insert(index, amount)
            self.q.insert(index, self.n)
            self.i.insert(index, event_id)
        ids = self._ids
        if ids is not None:
            ids.add(event_id)
        self.n += 1
        if offset >= 0:
            self.o[source] = offset
            self.o.pop(LEGACY_SOURCE, None)
        newest = times[-1]
        cutoff = (newest if horizon_end is None else min(horizon_end, newest)) - retention_s
        if times[0] <= cutoff:
            dropped = bisect_right(times, cutoff)
            del times[:dropped]
            del self.a[:dropped]
            del self.q[:dropped]
            if ids is not None:
                ids.difference_update(self.i[:dropped])
            del self.i[:dropped]
            if self.d:
                self.d = [entry for entry in self.d if entry[3] > cutoff]
        return True

    def record_dead_letter(self, offset: int, reason: str, source: int = 0) -> None:
        """Remember that the record at ``offset`` of ``source`` was dead-lettered for ``reason``
        by a decision on this state (it holds a sample: the event is a duplicate of one, or too
        late behind the newest), so that :meth:`dead_lettered` finds it when read again."""
        if offset < 0 or not self.t or self.dead_lettered(offset, source) is not None:
            return  # (decided again: read again before a later record was applied)
        dead = self.d
        dead.append([source, offset, reason, self.t[-1]])
        if len(dead) > self.DEAD_LETTERS_KEPT:
            del dead[: len(dead) - self.DEAD_LETTERS_KEPT]

    def dead_lettered(self, offset: int, source: int = 0) -> tuple[str, float] | None:
        """The reason and the customer's newest event time at the decision, if the record at
        ``offset`` of ``source`` was dead-lettered by a decision on this state (and is still
        remembered); None otherwise."""
        for entry in self.d:
            if entry[1] == offset and (entry[0] == source or entry[0] == LEGACY_SOURCE):
                return entry[2], entry[3]
        return None

    # --- features -----------------------------------------------------------------------------

    def feature_values(self, ts: float) -> list[float]:
        """The customer window features (in ``CUSTOMER_FEATURES`` order) for an event at ``ts``
        (already applied). Every sample at or before ``ts`` counts: right for the event just
        applied (the last sample at ``ts``), not for a replayed one (:meth:`replayed_values`)."""
        return window_values(self.t, self.a, ts, CUSTOMER_WINDOWS, len(CUSTOMER_FEATURES))

    def features(self, ts: float) -> dict[str, float]:
        """:meth:`feature_values` by name."""
        return dict(zip(CUSTOMER_FEATURES, self.feature_values(ts), strict=True))

    def replayed_values(self, ts: float, event_id: str) -> list[float] | None:
        """The features of the event ``event_id`` at ``ts``, applied already and read again:
        from itself and the samples applied before it (a lower application number), as when it
        was first applied. For a stream in event-time order that is also what the offline builder
        computes (it orders events by time, ties by stream position).

        None when the event is not among the samples (evicted since, or a state written before
        ids were kept): the caller cannot tell which samples followed it.
        """
        times = self.t
        index = sample_position(times, self.i, ts, event_id)
        if index < 0:
            return None
        seq = self.q[index]
        q = self.q
        stop = index + 1  # samples after it at its time or later came later in the stream
        late = [j for j in range(0, stop) if q[j] > seq]  # placed before it, applied after it
        skip = (lambda j: j in late) if late else None
        return window_values(
            times, self.a, ts, CUSTOMER_WINDOWS, len(CUSTOMER_FEATURES), stop=stop, skip=skip
        )

    def replayed_features(self, ts: float, event_id: str) -> dict[str, float] | None:
        """:meth:`replayed_values` by name."""
        values = self.replayed_values(ts, event_id)
        return None if values is None else dict(zip(CUSTOMER_FEATURES, values, strict=True))
