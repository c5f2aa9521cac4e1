"""The live scorecard: late labels joined to the scores that were served, per model version.

Pure logic, no Kafka (``stream_app.monitoring.scorecard_service`` feeds it from the topics):

* :class:`ScoreJoin` holds served scores (champion envelopes and challenger shadow envelopes) by
  ``event_id`` until their label arrives, and labels that arrive before their score. State is
  bounded by the label horizon in event time: a score older than ``newest event time - horizon``
  without a label is evicted and counted (``evicted_unlabelled``), as is a label whose score
  never came (``labels_unmatched``).
* :class:`Scorecard` accumulates the joined pairs per model version, route (champion, shadow,
  canary) and period (day of event time, hour of processing time = the envelope's
  ``scored_at``), and per slice band for event days (:mod:`stream_app.monitoring.slices`), and
  turns the periods that changed into ``metrics_record`` dicts: AUC ROC, average precision,
  precision@k (the k highest scores of the period), Brier score, calibration (ECE and its bins),
  label count and coverage (labelled / scored), an event day's with its ``slices``.

>>> join = ScoreJoin(horizon_s=86_400.0)
>>> join.add_score("e1", "v1", 0.9, 1_000.0, "2018-04-01T10:15:00+00:00")
[]
>>> [(p.version, p.score, p.label) for p in join.add_label("e1", 1, 1_000.0)]
[('v1', 0.9, 1)]
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from stream_app.evaluation.metrics import calibration, period_metrics

EVENT_DAY = "event_day"
CHAMPION = "champion"
SHADOW_ROUTE = "shadow"
ALL = "all"
PROCESSING_HOUR = "processing_hour"


def event_day(ts: float) -> str:
    """``YYYY-MM-DD`` (UTC) of an epoch-seconds event time."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def processing_hour(scored_at: str) -> str:
    """``YYYY-MM-DDTHH`` (UTC) of an envelope's ``scored_at``."""
    return datetime.fromisoformat(scored_at).astimezone(UTC).strftime("%Y-%m-%dT%H")


@dataclass(frozen=True, slots=True)
class Served:
    """One model's answer for one event."""

    version: str
    score: float
    event_ts: float
    scored_at: str
    route: str = CHAMPION
    customer_id: str = ""
    extra: dict[str, Any] | None = None  # envelope fields a declared slice reads


@dataclass(frozen=True, slots=True)
class JoinedPair:
    """A served score with its label."""

    version: str
    score: float
    label: int
    event_ts: float
    scored_at: str
    route: str = CHAMPION
    customer_id: str = ""
    extra: dict[str, Any] | None = None
    event_id: str = ""


@dataclass(slots=True)
class JoinCounts:
    joined: int = 0
    evicted_unlabelled: int = 0
    labels_unmatched: int = 0
    duplicates: int = 0  # a second score of the same event by the same version (replays)


class ScoreJoin:
    """Served scores and early labels by event id, evicted past the label horizon."""

    def __init__(self, horizon_s: float) -> None:
        if not horizon_s > 0:
            raise ValueError("horizon_s must be > 0")
        self.horizon_s = horizon_s
        self.served: dict[str, dict[str, Served]] = {}
        self.early_labels: dict[str, tuple[int, float]] = {}
        self.labelled: dict[str, int] = {}  # event id → label, for scores arriving later
        self.counts = JoinCounts()
        self._expiry: list[tuple[float, str]] = []  # (event time, event id), a min-heap
        self._newest = -math.inf

    def __len__(self) -> int:
        return len(self.served) + len(self.early_labels)

    def add_score(
        self,
        event_id: str,
        version: str,
        score: float,
        event_ts: float,
        scored_at: str,
        *,
        route: str = CHAMPION,
        customer_id: str = "",
        extra: dict[str, Any] | None = None,
    ) -> list[JoinedPair]:
        """A served score; the pair if its label is already known."""
        served = Served(version, score, event_ts, scored_at, route, customer_id, extra)
        self._advance(event_ts)
        label = self.labelled.get(event_id)
        early = self.early_labels.pop(event_id, None)
        if early is not None:
            label = self.labelled[event_id] = early[0]
        if label is not None:
            self.counts.joined += 1
            return [
                JoinedPair(
                    version, score, label, event_ts, scored_at, route, customer_id, extra, event_id
                )
            ]
        by_version = self.served.get(event_id)
        if by_version is None:
            by_version = self.served[event_id] = {}
            heapq.heappush(self._expiry, (event_ts, event_id))
        slot = version if route == CHAMPION else f"{version}\x00{route}"
        if slot in by_version:
            self.counts.duplicates += 1
        by_version[slot] = served
        return []

    def add_label(self, event_id: str, label: int, event_ts: float) -> list[JoinedPair]:
        """A label; the pairs of every version that scored the event (none if not yet)."""
        self._advance(event_ts)
        by_version = self.served.pop(event_id, None)
        if by_version is None:
            if event_id not in self.labelled and event_id not in self.early_labels:
                self.early_labels[event_id] = (label, event_ts)
                heapq.heappush(self._expiry, (event_ts, event_id))
            return []
        self.labelled[event_id] = label
        heapq.heappush(self._expiry, (event_ts, event_id))
        self.counts.joined += len(by_version)
        return [
            JoinedPair(
                s.version,
                s.score,
                label,
                s.event_ts,
                s.scored_at,
                s.route,
                s.customer_id,
                s.extra,
                event_id,
            )
            for s in by_version.values()
        ]

    def _advance(self, event_ts: float) -> None:
        if event_ts <= self._newest:
            return
        self._newest = event_ts
        cutoff = event_ts - self.horizon_s
        expiry = self._expiry
        while expiry and expiry[0][0] < cutoff:
            _, event_id = heapq.heappop(expiry)
            by_version = self.served.pop(event_id, None)
            if by_version is not None:
                self.counts.evicted_unlabelled += len(by_version)
            if self.early_labels.pop(event_id, None) is not None:
                self.counts.labels_unmatched += 1
            self.labelled.pop(event_id, None)


