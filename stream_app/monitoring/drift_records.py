"""The ``drift_record`` (``schemas/drift_record.schema.json``) that every drift statistic
becomes: statistic, subject (a feature name, ``score`` or ``label_error``), value, threshold,
``alert = value > threshold``, model version and the window it covers; and the thresholds."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from stream_app.evaluation.drift_stats import KS_THRESHOLD, PSI_THRESHOLD

Statistic = Literal["psi", "ks", "adwin", "page_hinkley"]

SCORE = "score"
LABEL_ERROR = "label_error"


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
