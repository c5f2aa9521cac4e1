"""DriftMonitor: windows closed by count or event time, checked against numpy/scipy."""

import math

import numpy as np
import pytest
from scipy import stats

from stream_app.features.definitions import CALENDAR_FEATURES
from stream_app.io.schemas import validator
from stream_app.monitoring.drift_monitor import DriftMonitor
from stream_app.scoring.model import ScoringModel

T0 = 1_525_132_800.0  # 2018-05-01T00:00:00Z


@pytest.fixture
def model(model_dir):
    return ScoringModel.load(model_dir)


def _psi(edges, shares, values, eps=1e-4):
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(shares))
    actual = np.maximum(counts / counts.sum(), eps)
    expected = np.maximum(np.asarray(shares), eps)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def test_window_closes_by_count_with_exact_statistics(model):
    rng = np.random.default_rng(11)
    X = rng.normal(size=(250, len(model.features))) * 3 + 10
    scores = model.predict(X)
    times = [T0 + i for i in range(250)]
    monitor = DriftMonitor(model, max_events=100, max_seconds=1e9)
    records = []
    for lo in range(0, 250, 60):  # batches that straddle window boundaries
        records += monitor.observe(
            X[lo : lo + 60], scores[lo : lo + 60].tolist(), times[lo : lo + 60]
        )
    monitored = [
        (j, name) for j, name in enumerate(model.features) if name not in CALENDAR_FEATURES
    ]
    assert len(monitored) == len(model.features) - 2  # weekend and night are calendar
    d = len(monitored)
    per_window = 2 * d + 2  # PSI + KS per feature, PSI of the score, the detector's record
    assert monitor.windows == 2 and len(records) == 2 * per_window
    validate = validator("drift_record")
    for r in records:
        validate(r)
    ref = model.manifest.raw["reference"]
    for w, lo in enumerate((0, 100)):
        window = records[w * per_window : (w + 1) * per_window]
        block = X[lo : lo + 100]
        for i, (j, name) in enumerate(monitored):
            psi_rec, ks_rec = window[2 * i], window[2 * i + 1]
            assert (psi_rec["statistic"], psi_rec["subject"]) == ("psi", name)
            bins = ref["features"][name]
            assert psi_rec["value"] == pytest.approx(
                _psi(bins["edges"], bins["shares"], block[:, j]), abs=1e-9
            )
            expected_ks = stats.ks_2samp(ref["sample"][name], block[:, j]).statistic
            assert ks_rec["value"] == pytest.approx(expected_ks, abs=1e-9)
            assert ks_rec["alert"] == (ks_rec["value"] > 0.1)
        score_rec = window[2 * d]
        assert (score_rec["statistic"], score_rec["subject"]) == ("psi", "score")
        assert score_rec["value"] == pytest.approx(
            _psi(ref["score"]["edges"], ref["score"]["shares"], scores[lo : lo + 100]), abs=1e-9
        )
        detector = window[-1]
        assert (detector["statistic"], detector["subject"]) == ("adwin", "score")
        assert detector["window"] == window[0]["window"]
        assert detector["window"]["events"] == 100
        minute, second = divmod(lo, 60)
        assert window[0]["window"]["start"] == f"2018-05-01T00:{minute:02d}:{second:02d}+00:00"


def test_window_closes_by_event_time_once_it_holds_min_events(model):
    X = np.full((6, len(model.features)), 10.0)
    scores = [0.2] * 6
    monitor = DriftMonitor(model, max_events=1000, max_seconds=3600.0, min_events=3)
    # Two events an hour apart: old enough but too few. The third closes it.
    assert monitor.observe(X[:2], scores[:2], [T0, T0 + 3600.0]) == []
    records = monitor.observe(X[2:3], scores[2:3], [T0 + 3700.0])
    assert records and {r["window"]["events"] for r in records} == {3}
    assert records[0]["window"]["end"] == "2018-05-01T01:01:40+00:00"
    assert all(math.isfinite(r["value"]) for r in records)


def test_detector_fires_on_a_score_shift(model):
    X = np.full((1, len(model.features)), 10.0)
    monitor = DriftMonitor(model, max_events=400, max_seconds=1e9, detector="page_hinkley")
    records = []
    for i in range(800):
        score = 0.05 if i < 400 else 0.6
        records += monitor.observe(X, [score], [T0 + i])
    detectors = [r for r in records if r["statistic"] == "page_hinkley"]
    # Window 1 (quiet), the detection itself (published at once), window 2's close (no further
    # detection since).
    assert [r["alert"] for r in detectors] == [False, True, False]
    fired = detectors[1]
    assert fired["value"] == 1.0
    assert fired["window"]["start"] == "2018-05-01T00:06:40+00:00"  # window 2 opened at 400
    assert 0 < fired["window"]["events"] <= 400
