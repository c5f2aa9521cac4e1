"""Per-entity window state: what a Faust table holds for one customer or one terminal.

The live state of an entity is a small object of typed arrays (``array('d')`` times and amounts,
``array('B')`` fraud flags, ``array('I')`` application numbers) plus a list of event ids. Its
table value and changelog record are those arrays' bytes behind a fixed header
(:meth:`CustomerState.encode`): no per-number formatting on the way out, a ``memcpy`` on the way
in. A state written by earlier code (a JSON object) still loads (:func:`decode_state`).

Updates are idempotent: each state remembers the highest offset it applied per *source* (one
topic partition, :func:`source_id`), and a record read again after a crash or a rebalance, before
its offset was committed, is recognised and not counted twice. Its features are recomputed from
the samples applied *before* it (:meth:`CustomerState.replayed_features`), not from the state as
it stands: that already holds the customer's later events, and one at the event's own second, or
a late one placed before it, falls inside its windows. Each customer sample carries the number of
its application (``q``), which is all it takes to tell which samples came after it. A record the
stage dead-lettered by a decision on the state (a duplicate, too late) is remembered by its
source and offset (:meth:`CustomerState.dead_lettered`), so that reading it again reaches the
same decision instead of forwarding it.

Both the live worker and the offline builder (``features.offline``) go through these classes:
that is what keeps training and serving features equal. Window sums run left to right over the
window's samples (``sum`` of a slice), exactly as the offline builder's, so features are equal
bit for bit, not within a tolerance.
"""

from __future__ import annotations

import struct
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from stream_app.features.definitions import Aggregate, Entity, horizon_s, window_features

StateValue = dict[str, Any]
"""The JSON view of a state (:attr:`CustomerState.value`): tests, tools, earlier changelogs."""

SOURCE_PARTITIONS = 1 << 16
"""Source ids: ``topic_index * SOURCE_PARTITIONS + partition`` (:func:`source_id`)."""
LEGACY_SOURCE = -1
"""The source of an offset recorded by a state written before sources were kept."""


def source_id(partition: int, topic_index: int = 0) -> int:
    """The id of input ``partition`` of the stage's ``topic_index``-th input topic."""
    return topic_index * SOURCE_PARTITIONS + partition


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """One distinct ``(t - delay - window, t - delay]`` window and the features read from it."""

    window_s: float
    delay_s: float
    # (feature index in the entity's feature list, aggregate) for each feature of this window
    reads: tuple[tuple[int, Aggregate], ...]


def window_specs(entity: Entity) -> tuple[WindowSpec, ...]:
    """The distinct windows of ``entity``'s features (a count and a mean over one window share
    one count and one sum), in feature order of first use."""
    specs: dict[tuple[float, float], list[tuple[int, Aggregate]]] = {}
    for index, feature in enumerate(window_features(entity)):
        key = (feature.window_days * 86_400.0, feature.delay_days * 86_400.0)
        specs.setdefault(key, []).append((index, feature.aggregate))
    return tuple(WindowSpec(w, d, tuple(reads)) for (w, d), reads in specs.items())


CUSTOMER_FEATURES: tuple[str, ...] = tuple(f.name for f in window_features(Entity.CUSTOMER))
TERMINAL_FEATURES: tuple[str, ...] = tuple(f.name for f in window_features(Entity.TERMINAL))
_CUSTOMER_WINDOWS = window_specs(Entity.CUSTOMER)
_TERMINAL_WINDOWS = window_specs(Entity.TERMINAL)


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


def _window_values(
    times: array[float],
    values: Any,
    ts: float,
    specs: tuple[WindowSpec, ...],
    n_features: int,
    stop: int | None = None,
    skip: Callable[[int], bool] | None = None,
) -> list[float]:
    """The window features of an event at ``ts`` over ``times``/``values``, in feature order.

    ``stop``: only samples before this index count. ``skip``: samples (indices) left out.
    """
    out = [0.0] * n_features
    n = len(times)
    newest = times[-1] if n else 0.0
    last_end = None
    hi = 0
    for spec in specs:
        end = ts - spec.delay_s
        if end != last_end:  # windows of one delay share their end
            hi = n if n and end >= newest else bisect_right(times, end)
            if stop is not None and hi > stop:
                hi = stop
            last_end = end
        lo = bisect_right(times, end - spec.window_s, 0, hi) if hi else 0
        if skip is None:
            count = hi - lo
            total = sum(values[lo:hi]) if count else 0.0
        else:
            kept = [j for j in range(lo, hi) if not skip(j)]
            count = len(kept)
            total = sum(values[j] for j in kept) if count else 0.0
        for index, aggregate in spec.reads:
            if aggregate is Aggregate.COUNT:
                out[index] = float(count)
            else:  # MEAN (amounts) and RISK (fraud flags): both total / count
                out[index] = total / count if count else 0.0
    return out


