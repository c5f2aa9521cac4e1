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

>>> round(psi([0.2, 0.5, 0.3], [30, 50, 20]), 6)  # 0.1 ln 1.5 + 0 + (-0.1) ln(2/3)
0.081093
>>> ref = BinnedReference([1.0, 2.0], [0.25, 0.5, 0.25])
>>> ref.bin_counts([0.5, 1.0, 1.5, 2.0, 3.0]).tolist()  # a value equal to an edge goes right
[1, 2, 2]
>>> ks_statistic([1.0, 2.0, 3.0, 4.0], [3.0, 4.0, 5.0, 6.0])
0.5
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from river import drift as river_drift

from stream_app.exceptions import ModelIntegrityError

FloatArray = npt.NDArray[np.float64]
Statistic = Literal["psi", "ks", "adwin", "page_hinkley"]
DetectorKind = Literal["adwin", "page_hinkley"]

PSI_EPS = 1e-4
PSI_THRESHOLD = 0.2
KS_THRESHOLD = 0.1
SCORE = "score"
LABEL_ERROR = "label_error"


def psi(
    expected_shares: Sequence[float] | FloatArray,
    actual_counts: Sequence[float] | npt.NDArray[Any],
    eps: float = PSI_EPS,
) -> float:
    """Population stability index ``sum((a - e) * ln(a / e))`` over the bins.

    ``e`` are the reference shares per bin, ``a`` the window's counts divided by their total.
    Both are floored at ``eps`` (not renormalized afterwards) so an empty bin on either side
    contributes a large but finite term instead of infinity: with ``eps = 1e-4`` a bin holding
    20 % of the window and none of the reference adds ``0.2 * ln(0.2 / 1e-4) ≈ 1.52``.

    Conventional reading: below 0.1 the population is stable, 0.1 to 0.2 a moderate shift worth
    watching, above 0.2 a significant shift (``PSI_THRESHOLD``).
    """
    e = np.asarray(expected_shares, dtype=np.float64)
    counts = np.asarray(actual_counts, dtype=np.float64)
    if e.shape != counts.shape or e.ndim != 1:
        raise ValueError(
            f"expected_shares and actual_counts must be 1-d of equal length, got shapes "
            f"{e.shape} and {counts.shape}"
        )
    total = counts.sum()
    if not total > 0:
        raise ValueError("PSI needs at least one counted value in the window")
    a = np.maximum(counts / total, eps)
    e = np.maximum(e, eps)
    return float(np.sum((a - e) * np.log(a / e)))


class BinnedReference:
    """Quantile bins of one reference distribution: ``len(edges) + 1`` bins with their shares.

    Bin ``i`` holds values ``v`` with ``edges[i-1] <= v < edges[i]``, i.e.
    ``np.searchsorted(edges, v, side="right")``, the trainer's convention
    (``stream_app.training.reference_distributions``).
    """

    __slots__ = ("edges", "shares")

    def __init__(self, edges: Sequence[float], shares: Sequence[float]) -> None:
        self.edges: FloatArray = np.asarray(edges, dtype=np.float64)
        self.shares: FloatArray = np.asarray(shares, dtype=np.float64)
        if self.edges.ndim != 1 or self.shares.shape != (len(self.edges) + 1,):
            raise ValueError(
                f"{len(self.edges)} edges need {len(self.edges) + 1} shares, got {self.shares.size}"
            )
        if np.any(np.diff(self.edges) <= 0):
            raise ValueError("bin edges must be strictly increasing")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BinnedReference:
        """From the manifest's ``{"edges": [...], "shares": [...]}``."""
        return cls(data["edges"], data["shares"])

    def bin_counts(self, values: Sequence[float] | FloatArray) -> npt.NDArray[np.int64]:
        """How many of ``values`` fall in each bin (length ``len(edges) + 1``)."""
        index = np.searchsorted(self.edges, np.asarray(values, dtype=np.float64), side="right")
        return np.bincount(index, minlength=len(self.edges) + 1).astype(np.int64)

    def psi(self, values: Sequence[float] | FloatArray, eps: float = PSI_EPS) -> float:
        """PSI of ``values`` against these bins (see ``psi``)."""
        return psi(self.shares, self.bin_counts(values), eps)


def _sorted_finite(values: Sequence[float] | FloatArray, what: str) -> FloatArray:
    array = np.sort(np.asarray(values, dtype=np.float64).ravel())
    if array.size == 0:
        raise ValueError(f"the {what} is empty")
    if np.isnan(array[-1]):  # NaN sorts last
        raise ValueError(f"the {what} holds NaN")
    return array


def _ks_sorted(data1: FloatArray, data2: FloatArray) -> float:
    """KS distance of two sorted, non-empty samples (scipy's exact ``ks_2samp`` arithmetic)."""
    data_all = np.concatenate([data1, data2])
    cdf1 = np.searchsorted(data1, data_all, side="right") / data1.size
    cdf2 = np.searchsorted(data2, data_all, side="right") / data2.size
    return float(np.max(np.abs(cdf1 - cdf2)))


