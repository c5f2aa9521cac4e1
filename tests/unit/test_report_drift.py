"""The report's drift over time: daily PSI against the training reference."""

import numpy as np
import pandas as pd
import pytest

from stream_app.evaluation.report import ModelInfo, daily_drift, score_column


def _psi(edges, shares, values, eps=1e-4):
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(shares))
    actual = np.maximum(counts / counts.sum(), eps)
    expected = np.maximum(np.asarray(shares), eps)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def test_daily_psi_of_score_and_features_skips_calendar():
    reference = {
        "score": {"edges": [0.5], "shares": [0.8, 0.2]},
        "features": {
            "TX_AMOUNT": {"edges": [10.0, 100.0], "shares": [0.3, 0.4, 0.3]},
            "TX_DURING_NIGHT": {"edges": [0.5], "shares": [0.5, 0.5]},
        },
    }
    model = ModelInfo("v1", "s", "logreg", "champion", reference=reference)
    frame = pd.DataFrame(
        {
            "event_time": pd.to_datetime(
                ["2018-08-08T01:00", "2018-08-08T05:00", "2018-08-08T23:00", "2018-08-09T02:00"],
                utc=True,
            ),
            score_column("v1"): [0.1, 0.7, 0.2, 0.9],
            "TX_AMOUNT": [5.0, 50.0, 500.0, 500.0],
            "TX_DURING_NIGHT": [1.0, 1.0, 0.0, 1.0],
        }
    )
    drift = daily_drift(frame, model)
    assert drift["days"] == ["2018-08-08", "2018-08-09"]
    assert drift["score"] == pytest.approx(
        [_psi([0.5], [0.8, 0.2], [0.1, 0.7, 0.2]), _psi([0.5], [0.8, 0.2], [0.9])], abs=1e-12
    )
    assert set(drift["features"]) == {"TX_AMOUNT"}  # night is a calendar feature
    assert drift["features"]["TX_AMOUNT"] == pytest.approx(
        [
            _psi([10.0, 100.0], [0.3, 0.4, 0.3], [5.0, 50.0, 500.0]),
            _psi([10.0, 100.0], [0.3, 0.4, 0.3], [500.0]),
        ],
        abs=1e-12,
    )