# --- binary layout -------------------------------------------------------------------------------
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

_CUSTOMER_HEAD = struct.Struct("<2sBBIII")
_TERMINAL_HEAD = struct.Struct("<2sBBII")
_VERSION = 1
_SEP = "\x1f"
_CUSTOMERS = b"\x1e"  # terminal: ids, then (when any is known) \x1e and the samples' customers
_Q_RUN = 1  # customer flag: q is q0, q0 + 1, ...: only q0 is stored
_U32 = struct.Struct("<I")


def _join_ids(ids: list[str | None]) -> bytes:
    return _SEP.join([i or "" for i in ids]).encode()


def _split_ids(raw: bytes, n: int) -> list[str | None]:
    if n == 0:
        return []
    return [i or None for i in raw.decode().split(_SEP)]


def _sources_out(offsets: dict[int, int]) -> dict[str, int]:
    return {str(k): v for k, v in offsets.items()}


def _tail(**parts: Any) -> bytes:
    """The JSON tail of a state's bytes: its small irregular parts, the empty ones left out."""
    kept = {name: value for name, value in parts.items() if value}
    if not kept:
        return b""
    if "o" in kept:
        kept["o"] = _sources_out(kept["o"])
    return orjson.dumps(kept)


def _sources_in(raw: Any) -> dict[int, int]:
    if isinstance(raw, int):  # a JSON state written before sources were kept
        return {LEGACY_SOURCE: raw} if raw >= 0 else {}
    return {int(k): int(v) for k, v in (raw or {}).items()}


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
        self.o = _sources_in(value.get("o"))
        # ``l`` (earlier code's late samples) needs no conversion: numbering the samples in
        # place treats a late one as applied before the samples after it in time, which only
        # matters for a replay of those, right after the upgrade.
        dead = value.get("d") or []
        self.d = [entry if len(entry) == 4 else [LEGACY_SOURCE, *entry] for entry in dead]

    # --- the changelog / table value ----------------------------------------------------------

    def encode(self) -> bytes:
        """The table value: typed arrays behind a fixed header (see the module's layout)."""
        tail = _tail(o=self.o, d=self.d)
        q = self.q
        n = len(q)
        run = n > 0 and q[-1] - q[0] == n - 1 and array("I", range(q[0], q[0] + n)) == q
        return b"".join(
            (
                _CUSTOMER_HEAD.pack(
                    b"SC", _VERSION, _Q_RUN if run else 0, len(self.t), self.n, len(tail)
                ),
                self.t.tobytes(),
                self.a.tobytes(),
                _U32.pack(q[0]) if run else q.tobytes(),
                tail,
                _join_ids(self.i),
            )
        )

    @classmethod
    def decode(cls, raw: bytes) -> CustomerState:
        """The state :meth:`encode` wrote."""
        _, version, flags, n, next_seq, tail_len = _CUSTOMER_HEAD.unpack_from(raw)
        if version != _VERSION:
            raise ValueError(f"customer state version {version} is not supported")
        state = cls()
        pos = _CUSTOMER_HEAD.size
        state.t.frombytes(raw[pos : pos + 8 * n])
        pos += 8 * n
        state.a.frombytes(raw[pos : pos + 8 * n])
        pos += 8 * n
        if flags & _Q_RUN:
            (q0,) = _U32.unpack_from(raw, pos)
            state.q = array("I", range(q0, q0 + n))
            pos += 4
        else:
            state.q.frombytes(raw[pos : pos + 4 * n])
            pos += 4 * n
        if tail_len:
            tail = orjson.loads(raw[pos : pos + tail_len])
            state.o = _sources_in(tail.get("o"))
            state.d = tail.get("d") or []
            pos += tail_len
        state.i = _split_ids(raw[pos:], n)
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
            "o": _sources_out(self.o),
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
        return _holds(self.t, self.i, ts, event_id)

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
        return _window_values(self.t, self.a, ts, _CUSTOMER_WINDOWS, len(CUSTOMER_FEATURES))

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
        index = _position(times, self.i, ts, event_id)
        if index < 0:
            return None
        seq = self.q[index]
        q = self.q
        stop = index + 1  # samples after it at its time or later came later in the stream
        late = [j for j in range(0, stop) if q[j] > seq]  # placed before it, applied after it
        skip = (lambda j: j in late) if late else None
        return _window_values(
            times, self.a, ts, _CUSTOMER_WINDOWS, len(CUSTOMER_FEATURES), stop=stop, skip=skip
        )

    def replayed_features(self, ts: float, event_id: str) -> dict[str, float] | None:
        """:meth:`replayed_values` by name."""
        values = self.replayed_values(ts, event_id)
        return None if values is None else dict(zip(CUSTOMER_FEATURES, values, strict=True))


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
            self.o = _sources_in(value.get("o"))
            self.p = dict(value.get("p") or {})

    def encode(self) -> bytes:
        """The table value (see the module's layout)."""
        tail = _tail(o=self.o, p=self.p)
        customers = self.c
        return b"".join(
            (
                _TERMINAL_HEAD.pack(b"ST", _VERSION, 0, len(self.t), len(tail)),
                self.t.tobytes(),
                self.f.tobytes(),
                tail,
                _join_ids(self.i),
                _CUSTOMERS + _join_ids(customers) if any(customers) else b"",
            )
        )

    @classmethod
    def decode(cls, raw: bytes) -> TerminalState:
        """The state :meth:`encode` wrote."""
        _, version, _, n, tail_len = _TERMINAL_HEAD.unpack_from(raw)
        if version != _VERSION:
            raise ValueError(f"terminal state version {version} is not supported")
        state = cls()
        pos = _TERMINAL_HEAD.size
        state.t.frombytes(raw[pos : pos + 8 * n])
        pos += 8 * n
        state.f.frombytes(raw[pos : pos + n])
        pos += n
        if tail_len:
            tail = orjson.loads(raw[pos : pos + tail_len])
            state.o = _sources_in(tail.get("o"))
            state.p = tail.get("p") or {}
            pos += tail_len
        ids, _, customers = raw[pos:].partition(_CUSTOMERS)
        state.i = _split_ids(ids, n)
        state.c = _split_ids(customers, n) if customers else [None] * n
        return state

    @property
    def value(self) -> StateValue:
        """The JSON view: ``t``, ``f`` (0.0/1.0), ``i``, ``o`` and ``p``. A copy."""
        return {
            "t": self.t.tolist(),
            "f": [float(x) for x in self.f],
            "i": list(self.i),
            "o": _sources_out(self.o),
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
        index = _position(self.t, self.i, ts, event_id)
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
        if times and ts <= times[-1] and _holds(times, self.i, ts, event_id):
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
        return _holds(self.t, self.i, ts, event_id)

    def customer_of(self, ts: float, event_id: str) -> str | None:
        """The customer of transaction ``event_id`` at ``ts`` when held and known."""
        index = _position(self.t, self.i, ts, event_id)
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
        index = _position(self.t, self.i, ts, event_id)
        if index >= 0:
            self.f[index] = 1 if label else 0
            return True
        if label and keep_pending:
            self.p[event_id] = ts
        return False

    def feature_values(self, ts: float) -> list[float]:
        """The terminal window features (in ``TERMINAL_FEATURES`` order) for an event at
        ``ts``."""
        return _window_values(self.t, self.f, ts, _TERMINAL_WINDOWS, len(TERMINAL_FEATURES))

    def features(self, ts: float) -> dict[str, float]:
        """:meth:`feature_values` by name."""
        return dict(zip(TERMINAL_FEATURES, self.feature_values(ts), strict=True))


def _holds(times: array[float], ids: list[str | None], ts: float, event_id: str) -> bool:
    """Whether ``event_id`` is among the samples at time ``ts`` (``times`` sorted, ``ids``
    aligned)."""
    if not times or ts > times[-1]:  # the usual case: an event newer than all held
        return False
    return _position(times, ids, ts, event_id) >= 0


def _position(times: array[float], ids: list[str | None], ts: float, event_id: str) -> int:
    """The index of sample ``event_id`` at ``ts`` (-1 when it is not held)."""
    index = bisect_left(times, ts)
    n = len(times)
    while index < n and times[index] == ts:
        if ids[index] == event_id:
            return index
        index += 1
    return -1


State = CustomerState | TerminalState


def decode_state(raw: bytes | StateValue, kind: type[State]) -> State:
    """A table value (bytes :meth:`encode` wrote, or a JSON state of earlier code) as a state."""
    if isinstance(raw, dict):
        return kind(raw)
    if raw[:1] == b"{":  # a JSON state written by earlier code
        return kind(orjson.loads(raw))
    return kind.decode(raw)


def state_view(raw: bytes, kind: type[State]) -> StateValue:
    """The JSON view of a table value (tests, tools, the benchmark)."""
    return decode_state(raw, kind).value


def state_bytes(state: State | bytes | StateValue) -> int:
    """Serialized size of one entity's state (what the changelog and store hold): a state is
    encoded, bytes are measured as they are, a JSON state of earlier code as compact JSON."""
    if isinstance(state, CustomerState | TerminalState):
        return len(state.encode())
    if isinstance(state, bytes):
        return len(state)
    return len(orjson.dumps(state))


def encoded_sizes(states: Iterable[State]) -> list[int]:
    """:func:`state_bytes` of each state."""
    return [len(s.encode()) for s in states]
