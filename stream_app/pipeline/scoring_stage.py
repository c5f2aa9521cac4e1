"""Stage 2, on the terminal-keyed topics: terminal windows, labels, and micro-batch scoring.

The stage reads both the repartitioned transactions (``transactions.by-terminal``) and
``labels`` (keyed by terminal), so a terminal's transactions and labels meet in one table
partition. The worker's batch engine hands it their records merged in event-time order (a label
at the time it became known, before a transaction at that same instant). Per micro-batch: labels
update fraud flags; each transaction updates its terminal's window (idempotent by source offset)
and gets its full feature vector; then the whole batch is scored by **one** ``predict_proba``
and turned into envelopes. With a canary on (:meth:`ScoringStage.use_canary`), the rows of the
canary's customers are scored by the canary instead (its own ``predict_proba``, for them only),
and their envelopes say ``route: canary``.

A label whose transaction the terminal does not hold is either early (its transaction may still
come: a fraud label waits pending) or for an unknown event (dead letter ``unknown_event``): see
:meth:`~stream_app.pipeline.terminal_horizons.TerminalHorizons.label_horizon`. Why a record is
dead-lettered: :mod:`stream_app.pipeline.terminal_rejections`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any, cast

import numpy as np

from stream_app.features.definitions import FEATURE_NAMES
from stream_app.features.retention import Retention
from stream_app.features.state_layout import source_id
from stream_app.features.terminal_state import TerminalState
from stream_app.io.codecs import Label, decode_label
from stream_app.io.deadletter import Reason, Rejection
from stream_app.io.records import RecordLike
from stream_app.pipeline.customer_stage import (
    DeadLetter,
    key_rejection,
    now_s,
    processing_error,
    routed_away,
)
from stream_app.pipeline.floors import CommitFloors
from stream_app.pipeline.forward import Forward, ForwardError, decode_forward
from stream_app.pipeline.routing import Routing
from stream_app.pipeline.scoring_output import ScoringOutput
from stream_app.pipeline.state_store import StateStore
from stream_app.pipeline.terminal_horizons import TerminalHorizons
from stream_app.pipeline.terminal_rejections import (
    forward_rejection,
    label_mismatch,
    reused_forward,
)
from stream_app.scoring.canary import CANARY_ROUTE, CHAMPION_ROUTE, canary_rows
from stream_app.scoring.envelope import EnvelopeWriter
from stream_app.scoring.model import ScoringModel

INF = float("inf")

Item = Forward | Label | Rejection


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
        replay floors the worker's commits update (:meth:`TerminalHorizons.eviction_horizon`);
        None (offline, in tools, in tests of one pass) evicts from the newest event times seen."""
        self.states: StateStore[TerminalState] = (
            states if isinstance(states, StateStore) else StateStore(TerminalState, states)
        )
        self.model = model
        self.emit_features = emit_features
        self.canary: ScoringModel | None = None
        self.canary_share = 0.0
        self._writers()
        self.horizons = TerminalHorizons(retention, source_partitions, max_source_skew_s, floors)
        self.eviction_horizon = self.horizons.eviction_horizon
        self.label_horizon = self.horizons.label_horizon
        self.floors = floors
        self.retention = retention
        self.labels_topic = labels_topic
        self.max_message_bytes = max_message_bytes
        self.topic_index = dict(topic_index or {})
        self.label_routing = label_routing
        self.forward_routing = forward_routing
        rerouted = label_routing.reroute_topic if label_routing is not None else None
        self.label_topics = frozenset([labels_topic] + ([rerouted] if rerouted else []))
        # The newest forward event time taken per input partition since the last reset: a label
        # known at or before it comes late (see LabelCounts.late).
        self.newest_forward: dict[int, float] = {}

    def forget_order(self) -> None:
        """The partitions are read again from their commits (a rebalance): start
        :attr:`newest_forward` afresh."""
        self.newest_forward.clear()

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
        horizons = self.horizons
        source_time = horizons.source_time
        source_floor = horizons.source_floor
        newest_forward = self.newest_forward
        floors = self.floors
        taken: dict[tuple[str, int], int] = {}  # forwards' (topic, partition) -> offset end
        horizons_of: dict[int, float] = {}  # input partition -> eviction horizon, this batch
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
                    if ts > newest_forward.get(partition, -INF):
                        newest_forward[partition] = ts
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
                    horizon = horizons_of.get(partition)
                    if horizon is None:
                        horizon = horizons_of[partition] = horizons.eviction_horizon(partition)
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
                floors.mark(topic, partition, end, horizons.floor_horizon(partition))
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
        canary_pairs = writer.encode(
            [events[i] for i in picked], X_canary, canary.score_batch(X_canary)
        )
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
        for i, pair in zip(picked, canary_pairs, strict=True):
            encoded[i] = pair
        out.canary_scored = len(picked)
        out.scores = cast(list[tuple[bytes, bytes]], encoded)  # every row is filled

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
        """The envelope writers of the champion's and the canary's routes (each names both
        versions)."""
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
        if label.label_ts <= self.newest_forward.get(record.partition, -INF):
            # Appended after a transaction it should have come before (a label feed that lags,
            # or a producer that batches its topics apart): the features served meanwhile
            # lacked it, where the offline builder has it. Counted, then applied as usual.
            out.labels.late += 1
        state = self.states.get(terminal_id, record.partition)
        mismatch = label_mismatch(state, label)
        if mismatch is not None:
            out.dead_letters.append(DeadLetter(record, mismatch))
            return
        if state.apply_label(label.ts, label.event_id, label.label, keep_pending=False):
            out.labels.applied += 1
        elif label.ts > self.horizons.label_horizon(record.partition):
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


_INDEX_CACHE: dict[tuple[str, ...], list[int]] = {}


def feature_index(features: Sequence[str]) -> list[int]:
    """The ``FEATURE_NAMES`` columns of ``features``."""
    key = tuple(features)
    index = _INDEX_CACHE.get(key)
    if index is None:
        index = _INDEX_CACHE[key] = [FEATURE_NAMES.index(name) for name in key]
    return index
