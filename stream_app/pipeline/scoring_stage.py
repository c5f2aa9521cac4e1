"""Stage 2, on the terminal-keyed topics: terminal windows, labels, and micro-batch scoring.

The stage reads both the repartitioned transactions (``transactions.by-terminal``) and
``labels`` (keyed by terminal), so a terminal's transactions and labels meet in one table
partition. The worker's batch engine hands it their records merged in event-time order (a label
at the time it became known, before a transaction at that same instant). Per micro-batch: labels
update fraud flags; each transaction updates its terminal's window (idempotent by source offset)
and gets its full feature vector; then the whole batch is scored by **one** ``predict_proba``
and turned into envelopes. With a canary on (:meth:`ScoringStage.use_canary`), the rows of the
canary's customers are scored by the canary instead (one more ``predict_proba``, for them only),
and their envelopes say ``route: canary``.

A label whose transaction the terminal does not hold is either early (its transaction may still
come: a fraud label waits pending) or for an unknown event (dead letter ``unknown_event``): see
:meth:`ScoringStage.label_horizon`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, MutableMapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import orjson

from stream_app.features.definitions import FEATURE_NAMES
from stream_app.features.retention import Retention
from stream_app.features.state_layout import source_id
from stream_app.features.terminal_state import TerminalState
from stream_app.io.codecs import Label, decode_label, not_json
from stream_app.io.deadletter import Reason, Rejection
from stream_app.io.forward import Forward, ForwardError, decode_forward
from stream_app.io.records import RecordLike
from stream_app.pipeline.customer_stage import (
    DeadLetter,
    key_rejection,
    now_s,
    processing_error,
    routed_away,
)
from stream_app.pipeline.floors import CommitFloors
from stream_app.pipeline.routing import Misrouted, Reroute, Routing
from stream_app.pipeline.state_store import StateStore
from stream_app.scoring.canary import (
    CANARY_ROUTE,
    CHAMPION_ROUTE,
    canary_rows,
    one_native_thread,
)
from stream_app.scoring.envelope import EnvelopeWriter
from stream_app.scoring.model import BatchScores, ScoringModel

Item = Forward | Label | Rejection


@dataclass(slots=True)
class LabelCounts:
    """What happened to the labels of a batch."""

    applied: int = 0
    pending_or_unknown: int = 0


@dataclass(slots=True)
class ScoringOutput:
    """Envelopes (key, value) for ``scores``, dead letters, counters."""

    scores: list[tuple[bytes, bytes]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    labels: LabelCounts = field(default_factory=LabelCounts)
    replayed: int = 0
    arrived_ms: list[float] = field(default_factory=list)  # Kafka timestamps of scored events
    scoring_s: float = 0.0  # predict_proba + explanations + envelopes of the batch
    # What the shadow and drift outputs need, row-aligned with ``scores``:
    events: list[Forward] = field(default_factory=list)
    event_ts: list[float] = field(default_factory=list)  # event times, epoch seconds
    X: np.ndarray | None = None  # feature matrix, FEATURE_NAMES columns
    champion: BatchScores | None = None
    canary_scored: int = 0  # envelopes of the batch the canary decided (not in events, X)
    # Labels on the wrong partition for their terminal (stream_app.pipeline.routing):
    reroutes: list[Reroute] = field(default_factory=list)
    misrouted: list[Misrouted] = field(default_factory=list)


def forward_rejection(raw: bytes | None, exc: Exception) -> Rejection:
    """Why a ``transactions.by-terminal`` record is not a forward (written by something else
    than a worker): the decoding reasons of an input, or ``schema_violation`` for JSON that is
    not a repartition record."""
    if not raw:
        return Rejection(Reason.EMPTY_VALUE, "The repartition record has no value.")
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError as json_exc:
        return not_json(raw, json_exc)
    return Rejection(Reason.SCHEMA_VIOLATION, f"Not a repartition record: {exc}.")


def reused_forward(fwd: Forward, held_ts: float, held_customer: str) -> Rejection:
    """Why ``fwd`` is dead-lettered when its terminal holds its id for another event."""
    return Rejection(
        Reason.EVENT_ID_REUSED,
        f"event_id {fwd.event_id!r} (customer {fwd.customer_id!r}, {fwd.event_time}) is "
        f"already held by terminal {fwd.terminal_id!r} for customer {held_customer!r} at "
        f"{held_ts:.3f} (epoch s): an id names one payment; the first one read is kept and "
        "scored, this one is not (its own customer's window, in stage 1, has counted it). Its "
        f"value was read from transactions at partition {fwd.source_partition}, offset "
        f"{fwd.source_offset}; this dead letter holds its repartition record.",
    )


class ScoringStage:
    """Stage-2 logic over the terminal states (a :class:`StateStore`, or a plain mapping) and a
    champion model."""

    def __init__(
        self,
        states: StateStore[TerminalState] | MutableMapping[str, Any],
        model: ScoringModel,
        retention: Retention,
        labels_topic: str,
        max_message_bytes: int,
        emit_features: bool = False,
        source_partitions: int = 1,
        max_source_skew_s: float = 7 * 86_400.0,
        topic_index: Mapping[str, int] | None = None,
        label_routing: Routing | None = None,
        forward_routing: Routing | None = None,
        floors: CommitFloors | None = None,
    ) -> None:
        """``label_routing``: how labels on the wrong partition for their terminal are handled
        (None: not checked); its reroute topic is read as labels too. ``forward_routing``: the
        same for repartition records (on the wrong partition only after ``topics grow``; they go
        back to the repartition topic itself, at their terminal's partition). ``floors``: the
        replay floors the worker's commits update (:meth:`eviction_horizon`); None (offline, in
        tools, in tests of one pass) evicts from the newest event times seen."""
        self.states: StateStore[TerminalState] = (
            states if isinstance(states, StateStore) else StateStore(TerminalState, states)
        )
        self.model = model
        self.emit_features = emit_features
        self.canary: ScoringModel | None = None
        self.canary_share = 0.0
        self._canary_pool: ThreadPoolExecutor | None = None
        self._writers()
        self.source_partitions = source_partitions
        self.max_source_skew_s = max_source_skew_s
        # Newest event time seen per (input partition, transactions partition). A terminal's
        # records all arrive on one input partition, interleaved from every customer partition;
        # each of those sub-streams is in event-time order, so the least advanced one is the
        # low watermark that bounds eviction for the terminals of that input partition.
        self._source_time: dict[int, dict[int, float]] = {}
        # The highest replay floor each transactions partition announced (in its forwards) per
        # input partition; floors only rise, so a record from that source comes at or after it
        # (less the lateness). See eviction_horizon.
        self._source_floor: dict[int, dict[int, float]] = {}
        self.floors = floors
        self.retention = retention
        self.labels_topic = labels_topic
        self.max_message_bytes = max_message_bytes
        self.topic_index = dict(topic_index or {})
        self.label_routing = label_routing
        self.forward_routing = forward_routing
        rerouted = label_routing.reroute_topic if label_routing is not None else None
        self.label_topics = frozenset([labels_topic] + ([rerouted] if rerouted else []))

    # --- decoding (the engine calls this per fetched chunk) ------------------------------------

    def decode(self, records: Sequence[RecordLike], now: float | None = None) -> list[Item]:
        """The decoded forward or label (or rejection) of each record."""
        clock = now_s() if now is None else now
        labels, limit = self.label_topics, self.max_message_bytes
        out: list[Item] = []
        for record in records:
            if record.topic in labels:
                out.append(decode_label(record.value, limit, clock))
                continue
            try:
                out.append(decode_forward(record.value))
            except ForwardError as exc:
                out.append(forward_rejection(record.value, exc))
        return out

    # --- a micro-batch --------------------------------------------------------------------------

    def process(
        self, records: Sequence[RecordLike], items: Sequence[Item] | None = None
    ) -> ScoringOutput:
        """Process one micro-batch in order and score its transactions together (``items``:
        :meth:`decode` of ``records``, when the engine decoded them already)."""
        if items is None:
            items = self.decode(records)
        out = ScoringOutput()
        events: list[Forward] = []
        rows: list[list[float]] = []
        event_ts: list[float] = []
        states = self.states
        terminal_s = self.retention.terminal_s
        source_time = self._source_time
        source_floor = self._source_floor
        floors = self.floors
        taken: dict[tuple[str, int], int] = {}  # forwards' (topic, partition) -> offset end
        horizons: dict[int, float] = {}  # input partition -> eviction horizon, this batch
        for record, item in zip(records, items, strict=True):
            try:
                kind = type(item)
                if kind is Forward:
                    fwd: Forward = item  # type: ignore[assignment]
                    terminal_id = fwd.terminal_id
                    partition = record.partition
                    offset = record.offset
                    source = source_id(partition, self.topic_index.get(record.topic, 0))
                    routing = self.forward_routing
                    if routed_away(routing, record, terminal_id.encode(), out):
                        continue
                    if routing is not None and record.headers:
                        origin = routing.origin(record)
                        if origin is not None:  # rerouted: known by where it was first read
                            source = source_id(origin[1], self.topic_index.get(origin[0], 0))
                            offset = origin[2]
                    state = states.get(terminal_id, partition)
                    ts = fwd.ts
                    seen = source_time.get(partition)
                    if seen is None:
                        seen = source_time[partition] = {}
                    if ts > seen.get(fwd.source_partition, float("-inf")):
                        seen[fwd.source_partition] = ts
                    if floors is not None:
                        taken[record.topic, partition] = record.offset + 1
                        if fwd.floor is not None:
                            announced = source_floor.get(partition)
                            if announced is None:
                                announced = source_floor[partition] = {}
                            if fwd.floor > announced.get(fwd.source_partition, float("-inf")):
                                announced[fwd.source_partition] = fwd.floor
                    horizon = horizons.get(partition)
                    if horizon is None:
                        horizon = horizons[partition] = self.eviction_horizon(partition)
                    held = state.reused(ts, fwd.event_id, fwd.customer_id)
                    if held is not None:
                        out.dead_letters.append(DeadLetter(record, reused_forward(fwd, *held)))
                        continue
                    if state.apply(
                        ts,
                        fwd.event_id,
                        offset,
                        terminal_s,
                        horizon_end=horizon,
                        source=source,
                        customer_id=fwd.customer_id,
                    ):
                        states.changed(terminal_id, partition)
                    else:
                        out.replayed += 1
                    row = list(fwd.features)
                    row += state.feature_values(ts)
                    rows.append(row)
                    event_ts.append(ts)
                    events.append(fwd)
                elif kind is Label:
                    self._label(record, item, out)  # type: ignore[arg-type]
                else:
                    out.dead_letters.append(DeadLetter(record, item))  # type: ignore[arg-type]
            except Exception as exc:  # the worker never crashes on input
                out.dead_letters.append(DeadLetter(record, processing_error(exc)))
        if rows:
            self._score(out, events, rows, event_ts)
        if floors is not None:
            for (topic, partition), end in taken.items():
                floors.mark(topic, partition, end, self.floor_horizon(partition))
        return out

    def _score(
        self,
        out: ScoringOutput,
        events: list[Forward],
        rows: list[list[float]],
        event_ts: list[float],
    ) -> None:
        started = time.perf_counter()
        X = np.array(rows, dtype=np.float64)
        canary = self.canary
        picked = (
            canary_rows([e.customer_id for e in events], self.canary_share)
            if canary is not None
            else None
        )
        out.arrived_ms = [e.arrived_ms for e in events]
        if not picked:
            X_champion = self.matrix(X, self.model.features)
            scores = self.model.score_batch(X_champion)
            out.scores = self.envelopes.encode(events, X_champion, scores)
            out.events, out.event_ts, out.X, out.champion = events, event_ts, X, scores
        else:
            assert canary is not None
            self._score_split(out, events, X, event_ts, canary, picked)
        out.scoring_s = time.perf_counter() - started

    def _score_split(
        self,
        out: ScoringOutput,
        events: list[Forward],
        X: np.ndarray,
        event_ts: list[float],
        canary: ScoringModel,
        picked: list[int],
    ) -> None:
        """Score the canary's rows with the canary and the others with the champion; the
        envelopes in the batch's order. ``out``'s events, X and champion scores are the
        champion's rows only (the shadow and the champion's drift window take those)."""
        X_canary = self.matrix(X[picked], canary.features)
        writer = self.canary_envelopes
        assert writer is not None
        # The canary's model runs in a thread beside the champion's: a tree model's prediction
        # (and its occlusion explanations, the costly part) runs without the interpreter lock,
        # so on a second core it costs the batch little wall time.
        canary_scores = self._canary_thread().submit(canary.score_batch, X_canary)
        encoded: list[tuple[bytes, bytes] | None] = [None] * len(events)
        chosen = set(picked)
        kept = [i for i in range(len(events)) if i not in chosen]
        if kept:
            champion_events = [events[i] for i in kept]
            X_kept = X[kept]
            X_champion = self.matrix(X_kept, self.model.features)
            scores = self.model.score_batch(X_champion)
            for i, pair in zip(
                kept, self.envelopes.encode(champion_events, X_champion, scores), strict=True
            ):
                encoded[i] = pair
            out.events, out.X, out.champion = champion_events, X_kept, scores
            out.event_ts = [event_ts[i] for i in kept]
        canary_events = [events[i] for i in picked]
        for i, pair in zip(
            picked, writer.encode(canary_events, X_canary, canary_scores.result()), strict=True
        ):
            encoded[i] = pair
        out.canary_scored = len(picked)
        out.scores = cast(list[tuple[bytes, bytes]], encoded)  # every row is filled

    def _canary_thread(self) -> ThreadPoolExecutor:
        """The thread the canary's model scores in (started with the first canary batch)."""
        if self._canary_pool is None:
            self._canary_pool = ThreadPoolExecutor(
                1, thread_name_prefix="canary", initializer=one_native_thread
            )
        return self._canary_pool

    def flush(self) -> int:
        """Write the changed states back (tests, tools: the worker flushes at checkpoints)."""
        return self.states.flush()

    def use_models(self, champion: ScoringModel, extra_features: Sequence[str] = ()) -> None:
        """Score with ``champion`` from the next batch on. (Every feature is computed for every
        event, so a challenger's ``extra_features`` need nothing more.)"""
        self.model = champion
        self._writers()

    def use_canary(self, canary: ScoringModel | None, share: float = 0.0) -> None:
        """From the next batch on, ``canary`` decides for ``share`` (0-1) of customers, sticky
        by customer (:func:`~stream_app.scoring.canary.in_canary`); None or 0: the champion
        decides for everyone."""
        if canary is None or share <= 0.0:
            self.canary, self.canary_share = None, 0.0
        else:
            self.canary, self.canary_share = canary, min(1.0, share)
        self._writers()

    def _writers(self) -> None:
        """The envelope writers of the champion's and the canary's routes."""
        canary = self.canary
        canary_version = canary.version if canary is not None else None
        champion = self.model
        self.envelopes = EnvelopeWriter(
            champion, self.emit_features, CHAMPION_ROUTE, champion.version, canary_version
        )
        self.canary_envelopes = (
            EnvelopeWriter(
                canary, self.emit_features, CANARY_ROUTE, champion.version, canary_version
            )
            if canary is not None
            else None
        )

    @staticmethod
    def matrix(X: np.ndarray, features: Sequence[str]) -> np.ndarray:
        """The columns of ``X`` (``FEATURE_NAMES`` order) that a model with ``features`` needs."""
        return X if tuple(features) == FEATURE_NAMES else X[:, feature_index(features)]

    def eviction_horizon(self, partition: int) -> float:
        """The event time that terminal state on input ``partition`` may be evicted relative to.

        With replay floors (the worker): :meth:`floor_horizon` as it was at the input
        partition's last committed offset (-inf before its first commit). Every forward after
        that offset, and every forward the customer stage may still send again after a crash of
        its own, comes at or after it less the lateness: nothing their windows need is evicted,
        however far ahead of them the recovered state is. Without floors:
        :meth:`time_horizon`.
        """
        floors = self.floors
        if floors is None:
            return self.time_horizon(partition)
        return floors.partition_floor(partition)

    def floor_horizon(self, partition: int) -> float:
        """The least replay floor the transactions partitions announced in the forwards taken
        from input ``partition`` so far: once every one has announced one, the lowest of those
        within ``max_source_skew_s`` of the highest (an idle or stuck partition must not let
        state grow without bound); until then the highest less ``max_source_skew_s``. -inf when
        none has announced one."""
        announced = self._source_floor.get(partition)
        if not announced:
            return float("-inf")
        top = max(announced.values())
        valve = top - self.max_source_skew_s
        if len(announced) < self.source_partitions:
            return valve
        return min(f for f in announced.values() if f >= valve)

    def time_horizon(self, partition: int) -> float:
        """The eviction horizon from event times alone (no commits: one pass over a stream).

        The partition's low watermark (the least advanced transactions partition's newest event
        time among the records it carried) once every transactions partition has been seen on
        it, but never more than ``max_source_skew_s`` behind its newest: an idle or stuck
        partition must not let state grow without bound. Unknown partitions give -inf.
        """
        seen = self._source_time.get(partition)
        if not seen:
            return float("-inf")
        newest = max(seen.values())
        watermark = min(seen.values()) if len(seen) >= self.source_partitions else float("-inf")
        return max(watermark, newest - self.max_source_skew_s)

    def label_horizon(self, partition: int) -> float:
        """Labels on input ``partition`` for events at or before this time are for unknown events
        when the terminal does not hold them; later ones may have arrived before their event.

        An event that old is gone either way: either the state would evict it by now (the
        eviction horizon minus the retention), or every transactions partition has brought this
        input partition events more than the allowed lateness newer, so it would have come
        before them (a transactions partition carries its events in event-time order up to the
        lateness: the order publishers produce, which the customer stage enforces per customer).
        Nothing seen yet gives -inf: every label may still be early.
        """
        seen = self._source_time.get(partition)
        if not seen:
            return float("-inf")
        evicted = self.eviction_horizon(partition) - self.retention.terminal_s
        if len(seen) < self.source_partitions:
            return evicted
        return max(evicted, min(seen.values()) - self.retention.lateness_s)

    def _label(self, record: RecordLike, label: Label, out: ScoringOutput) -> None:
        """Apply one label."""
        terminal_id = label.terminal_id
        if record.key != terminal_id.encode():
            out.dead_letters.append(
                DeadLetter(record, key_rejection(record.key, "terminal_id", terminal_id, "labels"))
            )
            return
        if routed_away(self.label_routing, record, terminal_id.encode(), out):
            return
        state = self.states.get(terminal_id, record.partition)
        mismatch = label_mismatch(state, label)
        if mismatch is not None:
            out.dead_letters.append(DeadLetter(record, mismatch))
            return
        if state.apply_label(label.ts, label.event_id, label.label, keep_pending=False):
            out.labels.applied += 1
        elif label.ts > self.label_horizon(record.partition):
            state.apply_label(label.ts, label.event_id, label.label)  # early: a fraud one waits
            out.labels.pending_or_unknown += 1
        else:
            out.dead_letters.append(
                DeadLetter(
                    record,
                    Rejection(
                        Reason.UNKNOWN_EVENT,
                        f"No transaction {label.event_id!r} at {label.event_time} on terminal "
                        f"{terminal_id!r}, and it can no longer arrive (the stream is past its "
                        "time).",
                    ),
                )
            )
            return
        self.states.changed(terminal_id, record.partition)