@dataclass(slots=True)
class PeriodStats:
    """Scores and labels of one (version, route, granularity, period, slice, band)."""

    scored: int = 0
    scores: list[float] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)


def calibration_record(scores: list[float], labels: list[int], bins: int) -> dict[str, Any]:
    """``{ece, bins}`` of the period (ECE None when empty)."""
    ece, table = calibration(scores, labels, bins)
    return {"ece": None if math.isnan(ece) else ece, "bins": table}


Key = tuple[str, str, str, str, str, str]  # version, route, granularity, period, slice, band


class Scorecard:
    """Per version, route and period (and per slice and band for event days): scored count,
    joined pairs; records of what changed."""

    def __init__(
        self, k: int = 100, keep_days: int = 35, keep_hours: int = 72, bins: int = 10
    ) -> None:
        self.k = k
        self.bins = bins
        self.keep = {EVENT_DAY: keep_days, PROCESSING_HOUR: keep_hours}
        self.periods: dict[Key, PeriodStats] = {}
        self._changed: set[Key] = set()

    def _keys(self, version: str, route: str, event_ts: float, scored_at: str) -> list[Key]:
        return [
            (version, route, EVENT_DAY, event_day(event_ts), ALL, ALL),
            (version, route, PROCESSING_HOUR, processing_hour(scored_at), ALL, ALL),
        ]

    def _stats(self, key: Key) -> PeriodStats:
        stats = self.periods.get(key)
        if stats is None:
            stats = self.periods[key] = PeriodStats()
        self._changed.add(key)
        return stats

    def scored(self, version: str, event_ts: float, scored_at: str, route: str = CHAMPION) -> None:
        """Count one served score in its periods."""
        for key in self._keys(version, route, event_ts, scored_at):
            self._stats(key).scored += 1

    def joined(self, pair: JoinedPair, bands: Mapping[str, str] | None = None) -> None:
        """Add a labelled score to its periods, and to its slices' bands of its event day."""
        keys = self._keys(pair.version, pair.route, pair.event_ts, pair.scored_at)
        day = keys[0][3]
        for name, value in (bands or {}).items():
            keys.append((pair.version, pair.route, EVENT_DAY, day, name, value))
        for key in keys:
            stats = self._stats(key)
            stats.scores.append(pair.score)
            stats.labels.append(pair.label)

    def records(self) -> list[dict[str, Any]]:
        """``metrics_record`` dicts of the periods changed since the last call (sorted), then
        the oldest periods beyond ``keep_days`` / ``keep_hours`` per version are dropped. An
        event day's record holds its slices (``slices``: name -> band -> labels, metrics,
        calibration)."""
        bands: dict[tuple[str, str, str, str], list[Key]] = {}
        for key in self.periods:
            if key[4] != ALL:
                bands.setdefault(key[:4], []).append(key)
        out = []
        for key in sorted(k for k in self._changed if k[4] == ALL):
            stats = self.periods.get(key)
            if stats is None:
                continue
            version, route, granularity, period, _, _ = key
            n = len(stats.labels)
            record: dict[str, Any] = {
                "model_version": version,
                "route": route,
                "granularity": granularity,
                "period": period,
                "labels": n,
                "label_coverage": min(1.0, n / stats.scored) if stats.scored else 0.0,
                "metrics": period_metrics(stats.scores, stats.labels, self.k),
                "calibration": calibration_record(stats.scores, stats.labels, self.bins),
            }
            slices: dict[str, dict[str, Any]] = {}
            for slice_key in sorted(bands.get(key[:4], [])):
                part = self.periods[slice_key]
                slices.setdefault(slice_key[4], {})[slice_key[5]] = {
                    "labels": len(part.labels),
                    "metrics": period_metrics(part.scores, part.labels, self.k),
                    "calibration": calibration_record(part.scores, part.labels, self.bins),
                }
            if slices:
                record["slices"] = slices
            out.append(record)
        self._changed.clear()
        self._trim()
        return out

    def _trim(self) -> None:
        by_group: dict[tuple[str, str, str], set[str]] = {}
        for version, route, granularity, period, _, _ in self.periods:
            by_group.setdefault((version, route, granularity), set()).add(period)
        for (version, route, granularity), periods in by_group.items():
            old = set(sorted(periods)[: -self.keep[granularity]])
            if old:
                for key in [
                    k
                    for k in self.periods
                    if k[:3] == (version, route, granularity) and k[3] in old
                ]:
                    del self.periods[key]
