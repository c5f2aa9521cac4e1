"""Drift statistics: PSI and KS against exact references, windows, change-detector delays."""

import doctest
import math
from datetime import datetime

import numpy as np
import pytest
from scipy import stats

from stream_app.evaluation import drift_stats as drift
from stream_app.exceptions import ModelIntegrityError
from stream_app.features.definitions import FEATURE_NAMES
from stream_app.io.schemas import validate
from stream_app.monitoring.drift import (
    BinnedReference,
    ChangeDetector,
    DriftThresholds,
    FeatureWindow,
    ks_statistic,
    psi,
)
from stream_app.training import reference_distributions

T0 = 1_700_000_000.0
CHANGE_AT = 5_000
MAX_DELAY = 500


def test_module_doctests():
    result = doctest.testmod(drift)
    assert result.attempted > 0
    assert result.failed == 0


# --- PSI -------------------------------------------------------------------------------------


def test_psi_by_hand_on_three_bins():
    # a = [0.3, 0.5, 0.2] against e = [0.2, 0.5, 0.3]: 0.1 ln 1.5 + 0 + (-0.1) ln(2/3) = 0.2 ln 1.5
    assert psi([0.2, 0.5, 0.3], [30, 50, 20]) == pytest.approx(0.2 * math.log(1.5), abs=1e-15)
    assert psi([0.2, 0.5, 0.3], [2, 5, 3]) == pytest.approx(0.0, abs=1e-15)
    # an empty reference bin is floored at eps: 2 * (-0.1) ln 0.8 + (0.2 - eps) ln(0.2 / eps)
    eps = 1e-4
    expected = 2 * (-0.1) * math.log(0.8) + (0.2 - eps) * math.log(0.2 / eps)
    assert psi([0.5, 0.5, 0.0], [4, 4, 2]) == pytest.approx(expected, abs=1e-14)
    # an empty window bin too, with a custom eps: a = [eps, 1, eps], e = [0.5, eps, 0.5]
    eps = 0.01
    expected = 2 * (eps - 0.5) * math.log(eps / 0.5) + (1 - eps) * math.log(1 / eps)
    assert psi([0.5, 0.0, 0.5], [0, 1, 0], eps=eps) == pytest.approx(expected, abs=1e-14)


def test_psi_equals_a_direct_computation_on_random_data():
    rng = np.random.default_rng(7)
    for trial in range(50):
        k = int(rng.integers(2, 20))
        shares = rng.dirichlet(np.full(k, 0.7))
        if trial % 3 == 0:
            shares[rng.integers(k)] = 0.0  # an empty reference bin
        counts = rng.multinomial(int(rng.integers(1, 3000)), rng.dirichlet(np.full(k, 0.5)))
        total = counts.sum()
        direct = 0.0
        for e, c in zip(shares.tolist(), counts.tolist(), strict=True):
            a = max(c / total, 1e-4)
            e = max(e, 1e-4)
            direct += (a - e) * math.log(a / e)
        assert abs(psi(shares, counts) - direct) <= 1e-12


def test_psi_rejects_mismatched_or_empty_input():
    with pytest.raises(ValueError, match="equal length"):
        psi([0.5, 0.5], [1, 2, 3])
    with pytest.raises(ValueError, match="at least one"):
        psi([0.5, 0.5], [0, 0])


def test_bin_counts_follow_the_trainer_convention():
    rng = np.random.default_rng(3)
    X = np.column_stack([rng.lognormal(3, 1, 5000), rng.poisson(2, 5000).astype(float)])
    X = np.hstack([X, np.zeros((5000, len(FEATURE_NAMES) - 2))])
    ref = reference_distributions(X, rng.random(5000), seed=0)
    for j, name in enumerate(FEATURE_NAMES[:2]):
        bins = BinnedReference.from_dict(ref["features"][name])
        counts = bins.bin_counts(X[:, j])
        assert counts.sum() == 5000
        np.testing.assert_array_equal(counts / 5000, bins.shares)
    edges = BinnedReference([1.0, 2.0], [0.2, 0.3, 0.5])
    assert edges.bin_counts([0.0, 1.0, 1.999, 2.0, 9.0]).tolist() == [1, 2, 2]
    with pytest.raises(ValueError, match="shares"):
        BinnedReference([1.0, 2.0], [0.5, 0.5])
    with pytest.raises(ValueError, match="increasing"):
        BinnedReference([2.0, 1.0], [0.2, 0.3, 0.5])


