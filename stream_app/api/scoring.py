"""One transaction's score envelope from its window features, as the scoring stage builds it.

The feature row is the event's own features, then the customer's window features, then the
terminal's (``FEATURE_NAMES`` order, as the stages build it); the champion scores it with the
same ``score_batch`` and the envelope comes from the same ``EnvelopeWriter``, so the envelope is
the ``scores`` topic's schema (``schemas/score_envelope.schema.json``) on both paths.
``latency_ms`` runs from the request's arrival.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from stream_app.features.definitions import event_feature_values
from stream_app.io.codecs import Transaction
from stream_app.pipeline.scoring_stage import ScoringStage
from stream_app.scoring.envelope import EnvelopeWriter, ScoredEvent
from stream_app.scoring.model import ScoringModel


def feature_row(
    tx: Transaction, customer: Sequence[float], terminal: Sequence[float]
) -> list[float]:
    """The full feature vector of ``tx`` (``FEATURE_NAMES`` order)."""
    row = event_feature_values(tx.amount, tx.ts)
    row += customer
    row += terminal
    return row


def score_envelope(
    model: ScoringModel,
    tx: Transaction,
    row: list[float],
    arrived_ms: float,
    with_features: bool = False,
) -> dict[str, Any]:
    """The envelope ``model`` gives ``tx`` with the feature vector ``row``."""
    X = ScoringStage.matrix(np.array([row], dtype=np.float64), model.features)
    scores = model.score_batch(X)
    event = ScoredEvent(tx.event_id, tx.customer_id, tx.terminal_id, tx.event_time, arrived_ms)
    return EnvelopeWriter(model, with_features).objects([event], X, scores)[0]
