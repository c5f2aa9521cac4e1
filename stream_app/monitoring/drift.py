"""Drift statistics as small pure objects: PSI, two-sample KS, windows of them, change detectors.

Each statistic becomes one ``drift_record`` (``schemas/drift_record.schema.json``): statistic,
subject (a feature name, ``score`` or ``label_error``), value, threshold, ``alert = value >
threshold``, model version and the window it covers. Nothing here touches Kafka or a clock: the
caller passes event times (epoch seconds) in and publishes the records it gets back.

* ``psi`` / ``BinnedReference``: the population stability index of a window's values against
  the quantile bins the trainer stored in the manifest (``reference.features[name]`` and
  ``reference.score``: ``edges`` and ``shares``), with the trainer's bin convention.
* ``ks_statistic``: the two-sample Kolmogorov-Smirnov distance to the manifest's raw sample.
* ``FeatureWindow``: collects feature rows and scores for N events or T seconds, whichever
  comes first, then turns them into PSI and KS records.
* ``ChangeDetector``: river's ADWIN or Page-Hinkley on a stream of floats (the score, or the
  label error ``|label - score|``), counting detections.

The statistics are in :mod:`stream_app.evaluation.drift_stats`, the records in
:mod:`~stream_app.monitoring.drift_records`, the detectors in
:mod:`~stream_app.monitoring.drift_detectors`; this module holds the window and hands their
names on.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

from stream_app.evaluation.drift_stats import (
    KS_THRESHOLD,
    PSI_EPS,
    PSI_THRESHOLD,
    BinnedReference,
    FloatArray,
    ks_sorted,
    ks_statistic,
    psi,
    sorted_finite,
)
from stream_app.exceptions import ModelIntegrityError
from stream_app.monitoring.drift_detectors import ChangeDetector, DetectorKind
from stream_app.monitoring.drift_records import (
    LABEL_ERROR,
    SCORE,
    DriftThresholds,
    Statistic,
    drift_record,
    iso_utc,
)

__all__ = [
    "KS_THRESHOLD",
    "LABEL_ERROR",
    "PSI_EPS",
    "PSI_THRESHOLD",
    "SCORE",
    "BinnedReference",
    "ChangeDetector",
    "DetectorKind",
    "DriftThresholds",
    "FeatureWindow",
    "FloatArray",
    "Statistic",
    "drift_record",
    "iso_utc",
    "ks_statistic",
    "psi",
]


DEFAULT_THRESHOLDS = DriftThresholds()


class FeatureWindow:
    """Feature rows and scores of one model version for N events or T seconds, then records.

    ``reference`` is the manifest's ``reference`` block; ``features`` is the manifest's feature
    list, the order of each row passed to ``add``. All times are epoch seconds on **one** clock:
    ``event_time`` of the events and ``now`` in ``ready`` / ``close`` (the worker passes the
    latest event time, so replays of old data form the same windows as live traffic).

    The window opens at its first event. It is ``ready`` once it holds ``max_events`` events,
    or ``max_seconds`` have passed since its earliest event time and it holds at least
    ``min_events`` (default 1; raise it to keep quiet periods from producing noisy tiny
    windows). ``close`` returns the records and empties the window. Features named in
    ``exclude`` stay in the rows but get no PSI/KS records.

    >>> ref = {
    ...     "features": {"x": {"edges": [0.5], "shares": [0.5, 0.5]}},
    ...     "sample": {"x": [0.0, 1.0]},
    ...     "score": {"edges": [0.5], "shares": [0.5, 0.5]},
    ... }
    >>> w = FeatureWindow(ref, ["x"], "v1", max_events=4, max_seconds=60.0)
    >>> for t, x in enumerate([0.0, 1.0, 1.0, 1.0]):
    ...     w.add([x], score=0.1, event_time=1_700_000_000.0 + t)
    >>> w.ready(1_700_000_003.0)
    True
    >>> [(r["statistic"], r["subject"], round(r["value"], 4), r["alert"])
    ...  for r in w.close(1_700_000_003.0)]
    [('psi', 'x', 0.2747, True), ('ks', 'x', 0.25, True), ('psi', 'score', 4.6043, True)]
    >>> len(w)
    0
    """

    def __init__(
        self,
        reference: Mapping[str, Any],
        features: Sequence[str],
        model_version: str,
        *,
        max_events: int = 2000,
        max_seconds: float = 300.0,
        min_events: int = 1,
        thresholds: DriftThresholds = DEFAULT_THRESHOLDS,
        eps: float = PSI_EPS,
        exclude: Collection[str] = (),
    ) -> None:
        if max_events < 1 or not max_seconds > 0 or min_events < 1:
            raise ValueError("max_events and min_events must be >= 1 and max_seconds > 0")
        self.features: tuple[str, ...] = tuple(features)
        # (row index, name) of the features with PSI/KS records: all but ``exclude``.
        self.monitored: tuple[tuple[int, str], ...] = tuple(
            (j, f) for j, f in enumerate(self.features) if f not in exclude
        )
        self.model_version = model_version
        self.max_events = max_events
        self.max_seconds = float(max_seconds)
        self.min_events = min_events
        self.thresholds = thresholds
        self.eps = eps
        try:
            self.bins = [
                BinnedReference.from_dict(reference["features"][f]) for _, f in self.monitored
            ]
            self.samples = [
                sorted_finite(reference["sample"][f], f"sample of {f}") for _, f in self.monitored
            ]
            self.score_bins = BinnedReference.from_dict(reference["score"])
        except KeyError as exc:
            raise ModelIntegrityError(
                f"The manifest's reference distributions lack {exc}; retrain the model with "
                "`stream-app train` to record them."
            ) from exc
        self._rows: list[Sequence[float]] = []
        self._scores: list[float] = []
        self._start: float = math.inf
        self._last: float = -math.inf

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any], **options: Any) -> FeatureWindow:
        """From a raw manifest dict (``Manifest.raw``): its reference, features and version."""
        if "reference" not in manifest:
            raise ModelIntegrityError(
                f"Model {manifest.get('version')!r} has no reference distributions in its "
                "manifest, so drift cannot be measured; retrain it with `stream-app train`."
            )
        return cls(manifest["reference"], manifest["features"], str(manifest["version"]), **options)

    def __len__(self) -> int:
        return len(self._scores)

    @property
    def start(self) -> float | None:
        """Earliest event time in the window, ``None`` while empty."""
        return self._start if self._scores else None

    def span(self, now: float) -> tuple[float, float]:
        """The (start, end) ``close(now)`` would report: earliest event time to
        ``max(now, latest event time)``. Raises ``ValueError`` while empty."""
        if not self._scores:
            raise ValueError("the window is empty")
        return self._start, max(now, self._last)

    def add(self, row_values: Sequence[float], score: float, event_time: float) -> None:
        """Add one scored event: its feature row (in ``features`` order), score and time."""
        if len(row_values) != len(self.features):
            raise ValueError(
                f"row has {len(row_values)} values, the model has {len(self.features)} features"
            )
        self._rows.append(row_values)
        self._scores.append(score)
        self._start = min(self._start, event_time)
        self._last = max(self._last, event_time)

    def ready(self, now: float) -> bool:
        """Whether the window is full (``max_events``) or old enough (``max_seconds``)."""
        n = len(self._scores)
        if n >= self.max_events:
            return True
        return n >= self.min_events and now - self._start >= self.max_seconds

    def close(self, now: float) -> list[dict[str, Any]]:
        """Drift records of the window (then emptied); ``[]`` when it holds no events.

        Per feature, in ``features`` order: PSI against the manifest bins, KS against the
        manifest sample; then the PSI of the score. The window runs from its earliest event
        time to ``max(now, latest event time)``.
        """
        n = len(self._scores)
        if n == 0:
            return []
        X = np.asarray(self._rows, dtype=np.float64)
        scores = np.asarray(self._scores, dtype=np.float64)
        start, end = self.span(now)
        self._rows, self._scores = [], []
        self._start, self._last = math.inf, -math.inf

        records: list[dict[str, Any]] = []

        def emit(statistic: Statistic, subject: str, value: float, threshold: float) -> None:
            records.append(
                drift_record(
                    statistic, subject, value, threshold, self.model_version, start, end, n
                )
            )

        for i, (j, name) in enumerate(self.monitored):
            column = X[:, j]
            emit("psi", name, self.bins[i].psi(column, self.eps), self.thresholds.psi)
            ks = ks_sorted(self.samples[i], sorted_finite(column, f"window of {name}"))
            emit("ks", name, ks, self.thresholds.ks)
        emit("psi", SCORE, self.score_bins.psi(scores, self.eps), self.thresholds.psi)
        return records
