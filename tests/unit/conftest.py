"""Fixtures for unit tests: a small real model version written by the project's trainer."""

from pathlib import Path

import numpy as np
import pytest

from stream_app.features.definitions import FEATURE_NAMES
from stream_app.training import (
    logit_covariance,
    make_estimator,
    reference_distributions,
    write_version,
)


def make_version(
    root: Path, model_type: str = "logreg", seed: int = 0, name: str | None = None
) -> Path:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(400, len(FEATURE_NAMES))) * 3 + 10
    y = (X[:, 0] + rng.normal(size=400) > 11).astype(int)
    est = make_estimator(model_type, seed)  # type: ignore[arg-type]
    est.fit(X, y)
    bundle = {
        "estimator": est,
        "feature_means": X.mean(axis=0),
        "logit_covariance": logit_covariance(est, X) if model_type == "logreg" else None,
    }
    manifest = {
        "version": name or f"v-{model_type}",
        "model_type": model_type,
        "model_file": "model.joblib",
        "sha256": "",
        "features": list(FEATURE_NAMES),
        "training_data": {"tag": "unit", "fingerprint": "f" * 64},
        "metrics": {},
        "thresholds": {"review": 0.5, "decline": 0.9},
        "reference": reference_distributions(X, est.predict_proba(X)[:, 1], seed),
    }
    target = root / (name or f"v-{model_type}")
    write_version(target, bundle, manifest)
    return target


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return make_version(tmp_path)
