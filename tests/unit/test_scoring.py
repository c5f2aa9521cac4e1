"""Batch scoring: one predict_proba, exact linear explanations, delta-method uncertainty."""

from datetime import UTC, datetime

import numpy as np
import pytest

from stream_app.features.definitions import FEATURE_NAMES
from stream_app.io.schemas import validate
from stream_app.scoring.envelope import ScoredEvent, build_envelopes
from stream_app.scoring.model import ScoringModel, feature_hashes
from tests.unit.conftest import make_version


@pytest.fixture
def model(model_dir):
    return ScoringModel.load(model_dir)


@pytest.fixture
def X():
    rng = np.random.default_rng(1)
    return rng.normal(size=(7, len(FEATURE_NAMES))) * 3 + 10


def test_linear_contributions_sum_to_the_logit(model, X):
    scores = model.score_batch(X)
    scaler, clf = model.estimator.named_steps["scaler"], model.estimator.named_steps["clf"]
    z = scaler.transform(X)
    full = z * clf.coef_[0]
    logit = full.sum(axis=1) + clf.intercept_[0]
    np.testing.assert_allclose(scores.score, 1 / (1 + np.exp(-logit)), rtol=1e-12)
    top = np.argsort(-np.abs(full), axis=1, kind="stable")[:, :3]
    np.testing.assert_array_equal(scores.top_index, top)
    np.testing.assert_allclose(scores.contribution, np.take_along_axis(full, top, 1), rtol=1e-12)


def test_delta_method_uncertainty(model, X):
    scores = model.score_batch(X)
    z1 = np.hstack([np.ones((len(X), 1)), model.estimator.named_steps["scaler"].transform(X)])
    se = np.sqrt(np.array([row @ model.covariance @ row for row in z1]))
    p = scores.score
    np.testing.assert_allclose(scores.std, p * (1 - p) * se, rtol=1e-9)
    logit = np.log(p / (1 - p))
    np.testing.assert_allclose(
        scores.low, 1 / (1 + np.exp(-(logit - 1.959963984540054 * se))), rtol=1e-9
    )
    assert np.all(scores.low <= p) and np.all(p <= scores.high)


def test_decisions_follow_thresholds(model):
    model.review, model.decline = 0.3, 0.6
    rng = np.random.default_rng(2)
    X = rng.normal(size=(200, len(FEATURE_NAMES))) * 3 + 10
    s = model.score_batch(X)
    expected = np.where(s.score >= 0.6, "decline", np.where(s.score >= 0.3, "review", "approve"))
    np.testing.assert_array_equal(s.decision, expected)
    assert set(s.decision) == {"approve", "review", "decline"}


def test_feature_hash_is_blake2b_of_le_float64():
    import hashlib

    row = np.array([[1.0, 2.5]])
    assert feature_hashes(row) == [
        hashlib.blake2b(np.array([1.0, 2.5], dtype="<f8").tobytes(), digest_size=16).hexdigest()
    ]


def test_occlusion_for_non_linear_models(tmp_path, X):
    model = ScoringModel.load(make_version(tmp_path, "hgb"))
    s = model.score_batch(X)
    assert model.explanation_method == "occlusion" and model.uncertainty_method == "bernoulli"
    j = int(s.top_index[0, 0])
    occluded = X[:1].copy()
    occluded[0, j] = model.feature_means[j]
    p0 = np.clip(s.score[0], 1e-12, 1 - 1e-12)
    p1 = np.clip(model.predict(occluded)[0], 1e-12, 1 - 1e-12)
    assert s.contribution[0, 0] == pytest.approx(np.log(p0 / (1 - p0)) - np.log(p1 / (1 - p1)))


def test_envelopes_are_schema_valid_and_ordered(model, X):
    events = [
        ScoredEvent(f"e{i}", f"c{i}", f"t{i}", "2018-04-01T00:00:00+00:00", 1000.0)
        for i in range(len(X))
    ]
    now = datetime(2026, 1, 1, tzinfo=UTC)
    envelopes = build_envelopes(model, events, X, model.score_batch(X), emit_features=True, now=now)
    assert [e["event_id"] for e in envelopes] == [f"e{i}" for i in range(len(X))]
    for envelope in envelopes:
        validate("score_envelope", envelope)
        assert envelope["latency_ms"] == now.timestamp() * 1000 - 1000.0
        assert envelope["model_sha256"] == model.sha256
        assert list(envelope["features"]) == list(FEATURE_NAMES)
        assert len(envelope["explanation"]["contributions"]) == 3
        # the input contract it was validated against: the transaction schema's $id and version
        assert envelope["data_contract"] == "https://stream-app.dev/schemas/transaction.schema.json"
        assert envelope["data_contract_version"] == 1
    old = {k: v for k, v in envelopes[0].items() if not k.startswith("data_contract")}
    validate("score_envelope", old)  # envelopes written before the fields still validate