def label_mismatch(state: TerminalState, label: Label) -> Rejection | None:
    """Why ``label`` does not fit the transaction its terminal holds under its id: another
    customer, or another event time; None when it fits or the id is not held."""
    held = state.customer_of(label.ts, label.event_id)
    if held is not None and held != label.customer_id:
        return Rejection(
            Reason.LABEL_MISMATCH,
            f"The label's customer_id {label.customer_id!r} is not the customer "
            f"{held!r} of transaction {label.event_id!r} at {label.event_time}; not applied.",
        )
    if held is None and not state.holds(label.ts, label.event_id):
        when = state.time_of(label.event_id)
        if when is not None:
            return Rejection(
                Reason.LABEL_MISMATCH,
                f"The label names transaction {label.event_id!r} at {label.event_time}; "
                f"terminal {label.terminal_id!r} holds it at {when:.3f} (epoch s); not applied.",
            )
    return None


_INDEX_CACHE: dict[tuple[str, ...], list[int]] = {}


def feature_index(features: Sequence[str]) -> list[int]:
    """The ``FEATURE_NAMES`` columns of ``features``."""
    key = tuple(features)
    index = _INDEX_CACHE.get(key)
    if index is None:
        index = _INDEX_CACHE[key] = [FEATURE_NAMES.index(name) for name in key]
    return index
