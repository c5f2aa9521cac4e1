"""Drift of one model's live inputs and scores: windows of PSI/KS plus a change detector.

The scoring agent calls :meth:`DriftMonitor.observe` with every scored micro-batch. Each batch
feeds the :class:`~stream_app.monitoring.drift.FeatureWindow` (per-feature PSI against the
manifest's bins, KS against its sample, PSI of the score) and a river change detector on the
score stream. When the window is full (N events) or spans T seconds of event time, ``observe``
returns its drift records plus the detector's record for the same span, ready for ``drift``;
when the detector fires, its record (value = detections since its previous record) is returned
with that batch, without waiting for the window to close.
Calendar features (weekend, night: functions of the clock) are left out of PSI and KS.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from stream_app.features.definitions import CALENDAR_FEATURES
from stream_app.monitoring.drift import SCORE, ChangeDetector, DetectorKind, FeatureWindow
from stream_app.scoring.model import ScoringModel


class DriftMonitor:
    """Windowed PSI/KS and score change detection for one model version."""

    def __init__(
        self,
        model: ScoringModel,
        *,
        max_events: int,
        max_seconds: float,
        min_events: int = 1,
        detector: DetectorKind = "adwin",
    ) -> None:
        self.window = FeatureWindow.from_manifest(
            model.manifest.raw,
            max_events=max_events,
            max_seconds=max_seconds,
            min_events=min(min_events, max_events),
            exclude=CALENDAR_FEATURES,
        )
        self.detector = ChangeDetector(detector, SCORE, model.version)
        self.windows = 0

    def observe(
        self, X: npt.NDArray[np.float64], scores: Sequence[float], event_ts: Sequence[float]
    ) -> list[dict[str, Any]]:
        """Add a scored batch (rows of the model's features); records of any window it closes.

        Rows after a closing one open the next window, so one batch may close several.
        """
        records: list[dict[str, Any]] = []
        rows = X.tolist()
        for row, score, ts in zip(rows, scores, event_ts, strict=True):
            self.window.add(row, score, ts)
            if self.detector.update(score):
                # A change is news now: its record goes out at once, not at the window's end.
                start, end = self.window.span(ts)
                records.append(self.detector.record(start, end))
            if self.window.ready(ts):
                start, end = self.window.span(ts)
                records.extend(self.window.close(ts))
                records.append(self.detector.record(start, end))
                self.windows += 1
        return records
