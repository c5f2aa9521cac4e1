"""One transaction's score envelope from its window features, as the scoring stage builds it.

The feature row is the event's own features, then the customer's window features, then the
terminal's (``FEATURE_NAMES`` order, as the stages build it); the champion scores it with the
same ``score_batch`` and the envelope comes from the same ``EnvelopeWriter``, so the envelope is
the ``scores`` topic's schema (``schemas/score_envelope.schema.json``) on both paths.
``latency_ms`` runs from the request's arrival.

One row at a time, scikit-learn's ``predict_proba`` spends about 2 ms validating its input
(two estimators' checks) for microseconds of arithmetic; the stream pays that once per
micro-batch, a what-if once per request. For the project's logistic pipeline (``StandardScaler``
then a binary ``LogisticRegression``) :func:`one_row_model` does the pipeline's own arithmetic,
in its order (``(x - mean) / scale``, ``@ coef.T + intercept``, ``scipy.special.expit``), so the
score is the one the stream computes, bit for bit (``tests/unit/test_api.py`` checks it); any
other model is scored by its own ``predict_proba``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import special
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from stream_app.features.definitions import event_feature_values
from stream_app.io.codecs import Transaction
from stream_app.pipeline.scoring_stage import ScoringStage
from stream_app.scoring.canary import CANARY_ROUTE, CHAMPION_ROUTE, in_canary
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
    route: str = "champion",
    champion_version: str | None = None,
    canary_version: str | None = None,
) -> dict[str, Any]:
    """The envelope ``model`` gives ``tx`` with the feature vector ``row`` (``route``, and the
    versions the envelope names: as the scoring stage writes them)."""
    X = ScoringStage.matrix(np.array([row], dtype=np.float64), model.features)
    scores = one_row_model(model).score_batch(X)
    event = ScoredEvent(tx.event_id, tx.customer_id, tx.terminal_id, tx.event_time, arrived_ms)
    writer = EnvelopeWriter(model, with_features, route, champion_version, canary_version)
    return writer.objects([event], X, scores)[0]


def deciding_model(
    champion: ScoringModel, canary: tuple[ScoringModel, float] | None, customer_id: str
) -> tuple[str, ScoringModel]:
    """(route, model) that decides for ``customer_id``: the canary (model, share) for its
    customers, as the scoring stage picks them (:func:`~stream_app.scoring.canary.in_canary`),
    else the champion."""
    if canary is not None and in_canary(customer_id, canary[1]):
        return CANARY_ROUTE, canary[0]
    return CHAMPION_ROUTE, champion


_ONE_ROW: dict[tuple[str, str], ScoringModel] = {}


def one_row_model(model: ScoringModel) -> ScoringModel:
    """``model``, or for the logistic pipeline a copy whose ``predict`` is the pipeline's
    arithmetic without scikit-learn's per-call input validation (same result)."""
    key = (model.version, model.sha256)
    fast = _ONE_ROW.get(key)
    if fast is None:
        fast = _ONE_ROW[key] = _without_validation(model)
    return fast


def _without_validation(model: ScoringModel) -> ScoringModel:
    estimator = model.estimator
    steps = getattr(estimator, "named_steps", None)
    if not isinstance(estimator, Pipeline) or steps is None or len(steps) != 2:
        return model
    scaler, clf = steps.get("scaler"), steps.get("clf")
    if (
        type(scaler) is not StandardScaler
        or type(clf) is not LogisticRegression
        or not (scaler.with_mean and scaler.with_std)
        or len(clf.classes_) != 2
    ):
        return model
    mean, scale = scaler.mean_, scaler.scale_
    coef_t, intercept = clf.coef_.T, clf.intercept_

    def predict(X: np.ndarray) -> np.ndarray:
        z = np.array(X, dtype=np.float64, order="C")
        z -= mean
        z /= scale
        return np.asarray(special.expit((z @ coef_t + intercept).reshape(-1)), dtype=np.float64)

    fast = copy.copy(model)
    fast.predict = predict  # type: ignore[method-assign]
    return fast
