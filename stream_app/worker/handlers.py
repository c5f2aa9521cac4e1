"""The stages' handlers: what the engine calls with each micro-batch, and where its output goes.

Stage 1 (customers): customer windows, forwards to ``transactions.by-terminal``, dead letters.
Stage 2 (scoring): terminal windows and labels, one ``predict_proba`` per micro-batch, envelopes
to ``scores``; the champion's rows to the challenger in shadow and to its drift monitor. A handler
runs a batch without yielding to the event loop: a model swap lands between two batches.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from stream_app.config import Settings
from stream_app.logs import log_scores, score_log
from stream_app.monitoring.metrics import WorkerMetrics, latencies_from_ms
from stream_app.monitoring.misroutes import MisrouteReport
from stream_app.pipeline.buffers import Batch
from stream_app.pipeline.customer_stage import CustomerStage
from stream_app.pipeline.scoring_stage import ScoringStage
from stream_app.scoring.shadow import ShadowJob, ShadowScorer, sample_rows
from stream_app.worker.live import LiveModels
from stream_app.worker.outputs import Outputs
from stream_app.worker.stats import WorkerStats


def decode_transactions(stage: CustomerStage) -> Any:
    """The customer stage's decoder, with each item's event time."""
    return lambda records: _decoded(stage.decode(records), _tx_time)


def decode_scoring(stage: ScoringStage) -> Any:
    """The scoring stage's decoder, with each item's time (see :func:`_scoring_time`)."""
    return lambda records: _decoded(stage.decode(records), _scoring_time)


@dataclass(eq=False)
class CustomerHandler:
    """Stage 1's output: forwards by terminal, reroutes, dead letters."""

    stage: CustomerStage
    outputs: Outputs
    misroutes: MisrouteReport
    metrics: WorkerMetrics
    stats: WorkerStats

    def __call__(self, batch: Batch) -> None:
        """Customer windows, forwards to the terminal stage, dead letters."""
        out = self.stage.process(batch.records, batch.items)
        sink = self.outputs.sink
        sink.send_timed(
            self.outputs.topics.by_terminal, [(f.key, f.value, f.timestamp) for f in out.forwards]
        )
        if out.misrouted:
            self.misroutes.report(out.misrouted)
            self.outputs.send_reroutes(out.reroutes)
        if out.dead_letters:
            self.outputs.send_dead_letters(out.dead_letters)
        sink.poll()
        self.stats.add(
            consumed=len(batch), replayed=out.replayed, dead_letters=len(out.dead_letters)
        )
        self.metrics.batch("customer", len(batch), out.replayed)


@dataclass(eq=False)
class ScoringHandler:
    """Stage 2's output: envelopes, reroutes, dead letters; the shadow's and drift's input."""

    settings: Settings
    stage: ScoringStage
    live: LiveModels
    outputs: Outputs
    misroutes: MisrouteReport
    metrics: WorkerMetrics
    stats: WorkerStats

    def __call__(self, batch: Batch) -> None:
        """Terminal windows and labels, one predict_proba, envelopes, shadow, drift."""
        live, stage, metrics = self.live, self.stage, self.metrics
        model, shadow, drift = live.champion, live.shadow, live.drift
        out = stage.process(batch.records, batch.items)
        sink = self.outputs.sink
        sink.send_many(self.outputs.topics.scores, out.scores)
        if out.misrouted:
            self.misroutes.report(out.misrouted)
            self.outputs.send_reroutes(out.reroutes)
        if out.dead_letters:
            self.outputs.send_dead_letters(out.dead_letters)
        if out.X is not None and out.champion is not None:
            if score_log.isEnabledFor(logging.DEBUG):
                log_scores(score_log, out.events, out.champion, model.version)
            if shadow is not None:
                self.offer_shadow(shadow, out.events, out.X, out.champion, model.version)
            if drift is not None:
                records = drift.observe(
                    stage.matrix(out.X, model.features),
                    out.champion.score.tolist(),
                    out.event_ts,
                )
                if records:
                    self.outputs.publish_drift(records, model.version)
        sink.poll()
        self.stats.add(
            scored=len(out.scores),
            dead_letters=len(out.dead_letters),
            labels_applied=out.labels.applied,
            labels_unmatched=out.labels.pending_or_unknown,
        )
        metrics.batch("scoring", len(batch), out.replayed)
        metrics.scored_batch(
            model.version,
            len(out.scores) - out.canary_scored,
            out.scoring_s if out.scores else None,
            latencies_from_ms(out.arrived_ms) if out.scores else None,
        )
        if out.canary_scored:
            canary_model = stage.canary
            if canary_model is not None:
                metrics.scored_batch(canary_model.version, out.canary_scored)
        metrics.label_outcomes(out.labels.applied, out.labels.pending_or_unknown, out.labels.late)

    def offer_shadow(
        self, shadow: ShadowScorer, events: Any, X: Any, champion_scores: Any, version: str
    ) -> None:
        """The champion's rows of a batch to the challenger (the canary's customers, which the
        challenger decided for already, are not among them)."""
        rows = sample_rows([e.customer_id for e in events], self.settings.shadow_sample)
        X_challenger = self.stage.matrix(X, shadow.challenger.features)
        canary = self.stage.canary
        canary_version = canary.version if canary is not None else None
        if rows is None:
            shadow.offer(
                ShadowJob.of(events, X_challenger, version, champion_scores, canary_version)
            )
            return
        self.live.shadow_counts.unsampled += len(events) - len(rows)
        if rows:
            shadow.offer(
                ShadowJob(
                    [events[i] for i in rows],
                    X_challenger[rows],
                    version,
                    champion_scores.score[rows],
                    champion_scores.decision[rows],
                    canary_version,
                )
            )


def _tx_time(item: Any) -> float | None:
    return getattr(item, "ts", None)


def _scoring_time(item: Any) -> float | None:
    """A forward at its event time, a label at the time it became known."""
    label_ts = getattr(item, "label_ts", None)
    return label_ts if label_ts is not None else getattr(item, "ts", None)


def _decoded(items: list[Any], time_of: Any) -> tuple[list[Any], list[float | None]]:
    return items, [time_of(item) for item in items]
