"""The registry loads an artifact only when its SHA-256 matches the manifest."""

import hashlib

import orjson
import pytest

from stream_app.exceptions import ModelIntegrityError, ModelNotFoundError
from stream_app.scoring.registry import list_versions, load_verified, resolve_version


def test_verified_load(model_dir):
    manifest, artifact = load_verified(model_dir)
    assert manifest.sha256 == hashlib.sha256((model_dir / "model.joblib").read_bytes()).hexdigest()
    assert manifest.thresholds == {"review": 0.5, "decline": 0.9}
    assert hasattr(artifact["estimator"], "predict_proba")


def test_tampered_model_is_refused_naming_both_hashes(model_dir):
    path = model_dir / "model.joblib"
    good = hashlib.sha256(path.read_bytes()).hexdigest()
    path.write_bytes(path.read_bytes() + b"\x00")
    bad = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(ModelIntegrityError) as err:
        load_verified(model_dir)
    assert str(path) in str(err.value) and good in str(err.value) and bad in str(err.value)


def test_truncated_model_is_refused(model_dir):
    path = model_dir / "model.joblib"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ModelIntegrityError, match="SHA-256"):
        load_verified(model_dir)


def edit_manifest(model_dir, **changes):
    path = model_dir / "manifest.json"
    data = orjson.loads(path.read_bytes())
    data.update(changes)
    path.write_bytes(orjson.dumps(data))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"features": ["TX_AMOUNT", "NOT_A_FEATURE"]}, "NOT_A_FEATURE"),
        ({"features": []}, "non-empty"),
        ({"thresholds": {"review": 0.9, "decline": 0.5}}, "review <= decline"),
        ({"model_file": "../elsewhere.joblib"}, "version directory"),
    ],
)
def test_bad_manifest_is_refused(model_dir, changes, message):
    edit_manifest(model_dir, **changes)
    with pytest.raises(ModelIntegrityError, match=message):
        load_verified(model_dir)


def test_feature_count_must_match_estimator(model_dir):
    edit_manifest(model_dir, features=["TX_AMOUNT"])
    with pytest.raises(ModelIntegrityError, match="takes 15 features"):
        load_verified(model_dir)


def test_missing_or_malformed_manifest(model_dir):
    (model_dir / "manifest.json").write_text("{oops")
    with pytest.raises(ModelIntegrityError, match="not valid JSON"):
        load_verified(model_dir)
    (model_dir / "manifest.json").unlink()
    with pytest.raises(ModelIntegrityError, match="missing"):
        load_verified(model_dir)


def test_resolve_newest_and_missing(tmp_path, model_dir):
    root = model_dir.parent
    assert list_versions(root) == ["v-logreg"]
    assert resolve_version(root, None) == model_dir
    with pytest.raises(ModelNotFoundError, match="v-none"):
        resolve_version(root, "v-none")
    with pytest.raises(ModelNotFoundError, match="stream-app train"):
        resolve_version(tmp_path / "empty", None)
