r"""Change detectors on a stream of floats (the score, or the label error ``|label - score|``):
river's ADWIN or Page-Hinkley, counting detections into ``drift_record``\ s."""

from __future__ import annotations

import math
from typing import Any, Literal

from river import drift as river_drift

from stream_app.monitoring.drift_records import drift_record

DetectorKind = Literal["adwin", "page_hinkley"]


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
