"""Stage 2, on the terminal-keyed topics: terminal windows, labels, and micro-batch scoring.

One agent reads both the repartitioned transactions (``transactions.by-terminal``) and
``labels`` (keyed by terminal), so a terminal's transactions and labels meet in one table
partition. Per micro-batch: labels update fraud flags; each transaction updates its terminal's
window (idempotent by source offset) and gets its full feature vector; then the whole batch is
scored by **one** ``predict_proba`` and turned into envelopes.

A label whose transaction the terminal does not hold is either early (its transaction may still
come: a fraud label waits pending) or for an unknown event (dead letter ``unknown_event``): see
:meth:`ScoringStage.label_horizon`.
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from stream_app.features.state import Retention, TerminalState
from stream_app.io.codecs import decode_label
from stream_app.io.deadletter import Reason, Rejection
from stream_app.pipeline.customer_stage import (
    DeadLetter,
    InputRecord,
    StateWriter,
    key_rejection,
    write_state,
)
from stream_app.scoring.envelope import ScoredEvent, build_envelopes
from stream_app.scoring.model import BatchScores, ScoringModel


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
    events: list[ScoredEvent] = field(default_factory=list)
    event_ts: list[float] = field(default_factory=list)  # event times, epoch seconds
    X: np.ndarray | None = None  # feature matrix in the stage's ``columns`` order
    champion: BatchScores | None = None


class ScoringStage:
    """Stage-2 logic over a table (terminal id → state dict) and a champion model."""

    def __init__(
        self,
        table: MutableMapping[str, Any],
        model: ScoringModel,
        retention: Retention,
        labels_topic: str,
        max_message_bytes: int,
        emit_features: bool = False,
        writer: StateWriter = write_state,
        source_partitions: int = 1,
        max_source_skew_s: float = 7 * 86_400.0,
        extra_features: Sequence[str] = (),
    ) -> None:
        self.table = table
        self.model = model
        self.columns: tuple[str, ...] = ()
        self.use_models(model, extra_features)
        self.source_partitions = source_partitions
        self.max_source_skew_s = max_source_skew_s
        # Newest event time seen per (input partition, transactions partition). A terminal's
        # records all arrive on one input partition, interleaved from every customer partition;
        # each of those sub-streams is in event-time order, so the least advanced one is the
        # low watermark that bounds eviction for the terminals of that input partition.
        self._source_time: dict[int, dict[int, float]] = {}
        self.writer = writer
        self.retention = retention
        self.labels_topic = labels_topic
        self.max_message_bytes = max_message_bytes
        self.emit_features = emit_features

    def process(self, records: Sequence[InputRecord]) -> ScoringOutput:
        """Process one micro-batch in order and score its transactions together."""
        out = ScoringOutput()
        touched: dict[str, TerminalState] = {}
        last: dict[str, InputRecord] = {}
        events: list[ScoredEvent] = []
        rows: list[list[float]] = []
        names = self.columns
        event_ts: list[float] = []
        for record in records:
            try:
                if record.position.topic == self.labels_topic:
                    terminal_id = self._label(record, touched, out)
                    if terminal_id is not None:
                        last[terminal_id] = record
                    continue
                fwd = orjson.loads(record.value or b"")
                state = self._state(fwd["terminal_id"], touched)
                last[fwd["terminal_id"]] = record
                ts = fwd["ts"]
                partition = record.position.partition
                seen = self._source_time.setdefault(partition, {})
                source_partition = fwd["source"][1]
                if ts > seen.get(source_partition, float("-inf")):
                    seen[source_partition] = ts
                if not state.apply(
                    ts,
                    fwd["event_id"],
                    record.position.offset,
                    self.retention.terminal_s,
                    horizon_end=self.eviction_horizon(partition),
                ):
                    out.replayed += 1
                values: dict[str, float] = fwd["features"]
                values.update(state.features(fwd["ts"]))
                rows.append([values[name] for name in names])
                event_ts.append(ts)
                events.append(
                    ScoredEvent(
                        fwd["event_id"],
                        fwd["customer_id"],
                        fwd["terminal_id"],
                        fwd["event_time"],
                        fwd["arrived_ms"],
                    )
                )
            except Exception as exc:  # the worker never crashes on input
                out.dead_letters.append(
                    DeadLetter(
                        record, Rejection(Reason.PROCESSING_ERROR, f"{type(exc).__name__}: {exc}")
                    )
                )
        for terminal_id, record in last.items():
            self.writer(self.table, terminal_id, touched[terminal_id].value, record)
        if rows:
            started = time.perf_counter()
            X = np.asarray(rows, dtype=np.float64)
            X_champion = self.matrix(X, self.model.features)
            scores = self.model.score_batch(X_champion)
            envelopes = build_envelopes(self.model, events, X_champion, scores, self.emit_features)
            out.scores = [
                (e.customer_id.encode(), orjson.dumps(env))
                for e, env in zip(events, envelopes, strict=True)
            ]
            out.scoring_s = time.perf_counter() - started
            out.arrived_ms = [e.arrived_ms for e in events]
            out.events, out.event_ts, out.X, out.champion = events, event_ts, X, scores
        return out

    def use_models(self, champion: ScoringModel, extra_features: Sequence[str] = ()) -> None:
        """Score with ``champion`` from the next batch on; compute ``extra_features`` (a
        challenger's) too. Columns: the champion's features first, then the others."""
        self.model = champion
        self.columns = tuple(champion.features) + tuple(
            name for name in dict.fromkeys(extra_features) if name not in champion.features
        )

    def matrix(self, X: np.ndarray, features: Sequence[str]) -> np.ndarray:
        """The columns of ``X`` (in ``columns`` order) that a model with ``features`` needs."""
        if tuple(features) == self.columns[: len(features)]:
            return X[:, : len(features)]
        index = [self.columns.index(name) for name in features]
        return X[:, index]

    def eviction_horizon(self, partition: int) -> float:
        """The event time that terminal state on input ``partition`` may be evicted relative to.

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

    def _state(self, terminal_id: str, touched: dict[str, TerminalState]) -> TerminalState:
        state = touched.get(terminal_id)
        if state is None:
            state = touched[terminal_id] = TerminalState(self.table.get(terminal_id))
        return state

    def _label(
        self, record: InputRecord, touched: dict[str, TerminalState], out: ScoringOutput
    ) -> str | None:
        """Apply one label; returns the terminal whose state it touched, if any."""
        label = decode_label(record.value, self.max_message_bytes)
        if isinstance(label, Rejection):
            out.dead_letters.append(DeadLetter(record, label))
            return None
        if record.key != label.terminal_id.encode():
            out.dead_letters.append(
                DeadLetter(
                    record, key_rejection(record.key, "terminal_id", label.terminal_id, "labels")
                )
            )
            return None
        state = self._state(label.terminal_id, touched)
        if state.apply_label(label.ts, label.event_id, label.label, keep_pending=False):
            out.labels.applied += 1
        elif label.ts > self.label_horizon(record.position.partition):
            state.apply_label(label.ts, label.event_id, label.label)  # early: a fraud one waits
            out.labels.pending_or_unknown += 1
        else:
            out.dead_letters.append(
                DeadLetter(
                    record,
                    Rejection(
                        Reason.UNKNOWN_EVENT,
                        f"No transaction {label.event_id!r} at {label.event_time} on terminal "
                        f"{label.terminal_id!r}, and it can no longer arrive (the stream is "
                        "past its time).",
                    ),
                )
            )
            return None
        return label.terminal_id
