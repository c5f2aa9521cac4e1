"""``stream-app scorecard``: join late labels to served scores and publish model quality.

Reads ``scores`` (champion envelopes), ``scores.shadow`` (challenger envelopes), ``labels``
and ``transactions`` (amounts and declared fields for the slices, customers' first transactions
for the tenure slice, read from a tenure further back than the rest) with a consumer of its own
(manual assignment, nothing committed: it never moves any group's offsets), joins them by
``event_id`` (:mod:`stream_app.monitoring.scorecard`) and every ``publish_interval_s``
publishes:

* to ``metrics``: one ``metrics_record`` per model version, route and changed period (event day,
  processing hour), an event day's with its slices' bands;
* to ``scorecard.pairs``: every joined pair once (version, route, customer, score, label, the
  slices' bands), which ``stream-app models compare`` bootstraps over customers;
* to ``drift``: per model version, river's change detector on the label error ``|label -
  score|`` for the pairs joined since the previous record.

Its join state is rebuilt on start by reading the topics from ``since`` (default: the label
horizon back from now, by broker timestamp), so a restart loses nothing the topics still hold.
With ``until_end`` it stops at the log end offsets seen at start (evaluation, tests).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from stream_app.config import Settings
from stream_app.io.codecs import decode_label
from stream_app.io.deadletter import Rejection
from stream_app.monitoring.drift import LABEL_ERROR, ChangeDetector, DetectorKind
from stream_app.monitoring.scorecard import (
    CHAMPION,
    SHADOW_ROUTE,
    JoinedPair,
    Scorecard,
    ScoreJoin,
    period_metrics,
)
from stream_app.monitoring.scorecard_metrics import ScorecardMetrics
from stream_app.monitoring.slices import Slicer

SCORES = "scores"
SHADOW = "scores.shadow"
LABELS = "labels"
TRANSACTIONS = "transactions"
METRICS = "metrics"
DRIFT = "drift"
PAIRS = "scorecard.pairs"


@dataclass
class ScorecardTotals:
    """What one run read and produced."""

    scores: int = 0
    shadow: int = 0
    labels: int = 0
    transactions: int = 0
    pair_records: int = 0
    undecodable: int = 0
    metrics_records: int = 0
    drift_records: int = 0
    per_version: dict[str, tuple[list[float], list[int]]] = field(default_factory=dict)

    def overall(self, k: int) -> dict[str, dict[str, Any]]:
        """Metrics over every joined pair, per version."""
        return {
            version: {"labels": len(y), **period_metrics(s, y, k)}
            for version, (s, y) in sorted(self.per_version.items())
        }


class LabelErrorDetectors:
    """One change detector on ``|label - score|`` per model version, with the span it saw."""

    def __init__(self, kind: DetectorKind) -> None:
        self.kind: DetectorKind = kind
        self.detectors: dict[str, ChangeDetector] = {}
        self.spans: dict[str, list[float]] = {}

    def update(self, pair: JoinedPair) -> None:
        detector = self.detectors.get(pair.version)
        if detector is None:
            detector = self.detectors[pair.version] = ChangeDetector(
                self.kind, LABEL_ERROR, pair.version
            )
        detector.update(abs(pair.label - pair.score))
        span = self.spans.setdefault(pair.version, [math.inf, -math.inf])
        span[0] = min(span[0], pair.event_ts)
        span[1] = max(span[1], pair.event_ts)

    def records(self) -> list[dict[str, Any]]:
        out = []
        for version, (start, end) in sorted(self.spans.items()):
            out.append(self.detectors[version].record(start, end))
        self.spans.clear()
        return out


class ScorecardService:
    """The join, the scorecard and the label-error detectors behind one ``handle`` call."""

    def __init__(
        self,
        max_message_bytes: int = 65_536,
        horizon_s: float = 14 * 86_400.0,
        k: int = 100,
        detector: DetectorKind = "adwin",
        metrics: ScorecardMetrics | None = None,
        slicer: Slicer | None = None,
    ) -> None:
        self.max_message_bytes = max_message_bytes
        self.metrics = metrics
        self.k = k
        self.join = ScoreJoin(horizon_s)
        self.card = Scorecard(k)
        self.detectors = LabelErrorDetectors(detector)
        self.totals = ScorecardTotals()
        self.slicer = slicer if slicer is not None else Slicer()
        self.transactions = TransactionFields(horizon_s, self.slicer)
        self.pairs: list[dict[str, Any]] = []  # joined since the last records() call

    def handle(self, kind: str, value: bytes | None) -> None:
        """One record of ``scores``, ``scores.shadow`` or ``labels`` (never raises on input)."""
        try:
            if kind == LABELS:
                label = decode_label(value, self.max_message_bytes)
                if isinstance(label, Rejection):
                    self._undecodable()
                    return
                self.totals.labels += 1
                if self.metrics is not None:
                    self.metrics.read("labels")
                pairs = self.join.add_label(label.event_id, label.label, label.ts)
            elif kind == TRANSACTIONS:
                tx = orjson.loads(value or b"")
                event_ts = datetime.fromisoformat(tx["event_time"]).timestamp()
                self.transactions.add(tx, event_ts)
                self.totals.transactions += 1
                return
            else:
                record = orjson.loads(value or b"")
                envelope = record["challenger"] if kind == SHADOW else record
                event_ts = datetime.fromisoformat(envelope["event_time"]).timestamp()
                version, score = envelope["model_version"], float(envelope["score"])
                route = envelope.get("route") or (SHADOW_ROUTE if kind == SHADOW else CHAMPION)
                if kind == SHADOW:
                    self.totals.shadow += 1
                else:
                    self.totals.scores += 1
                if self.metrics is not None:
                    self.metrics.read("shadow" if kind == SHADOW else "scores")
                self.card.scored(version, event_ts, envelope["scored_at"], str(route))
                pairs = self.join.add_score(
                    envelope["event_id"],
                    version,
                    score,
                    event_ts,
                    envelope["scored_at"],
                    route=str(route),
                    customer_id=str(envelope.get("customer_id", "")),
                    extra=self.slicer.envelope_fields(envelope),
                )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            self._undecodable()
            return
        for pair in pairs:
            bands = self.slicer.bands(
                pair.customer_id,
                pair.event_ts,
                self.transactions.get(pair.event_id),
                pair.extra or {},
            )
            self.card.joined(pair, bands)
            self.pairs.append(
                {
                    "model_version": pair.version,
                    "route": pair.route,
                    "event_id": pair.event_id,
                    "customer_id": pair.customer_id,
                    "event_time": datetime.fromtimestamp(pair.event_ts, UTC).isoformat(),
                    "score": pair.score,
                    "label": pair.label,
                    "slices": bands,
                }
            )
            self.detectors.update(pair)
            scores, labels = self.totals.per_version.setdefault(pair.version, ([], []))
            scores.append(pair.score)
            labels.append(pair.label)
            if self.metrics is not None:
                self.metrics.joined_pairs(pair.version)

    def _undecodable(self) -> None:
        self.totals.undecodable += 1
        if self.metrics is not None:
            self.metrics.read("undecodable")

    def records(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(metrics records, drift records) since the previous call."""
        metrics, drift = self.card.records(), self.detectors.records()
        if self.metrics is not None:
            self.metrics.records(metrics)
        self.totals.metrics_records += len(metrics)
        self.totals.drift_records += len(drift)
        return metrics, drift

    def take_pairs(self) -> list[dict[str, Any]]:
        """The joined pairs (``scorecard_pair`` dicts) since the previous call."""
        pairs, self.pairs = self.pairs, []
        self.totals.pair_records += len(pairs)
        return pairs