def ks_statistic(
    reference_sample: Sequence[float] | FloatArray, window_values: Sequence[float] | FloatArray
) -> float:
    """Two-sample Kolmogorov-Smirnov distance ``D = max_x |F_ref(x) - F_window(x)|``.

    Both empirical CDFs are right-continuous step functions evaluated at every value of either
    sample, so ties (discrete features) are handled exactly; equals
    ``scipy.stats.ks_2samp(reference_sample, window_values).statistic``. Two samples of 2,000
    from one distribution give D above 0.043 only 5 % of the time, so the default threshold
    ``KS_THRESHOLD = 0.1`` flags shifts, not noise, at that size (not for tiny windows: the
    5 % level is ``1.36 * sqrt(1/n + 1/m)``).
    """
    return _ks_sorted(
        _sorted_finite(reference_sample, "reference sample"),
        _sorted_finite(window_values, "window"),
    )


def iso_utc(ts: float) -> str:
    """Epoch seconds as an ISO-8601 UTC timestamp (the schemas' ``date-time``)."""
    return datetime.fromtimestamp(ts, UTC).isoformat()


def drift_record(
    statistic: Statistic,
    subject: str,
    value: float,
    threshold: float,
    model_version: str,
    start: float,
    end: float,
    events: int,
) -> dict[str, Any]:
    """One ``drift_record`` dict; ``alert`` is ``value > threshold``."""
    value = float(value)
    threshold = float(threshold)
    return {
        "statistic": statistic,
        "subject": subject,
        "value": value,
        "threshold": threshold,
        "alert": bool(value > threshold),
        "model_version": model_version,
        "window": {"start": iso_utc(start), "end": iso_utc(end), "events": int(events)},
    }


@dataclass(frozen=True, slots=True)
class DriftThresholds:
    """Alert thresholds: PSI above 0.2 is the conventional "significant shift" (0.1 to 0.2
    moderate, below 0.1 stable); KS above 0.1 is a 10-point gap between the two CDFs."""

    psi: float = PSI_THRESHOLD
    ks: float = KS_THRESHOLD


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
        thresholds: DriftThresholds = DriftThresholds(),
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
                _sorted_finite(reference["sample"][f], f"sample of {f}") for _, f in self.monitored
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
            ks = _ks_sorted(self.samples[i], _sorted_finite(column, f"window of {name}"))
            emit("ks", name, ks, self.thresholds.ks)
        emit("psi", SCORE, self.score_bins.psi(scores, self.eps), self.thresholds.psi)
        return records


_DETECTORS: dict[DetectorKind, type[river_drift.ADWIN] | type[river_drift.PageHinkley]] = {
    "adwin": river_drift.ADWIN,
    "page_hinkley": river_drift.PageHinkley,
}


class ChangeDetector:
    """A river change detector on one stream of floats, counting its detections.

    ``statistic`` picks ``river.drift.ADWIN`` (adaptive window; a detection when two sub-windows'
    means differ beyond a Hoeffding-style bound at confidence ``delta``) or
    ``river.drift.PageHinkley`` (cumulative deviation from the running mean, detection above
    ``threshold``); ``params`` go to the river class unchanged (river's defaults otherwise).
    After a detection river restarts the detector on the following values.

    The subject is ``score`` for the score stream or ``label_error`` for ``|label - score|``.
    ``record`` reports the detections since the previous record as ``value`` with threshold 0,
    so ``alert`` means "the detector fired in this window".

    >>> d = ChangeDetector("page_hinkley", "score", "v1", threshold=5.0)
    >>> fired = [i for i, x in enumerate([0.1] * 100 + [0.9] * 100) if d.update(x)]
    >>> fired[0] - 100, d.detections
    (6, 1)
    """

    def __init__(
        self, statistic: DetectorKind, subject: str, model_version: str, **params: Any
    ) -> None:
        if statistic not in _DETECTORS:
            raise ValueError(f"unknown detector {statistic!r} (adwin or page_hinkley)")
        self.statistic: DetectorKind = statistic
        self.subject = subject
        self.model_version = model_version
        self.params = dict(params)
        self.detector = _DETECTORS[statistic](**params)
        self.detections = 0
        self.events = 0
        self._window_detections = 0
        self._window_events = 0

    def update(self, x: float) -> bool:
        """Feed one value; ``True`` if a change is detected at this value."""
        if not math.isfinite(x):
            raise ValueError(f"{self.statistic} on {self.subject} needs finite values, got {x!r}")
        self.detector.update(x)
        self.events += 1
        self._window_events += 1
        if self.detector.drift_detected:
            self.detections += 1
            self._window_detections += 1
            return True
        return False

    def record(self, start: float, end: float) -> dict[str, Any]:
        """The ``drift_record`` for ``[start, end]`` (epoch seconds); resets the window counts.

        ``value`` is the number of detections since the previous record, ``threshold`` 0,
        ``window.events`` the values seen since the previous record.
        """
        rec = drift_record(
            self.statistic,
            self.subject,
            self._window_detections,
            0.0,
            self.model_version,
            start,
            end,
            self._window_events,
        )
        self._window_detections = 0
        self._window_events = 0
        return rec
