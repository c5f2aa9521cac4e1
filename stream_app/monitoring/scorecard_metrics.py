"""Prometheus metrics of the live scorecard service (``stream-app scorecard``).

The scorecard runs in its own process, so it serves its own ``/metrics``
(``STREAM_APP_SCORECARD_WEB_PORT``, default 6067) from a registry of its own.

Metric (labels)                                              what
===========================================================  ===================================
``stream_app_scorecard_consumed_total`` (kind)               records read: scores, shadow,
                                                             labels, undecodable
``stream_app_scorecard_joined_total`` (model_version)        labels joined to a served score
``stream_app_scorecard_metric`` (model_version, granularity,  the newest period's value: auc_roc,
metric)                                                      average_precision, precision_at_k,
                                                             brier, label_coverage, labels
===========================================================  ===================================

"Newest period" is per model version and granularity (``event_day``, ``processing_hour``): the
latest day or hour a published record covers. Labels arrive late, so an older period can still
change; its record goes to the ``metrics`` topic, but the gauge keeps showing the newest period.
A metric that is undefined for the period (AUC with one class only) is not exported.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

KINDS: tuple[str, ...] = ("scores", "shadow", "labels", "undecodable")
METRICS: tuple[str, ...] = ("auc_roc", "average_precision", "precision_at_k", "brier")


class ScorecardMetrics:
    """Every metric of one scorecard service, registered in ``self.registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.consumed = Counter(
            "stream_app_scorecard_consumed",
            "Records the scorecard read, by kind (scores, shadow, labels, undecodable).",
            ["kind"],
            registry=r,
        )
        self.joined = Counter(
            "stream_app_scorecard_joined",
            "Labels joined to a served score, by model version.",
            ["model_version"],
            registry=r,
        )
        self.metric = Gauge(
            "stream_app_scorecard_metric",
            "Model quality over the newest period per model version and granularity.",
            ["model_version", "granularity", "metric"],
            registry=r,
        )
        self._consumed = {kind: self.consumed.labels(kind=kind) for kind in KINDS}
        self._joined: dict[str, Any] = {}
        self._newest: dict[tuple[str, str], str] = {}
        self._set: dict[tuple[str, str], set[str]] = {}

    def read(self, kind: str) -> None:
        """One record of ``kind`` read."""
        self._consumed[kind].inc()

    def joined_pairs(self, version: str, n: int = 1) -> None:
        """``n`` labels joined to scores of ``version``."""
        child = self._joined.get(version)
        if child is None:
            child = self._joined[version] = self.joined.labels(model_version=version)
        child.inc(n)

    def records(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Set the gauges from published ``metrics_record`` dicts (newest period wins)."""
        for record in records:
            version, granularity, period = (
                record["model_version"],
                record["granularity"],
                record["period"],
            )
            group = (version, granularity)
            if period < self._newest.get(group, ""):
                continue
            self._newest[group] = period
            values = {
                **record["metrics"],
                "label_coverage": record.get("label_coverage"),
                "labels": record["labels"],
            }
            present = {name for name, value in values.items() if value is not None}
            for name in self._set.get(group, set()) - present:  # no stale value of an older period
                self.metric.remove(version, granularity, name)
            for name in present:
                self.metric.labels(model_version=version, granularity=granularity, metric=name).set(
                    values[name]
                )
            self._set[group] = present

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)