class TransactionFields:
    """What the slices need of each transaction (its amount, declared fields), by event id,
    and every customer's first transaction for the tenure slice; evicted past the horizon."""

    def __init__(self, horizon_s: float, slicer: Slicer) -> None:
        self.horizon_s = horizon_s
        self.slicer = slicer
        self.fields: dict[str, dict[str, Any]] = {}
        self._expiry: deque[tuple[float, str]] = deque()
        self._newest = -math.inf

    def add(self, tx: dict[str, Any], event_ts: float) -> None:
        self.slicer.tenure.seen(str(tx["customer_id"]), event_ts)
        kept = {"amount": tx.get("amount")}
        for spec in self.slicer.declared.values():
            if spec.field in tx:
                kept[spec.field] = tx[spec.field]
        self.fields[str(tx["event_id"])] = kept
        self._expiry.append((event_ts, str(tx["event_id"])))
        if event_ts > self._newest:
            self._newest = event_ts
            cutoff = event_ts - self.horizon_s
            while self._expiry and self._expiry[0][0] < cutoff:
                self.fields.pop(self._expiry.popleft()[1], None)

    def get(self, event_id: str) -> dict[str, Any] | None:
        return self.fields.get(event_id)


def run_scorecard(
    settings: Settings,
    service: ScorecardService,
    *,
    since_ms: int | None,
    until_end: bool,
    publish: bool = True,
    publish_interval_s: float = 30.0,
    on_progress: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> ScorecardTotals:
    """Consume the three topics into ``service``, publishing its records periodically."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

    from stream_app.io.security import check_access, librdkafka_config

    check_access(settings)  # a wrong password or CA fails here, clearly, within seconds
    topic_kind = {settings.topic(t): t for t in (SCORES, SHADOW, LABELS, TRANSACTIONS)}
    consumer = Consumer(
        {
            **librdkafka_config(settings),
            "group.id": f"{settings.app_id}-scorecard",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    producer = Producer(librdkafka_config(settings)) if publish else None
    metrics_topic, drift_topic = settings.topic(METRICS), settings.topic(DRIFT)
    pairs_topic = settings.topic(PAIRS)
    tenure_ms = int(service.slicer.tenure.days_s * 1000)

    def flush_records() -> None:
        metrics, drift = service.records()
        pairs = service.take_pairs()
        if producer is None:
            return
        for record in pairs:
            producer.produce(pairs_topic, orjson.dumps(record), key=record["customer_id"].encode())
            producer.poll(0)
        for record in metrics:
            producer.produce(
                metrics_topic, orjson.dumps(record), key=record["model_version"].encode()
            )
        for record in drift:
            producer.produce(
                drift_topic, orjson.dumps(record), key=record["model_version"].encode()
            )
        producer.flush(30)

    try:
        assignment: list[TopicPartition] = []
        end: dict[tuple[str, int], int] = {}
        for name in topic_kind:
            meta = consumer.list_topics(name, timeout=10).topics[name]
            if meta.error is not None:
                raise RuntimeError(
                    f"topic {name} is not readable ({meta.error}); run `stream-app topics apply`"
                )
            for partition in sorted(meta.partitions):
                tp = TopicPartition(name, partition, OFFSET_BEGINNING)
                if since_ms is not None:
                    # transactions from a tenure further back: first transactions of customers
                    start_ms = (
                        since_ms - tenure_ms if topic_kind[name] == TRANSACTIONS else since_ms
                    )
                    tp = TopicPartition(name, partition, max(0, start_ms))
                    tp = consumer.offsets_for_times([tp], timeout=10)[0]
                    if tp.offset < 0:  # nothing at or after since: start at the end
                        tp = TopicPartition(
                            name, partition, consumer.get_watermark_offsets(tp, timeout=10)[1]
                        )
                low, high = consumer.get_watermark_offsets(tp, timeout=10)
                if high > max(low, tp.offset if tp.offset >= 0 else low):
                    end[(name, partition)] = high
                assignment.append(tp)
        consumer.assign(assignment)
        last_publish = time.monotonic()
        while not should_stop():
            if until_end and not end:
                break
            batch = consumer.consume(1000, timeout=0.5)
            for msg in batch:
                if msg.error() is not None:
                    continue
                topic_name, partition, offset = msg.topic(), msg.partition(), msg.offset()
                assert topic_name is not None and partition is not None and offset is not None
                service.handle(topic_kind[topic_name], msg.value())
                key = (topic_name, partition)
                if key in end and offset + 1 >= end[key]:
                    del end[key]
            if on_progress is not None and batch:
                on_progress(len(batch))
            if time.monotonic() - last_publish >= publish_interval_s:
                flush_records()
                last_publish = time.monotonic()
        flush_records()
    finally:
        consumer.close()
    return service.totals
