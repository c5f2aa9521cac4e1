"""The score envelope (``schemas/score_envelope.schema.json``), built for a whole micro-batch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from stream_app.scoring.model import BatchScores, ScoringModel


@dataclass(slots=True)
class ScoredEvent:
    """The identity of one event in a micro-batch, and when it reached Kafka."""

    event_id: str
    customer_id: str
    terminal_id: str
    event_time: str
    arrived_ms: float


def build_envelopes(
    model: ScoringModel,
    events: Sequence[ScoredEvent],
    X: npt.NDArray[np.float64],
    scores: BatchScores,
    emit_features: bool = False,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """One envelope per event, in order. ``latency_ms`` runs from ``arrived_ms`` to now."""
    moment = now or datetime.now(UTC)
    scored_at = moment.isoformat()
    now_ms = moment.timestamp() * 1000.0
    names = model.features
    score = scores.score.tolist()
    decision = scores.decision.tolist()
    std = scores.std.tolist()
    low = scores.low.tolist()
    high = scores.high.tolist()
    top = scores.top_index.tolist()
    contribution = scores.contribution.tolist()
    rows = X.tolist()
    out: list[dict[str, Any]] = []
    for i, event in enumerate(events):
        row = rows[i]
        envelope: dict[str, Any] = {
            "event_id": event.event_id,
            "customer_id": event.customer_id,
            "terminal_id": event.terminal_id,
            "event_time": event.event_time,
            "score": score[i],
            "decision": decision[i],
            "uncertainty": {
                "method": model.uncertainty_method,
                "std": std[i],
                "interval": [low[i], high[i]],
            },
            "explanation": {
                "method": model.explanation_method,
                "contributions": [
                    {"feature": names[j], "value": row[j], "contribution": c}
                    for j, c in zip(top[i], contribution[i], strict=True)
                ],
            },
            "model_version": model.version,
            "model_sha256": model.sha256,
            "training_data_tag": model.training_data_tag,
            "feature_hash": scores.feature_hash[i],
            "scored_at": scored_at,
            "latency_ms": max(0.0, now_ms - event.arrived_ms),
        }
        if emit_features:
            envelope["features"] = dict(zip(names, row, strict=True))
        out.append(envelope)
    return out