# --- KS --------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
def test_ks_equals_scipy_on_random_draws(seed):
    rng = np.random.default_rng(seed)
    n, m = (int(v) for v in rng.integers(1, 3000, size=2))
    draws = [
        (rng.normal(size=n), rng.normal(0.1, 1.2, size=m)),  # continuous
        (rng.integers(0, 6, n).astype(float), rng.integers(0, 7, m).astype(float)),  # ties
        (np.round(rng.normal(size=n), 1), np.round(rng.normal(size=m), 1)),  # ties across samples
        (rng.random(n) < 0.3, rng.random(m) < 0.25),  # binary feature
        (np.full(n, 2.0), np.full(m, 2.0)),  # identical constants: D = 0
    ]
    for a, b in draws:
        a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        expected = stats.ks_2samp(a, b).statistic
        assert abs(ks_statistic(a, b) - expected) <= 1e-12
        assert abs(ks_statistic(b, a) - expected) <= 1e-12


def test_ks_rejects_empty_and_nan():
    with pytest.raises(ValueError, match="empty"):
        ks_statistic([], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        ks_statistic([1.0], [1.0, float("nan")])


# --- FeatureWindow ---------------------------------------------------------------------------


def draw_features(rng, n, amount_scale=1.0):
    """Synthetic rows in FEATURE_NAMES order and a score that depends on them."""
    columns = {
        "TX_AMOUNT": rng.lognormal(3.5, 0.8, n) * amount_scale,
        "TX_DURING_WEEKEND": (rng.random(n) < 2 / 7).astype(float),
        "TX_DURING_NIGHT": (rng.random(n) < 0.25).astype(float),
    }
    for w, lam in ((1, 3), (7, 20), (30, 85)):
        columns[f"CUSTOMER_ID_NB_TX_{w}DAY_WINDOW"] = rng.poisson(lam, n).astype(float)
        columns[f"CUSTOMER_ID_AVG_AMOUNT_{w}DAY_WINDOW"] = rng.gamma(20 + w, 2.0, n)
    for w, lam in ((1, 2), (7, 14), (30, 60)):
        columns[f"TERMINAL_ID_NB_TX_{w}DAY_WINDOW"] = rng.poisson(lam, n).astype(float)
        risky = rng.random(n) < 0.1
        columns[f"TERMINAL_ID_RISK_{w}DAY_WINDOW"] = np.where(risky, rng.beta(1, 5, n), 0.0)
    X = np.column_stack([columns[name] for name in FEATURE_NAMES])
    logit = -5 + 0.02 * columns["TX_AMOUNT"] + 4 * columns["TERMINAL_ID_RISK_7DAY_WINDOW"]
    return X, 1 / (1 + np.exp(-logit))


@pytest.fixture(scope="module")
def reference():
    X, scores = draw_features(np.random.default_rng(0), 20_000)
    return reference_distributions(X, scores, seed=0)


def fill(window, X, scores, t0=T0, step=0.01):
    for i, (row, score) in enumerate(zip(X.tolist(), scores.tolist(), strict=True)):
        window.add(row, score, t0 + i * step)


def test_window_closes_by_count_with_schema_valid_records(reference):
    window = FeatureWindow(reference, FEATURE_NAMES, "v-test", max_events=100, max_seconds=3600)
    X, scores = draw_features(np.random.default_rng(1), 100)
    fill(window, X[:99], scores[:99])
    assert not window.ready(T0 + 1.0)
    window.add(X[99].tolist(), float(scores[99]), T0 + 1.0)
    assert window.ready(T0 + 1.0)
    records = window.close(T0 + 2.0)
    assert len(window) == 0 and window.start is None
    assert len(records) == 2 * len(FEATURE_NAMES) + 1
    expected = [(s, f) for f in FEATURE_NAMES for s in ("psi", "ks")] + [("psi", "score")]
    assert [(r["statistic"], r["subject"]) for r in records] == expected
    for rec in records:
        validate("drift_record", rec)
        assert rec["model_version"] == "v-test"
        assert rec["window"]["events"] == 100
        assert datetime.fromisoformat(rec["window"]["start"]).timestamp() == T0
        assert datetime.fromisoformat(rec["window"]["end"]).timestamp() == T0 + 2.0
        assert rec["alert"] is (rec["value"] > rec["threshold"])
        assert rec["threshold"] == (0.2 if rec["statistic"] == "psi" else 0.1)
    # the values are the module's own functions on the window's columns
    amount = records[0]
    assert amount["value"] == BinnedReference.from_dict(reference["features"]["TX_AMOUNT"]).psi(
        X[:, 0]
    )
    assert records[1]["value"] == ks_statistic(reference["sample"]["TX_AMOUNT"], X[:, 0])
    assert window.close(T0 + 3.0) == []


def test_window_closes_by_time(reference):
    window = FeatureWindow(reference, FEATURE_NAMES, "v-test", max_events=2000, max_seconds=60)
    assert not window.ready(T0 + 1e6)  # empty: never ready
    X, scores = draw_features(np.random.default_rng(2), 30)
    fill(window, X, scores, t0=T0 + 5.0, step=1.0)  # events at T0+5 .. T0+34
    assert window.start == T0 + 5.0
    assert not window.ready(T0 + 64.9)
    assert window.ready(T0 + 65.0)
    records = window.close(T0 + 65.0)
    assert {r["window"]["events"] for r in records} == {30}
    assert records[0]["window"]["start"] == "2023-11-14T22:13:25+00:00"
    assert records[0]["window"]["end"] == "2023-11-14T22:14:25+00:00"
    for rec in records:
        validate("drift_record", rec)
    # min_events keeps a quiet period from closing a tiny window
    sparse = FeatureWindow(
        reference, FEATURE_NAMES, "v-test", max_events=2000, max_seconds=60, min_events=50
    )
    fill(sparse, X, scores)
    assert not sparse.ready(T0 + 1e6)


def test_window_alert_flags_follow_configured_thresholds(reference):
    X, scores = draw_features(np.random.default_rng(4), 500)
    strict = FeatureWindow(
        reference, FEATURE_NAMES, "v", thresholds=DriftThresholds(psi=0.0, ks=0.0)
    )
    lax = FeatureWindow(reference, FEATURE_NAMES, "v", thresholds=DriftThresholds(psi=99, ks=1))
    fill(strict, X, scores)
    fill(lax, X, scores)
    strict_records, lax_records = strict.close(T0 + 10), lax.close(T0 + 10)
    assert [r["value"] for r in strict_records] == [r["value"] for r in lax_records]
    assert all(r["alert"] for r in strict_records if r["value"] > 0)
    assert not any(r["alert"] for r in lax_records)


def test_window_checks_rows_and_reference(reference):
    window = FeatureWindow(reference, FEATURE_NAMES, "v")
    with pytest.raises(ValueError, match="features"):
        window.add([1.0, 2.0], 0.5, T0)
    with pytest.raises(ModelIntegrityError, match="no reference"):
        FeatureWindow.from_manifest({"version": "v", "features": list(FEATURE_NAMES)})
    with pytest.raises(ModelIntegrityError, match="lack"):
        FeatureWindow({"features": {}, "sample": {}, "score": {}}, ["TX_AMOUNT"], "v")
    built = FeatureWindow.from_manifest(
        {"version": "v9", "features": list(FEATURE_NAMES), "reference": reference},
        max_events=10,
    )
    assert (built.model_version, built.max_events, built.features) == ("v9", 10, FEATURE_NAMES)


def run_windows(reference, seed, amount_scale=1.0, windows=5, size=2000):
    rng = np.random.default_rng(seed)
    window = FeatureWindow(reference, FEATURE_NAMES, "v-test", max_events=size)
    closed = []
    for w in range(windows):
        X, scores = draw_features(rng, size, amount_scale)
        fill(window, X, scores, t0=T0 + 100 * w)
        assert window.ready(T0 + 100 * w)
        closed.append(window.close(T0 + 100 * w + 50))
    return closed


def test_stationary_windows_raise_no_alert(reference):
    closed = run_windows(reference, seed=11)
    assert len(closed) == 5
    for records in closed:
        for rec in records:
            validate("drift_record", rec)
            assert rec["window"]["events"] == 2000
        assert not [r for r in records if r["alert"]]
        # far from the thresholds, not just under them
        assert max(r["value"] for r in records if r["statistic"] == "psi") < 0.05
        assert max(r["value"] for r in records if r["statistic"] == "ks") < 0.08


def test_amount_times_three_alerts_on_amount_and_score(reference):
    for records in run_windows(reference, seed=12, amount_scale=3.0):
        alerts = {(r["statistic"], r["subject"]) for r in records if r["alert"]}
        assert alerts == {("psi", "TX_AMOUNT"), ("ks", "TX_AMOUNT"), ("psi", "score")}
        by = {(r["statistic"], r["subject"]): r["value"] for r in records}
        assert by[("psi", "TX_AMOUNT")] > 1.0
        assert by[("ks", "TX_AMOUNT")] > 0.4


# --- change detectors ------------------------------------------------------------------------


def score_stream(rng, n, shifted=False):
    """Score-like values: Beta(2, 18) (mean 0.1), Beta(6, 14) (mean 0.3) once shifted."""
    return rng.beta(6, 14, n) if shifted else rng.beta(2, 18, n)


def label_error_stream(rng, n, shifted=False):
    """|label - score| at 2 % fraud; once shifted, legitimate events score Beta(3, 12)."""
    label = rng.random(n) < 0.02
    legit = rng.beta(3, 12, n) if shifted else rng.beta(1, 30, n)
    score = np.where(label, rng.beta(8, 2, n), legit)
    return np.abs(label - score)


STREAMS = {"score": score_stream, "label_error": label_error_stream}


def detection_indexes(detector, values):
    return [i for i, x in enumerate(values.tolist()) if detector.update(x)]


@pytest.mark.parametrize("subject", STREAMS)
@pytest.mark.parametrize("kind", ["adwin", "page_hinkley"])
def test_detector_finds_a_mean_shift_quickly(kind, subject):
    rng = np.random.default_rng(21)
    make = STREAMS[subject]
    values = np.concatenate([make(rng, CHANGE_AT), make(rng, 2000, shifted=True)])
    detector = ChangeDetector(kind, subject, "v-test")
    fired = detection_indexes(detector, values)
    assert fired, f"{kind} missed the shift on {subject}"
    delay = fired[0] - CHANGE_AT + 1  # post-change values consumed, the detecting one included
    assert 0 < delay < MAX_DELAY, f"{kind} on {subject}: delay {delay}"
    assert detector.detections == len(fired) >= 1
    assert detector.events == len(values)
    rec = detector.record(T0, T0 + 60)
    validate("drift_record", rec)
    assert rec["statistic"] == kind and rec["subject"] == subject
    assert rec["value"] == len(fired) and rec["threshold"] == 0.0 and rec["alert"] is True
    assert rec["window"]["events"] == len(values)
    quiet = detector.record(T0 + 60, T0 + 120)  # the window counts were reset
    assert (quiet["value"], quiet["alert"], quiet["window"]["events"]) == (0.0, False, 0)
    assert detector.detections == len(fired)


@pytest.mark.parametrize("subject", STREAMS)
@pytest.mark.parametrize("kind", ["adwin", "page_hinkley"])
def test_detector_is_quiet_on_a_stationary_stream(kind, subject):
    values = STREAMS[subject](np.random.default_rng(22), 20_000)
    detector = ChangeDetector(kind, subject, "v-test")
    assert detection_indexes(detector, values) == []
    assert detector.detections == 0 and detector.events == 20_000
    rec = detector.record(T0, T0 + 3600)
    validate("drift_record", rec)
    assert rec["alert"] is False and rec["window"]["events"] == 20_000


def test_detector_passes_parameters_and_rejects_bad_input():
    ph = ChangeDetector("page_hinkley", "score", "v", threshold=7.5, min_instances=10)
    assert (ph.detector.threshold, ph.detector.min_instances) == (7.5, 10)
    adwin = ChangeDetector("adwin", "label_error", "v", delta=0.01)
    assert adwin.detector.delta == 0.01
    with pytest.raises(ValueError, match="unknown detector"):
        ChangeDetector("cusum", "score", "v")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finite"):
        ph.update(float("nan"))
