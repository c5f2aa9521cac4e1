"""Prometheus metrics of one worker, in a registry of its own.

Each app gets its own :class:`~prometheus_client.CollectorRegistry` (never the process-global
one), so several apps built in one test process do not clash. Seconds are the unit everywhere.

Metric (labels)                                   what
================================================  ==========================================
``stream_app_events_consumed_total`` (stage)      records read by a stage (customer, scoring)
``stream_app_events_scored_total`` (model_version) score envelopes produced
``stream_app_dead_letters_total`` (reason)        records sent to the DLQ, by reason code
``stream_app_labels_total`` (outcome)             labels ``applied`` or ``unmatched``
``stream_app_labels_late_total``                  labels taken after a transaction they precede
``stream_app_replayed_total`` (stage)             records seen before a restart (idempotent)
``stream_app_end_to_end_latency_seconds``         transaction's Kafka timestamp → scored
``stream_app_scoring_seconds``                    a batch's score + envelope step
``stream_app_batch_size`` (stage)                 records per micro-batch
``stream_app_table_keys`` (table)                 keys in a state table (refreshed on scrape)
``stream_app_model_info`` (version, sha256)       the champion
``stream_app_shadow_total`` (outcome)             challenger events: agree, disagree, skipped
``stream_app_drift_records_total`` (statistic)    drift records published
``stream_app_drift_alerts_total`` (statistic,     drift records with ``alert`` set
subject)
``stream_app_drift_value`` (statistic, subject)   the latest value of each drift statistic
``stream_app_drift_alerting`` (statistic,         1 when that latest record alerted, else 0
subject)
``stream_app_challenger_info`` (version, sha256)  the shadow challenger, when there is one
``stream_app_consumer_lag`` (topic, partition)    records between the log end and the worker's
                                                  read position (refreshed on scrape)
``stream_app_last_score_timestamp_seconds``       Unix time of the latest batch of envelopes (the
                                                  worker's start until the first one)
================================================  ==========================================

The hot path updates per batch: a few counter increments and one ``observe`` per histogram. The
end-to-end latency has one value per scored event; :class:`BatchHistogram` buckets the whole
batch with numpy (one ``searchsorted`` + ``bincount``) instead of one ``observe`` call per event.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sized
from typing import Any

import numpy.typing as npt
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from stream_app.io.deadletter import Reason
from stream_app.monitoring.batch_histogram import BatchHistogram, latencies_from_ms
from stream_app.monitoring.model_metrics import ModelMetrics

__all__ = [
    "BATCH_SIZE_BUCKETS",
    "CONTENT_TYPE_LATEST",
    "LATENCY_BUCKETS",
    "SCORING_BUCKETS",
    "STAGES",
    "BatchHistogram",
    "WorkerMetrics",
    "latencies_from_ms",
]

#: End-to-end latency buckets (seconds), 5 ms to 30 s.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
#: Score + envelope step of one batch (seconds), 0.5 ms to 2.5 s.
SCORING_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
#: Records per micro-batch.
BATCH_SIZE_BUCKETS: tuple[float, ...] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
#: The two stages of the worker.
STAGES: tuple[str, ...] = ("customer", "scoring")
LABEL_OUTCOMES: tuple[str, ...] = ("applied", "unmatched")


class WorkerMetrics(ModelMetrics):
    """Every metric of one worker, registered in ``self.registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.consumed = Counter(
            "stream_app_events_consumed",
            "Records consumed by a stage.",
            ["stage"],
            registry=r,
        )
        self.scored = Counter(
            "stream_app_events_scored",
            "Score envelopes produced, by model version.",
            ["model_version"],
            registry=r,
        )
        self.dead_letters = Counter(
            "stream_app_dead_letters",
            "Records sent to the dead-letter topic, by reason code.",
            ["reason"],
            registry=r,
        )
        self.labels = Counter(
            "stream_app_labels",
            "Fraud labels consumed: applied to a known transaction, or unmatched (pending or "
            "unknown event).",
            ["outcome"],
            registry=r,
        )
        self.labels_late = Counter(
            "stream_app_labels_late",
            "Labels taken after a transaction of the same or a later event time on their "
            "partition: scores computed meanwhile lacked them, where offline features have them "
            "(a label feed that lags, or a producer that batches its topics apart).",
            registry=r,
        )
        self.replayed = Counter(
            "stream_app_replayed",
            "Records already applied before a restart (recomputed, state unchanged).",
            ["stage"],
            registry=r,
        )
        self.latency = BatchHistogram(
            "stream_app_end_to_end_latency_seconds",
            "Seconds from the transaction's Kafka record timestamp to its score.",
            LATENCY_BUCKETS,
        )
        r.register(self.latency)
        self.scoring_seconds = Histogram(
            "stream_app_scoring_seconds",
            "Seconds of a micro-batch's score + envelope step (predict_proba, explanations, "
            "envelope encoding).",
            buckets=SCORING_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "stream_app_batch_size",
            "Records per micro-batch.",
            ["stage"],
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.table_keys = Gauge(
            "stream_app_table_keys",
            "Keys in a state table (active partitions of this worker).",
            ["table"],
            registry=r,
        )
        self._scored: dict[str, Any] = {}
        self._register_model_families(r)
        self.drift_records = Counter(
            "stream_app_drift_records",
            "Drift records published, by statistic.",
            ["statistic"],
            registry=r,
        )
        self.drift_alerts = Counter(
            "stream_app_drift_alerts",
            "Drift records with the alert flag set, by statistic and subject.",
            ["statistic", "subject"],
            registry=r,
        )
        self.drift_value = Gauge(
            "stream_app_drift_value",
            "Latest value of a drift statistic (PSI, KS distance, detector estimate).",
            ["statistic", "subject"],
            registry=r,
        )
        self.drift_alerting = Gauge(
            "stream_app_drift_alerting",
            "1 when the latest record of this statistic and subject alerted, else 0.",
            ["statistic", "subject"],
            registry=r,
        )
        self.stalled = Gauge(
            "stream_app_stalled",
            "1 while that part of the worker has work and makes no progress (a stage, the "
            "outputs, the checkpoints, the challenger); see /readyz for the reason.",
            ["what"],
            registry=r,
        )
        self.input_skipped = Counter(
            "stream_app_input_skipped",
            "Records of an input partition deleted (retention) before the worker read them.",
            ["topic", "partition"],
            registry=r,
        )
        self.misrouted_records = Counter(
            "stream_app_misrouted_records",
            "Input records found on another partition than their key's (a producer with another "
            "partitioner), rerouted or dead-lettered (STREAM_APP_MISROUTED_KEYS).",
            ["topic"],
            registry=r,
        )
        self.consumer_lag = Gauge(
            "stream_app_consumer_lag",
            "Records between a partition's log end and the worker's read position.",
            ["topic", "partition"],
            registry=r,
        )
        self.last_score = Gauge(
            "stream_app_last_score_timestamp_seconds",
            "Unix time at which this worker last produced score envelopes (its start until the "
            "first): time() minus it is how long no payment was scored.",
            registry=r,
        )
        self.last_score.set(time.time())

        # Children resolved once: ``labels()`` takes a lock and a dict lookup per call.
        self._consumed = {s: self.consumed.labels(stage=s) for s in STAGES}
        self._replayed = {s: self.replayed.labels(stage=s) for s in STAGES}
        self._batch = {s: self.batch_size.labels(stage=s) for s in STAGES}
        self._labels = {o: self.labels.labels(outcome=o) for o in LABEL_OUTCOMES}
        # The reason list is closed: export every series (at 0) so rate() works from the start.
        self._dead = {
            reason.value: self.dead_letters.labels(reason=reason.value) for reason in Reason
        }
        self._table_refreshed = 0.0

    # --- per batch ------------------------------------------------------------------------

    def batch(self, stage: str, size: int, replayed: int = 0) -> None:
        """One micro-batch of ``size`` records read by ``stage``."""
        if size:
            self._consumed[stage].inc(size)
            self._batch[stage].observe(size)
        if replayed:
            self._replayed[stage].inc(replayed)

    def dead(self, reasons: Mapping[str, int]) -> None:
        """Dead letters of a batch, counted by reason code."""
        for reason, n in reasons.items():
            child = self._dead.get(reason)
            if child is None:  # not a Reason value: still counted, under its own label
                child = self._dead[reason] = self.dead_letters.labels(reason=reason)
            child.inc(n)

    def scored_batch(
        self,
        model_version: str,
        scored: int,
        scoring_seconds: float | None = None,
        latencies_s: npt.ArrayLike | None = None,
    ) -> None:
        """The scoring result of a batch: envelope count, step time, end-to-end latencies."""
        if scored:
            self._scored_child(model_version).inc(scored)
            self.last_score.set(time.time())
        if scoring_seconds is not None:
            self.scoring_seconds.observe(scoring_seconds)
        if latencies_s is not None:
            self.latency.observe_many(latencies_s)

    def label_outcomes(self, applied: int, unmatched: int, late: int = 0) -> None:
        """Labels of a batch: applied to a transaction, or unmatched; and how many came late."""
        if applied:
            self._labels["applied"].inc(applied)
        if unmatched:
            self._labels["unmatched"].inc(unmatched)
        if late:
            self.labels_late.inc(late)

    def drift(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Count published drift records and their alerts; keep each statistic's latest value."""
        for record in records:
            statistic, subject = record["statistic"], record["subject"]
            self.drift_records.labels(statistic=statistic).inc()
            value = record.get("value")
            if value is not None:
                self.drift_value.labels(statistic=statistic, subject=subject).set(value)
            self.drift_alerting.labels(statistic=statistic, subject=subject).set(
                1 if record["alert"] else 0
            )
            # Created at 0 with the first record, so increase() also counts the first alert.
            alerts = self.drift_alerts.labels(statistic=statistic, subject=subject)
            if record["alert"]:
                alerts.inc()

    # --- scrape time ----------------------------------------------------------------------

    def refresh_table_keys(self, tables: Mapping[str, Sized], min_interval_s: float = 0.0) -> None:
        """Set ``stream_app_table_keys`` from ``len(table)``, at most every ``min_interval_s``.

        ``len`` of a memory table is O(1); of a RocksDB table it walks the keys, hence the
        interval.
        """
        now = time.monotonic()
        if self._table_refreshed and now - self._table_refreshed < min_interval_s:
            return
        self._table_refreshed = now
        for name, table in tables.items():
            self.table_keys.labels(table=name).set(len(table))

    def set_stalled(self, stalled: Mapping[str, bool]) -> None:
        """1 for each part that is stalled now, 0 for the others named."""
        for what, is_stalled in stalled.items():
            self.stalled.labels(what=what).set(1 if is_stalled else 0)

    def skipped(self, topic: str, partition: int, records: int) -> None:
        """``records`` of ``topic[partition]`` were deleted before the worker read them."""
        self.input_skipped.labels(topic=topic, partition=str(partition)).inc(records)

    def misrouted(self, topic: str, records: int) -> None:
        """``records`` of ``topic`` were on the wrong partition for their key."""
        self.misrouted_records.labels(topic=topic).inc(records)

    def set_lag(self, lags: Mapping[tuple[str, int], int]) -> None:
        """Replace ``stream_app_consumer_lag`` with ``lags`` ((topic, partition) → records);
        partitions no longer assigned disappear."""
        self.consumer_lag.clear()
        for (topic, partition), lag in sorted(lags.items()):
            self.consumer_lag.labels(topic=topic, partition=str(partition)).set(lag)

    def render(self) -> bytes:
        """The registry in the Prometheus text format (``CONTENT_TYPE_LATEST``)."""
        return generate_latest(self.registry)
