"""The model registry: ``models/<version>/{model.joblib, manifest.json}``, verified before loading.

joblib files are pickles, and unpickling runs code. This loader reads the artifact's bytes once,
checks their SHA-256 against the manifest, and only then unpickles *those same bytes*; a file
that does not match, a missing or malformed manifest, or a feature list the feature module cannot
compute is refused with an error naming the file and what to do. The manifest is the trust
anchor: keep ``models/`` writable only by whoever publishes models.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import orjson

from stream_app.exceptions import ModelIntegrityError, ModelNotFoundError
from stream_app.features.definitions import FEATURE_NAMES

MANIFEST = "manifest.json"
MODEL_FILE = "model.joblib"
_REQUIRED = (
    "version",
    "sha256",
    "model_file",
    "model_type",
    "features",
    "training_data",
    "thresholds",
    "metrics",
)


@dataclass(frozen=True)
class Manifest:
    """What ``manifest.json`` promises about a model artifact."""

    version: str
    sha256: str
    model_file: str
    model_type: str
    features: tuple[str, ...]
    training_data_tag: str
    training_data_fingerprint: str
    thresholds: dict[str, float]
    metrics: dict[str, Any]
    raw: dict[str, Any]

    @classmethod
    def parse(cls, data: dict[str, Any], path: Path) -> Manifest:
        """Validate the manifest's fields; ``path`` is named in errors."""
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise ModelIntegrityError(
                f"{path}: manifest lacks {', '.join(missing)}; retrain "
                "with `stream-app train` or restore the manifest."
            )
        thresholds = data["thresholds"]
        if not (
            isinstance(thresholds, dict)
            and {"review", "decline"} <= thresholds.keys()
            and 0 <= thresholds["review"] <= thresholds["decline"] <= 1
        ):
            raise ModelIntegrityError(
                f"{path}: thresholds must hold 0 <= review <= decline <= 1, got {thresholds!r}."
            )
        features = data["features"]
        if not (
            isinstance(features, list) and features and all(isinstance(f, str) for f in features)
        ):
            raise ModelIntegrityError(f"{path}: features must be a non-empty list of names.")
        unknown = [f for f in features if f not in FEATURE_NAMES]
        if unknown:
            raise ModelIntegrityError(
                f"{path}: features {unknown} are not defined in stream_app.features.definitions; "
                "the worker cannot compute them. Add them there or retrain the model."
            )
        training = data["training_data"]
        return cls(
            version=str(data["version"]),
            sha256=str(data["sha256"]).lower(),
            model_file=str(data["model_file"]),
            model_type=str(data["model_type"]),
            features=tuple(features),
            training_data_tag=str(training.get("tag", "")),
            training_data_fingerprint=str(training.get("fingerprint", "")),
            thresholds={k: float(v) for k, v in thresholds.items() if k in ("review", "decline")},
            metrics=dict(data["metrics"]),
            raw=data,
        )


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_manifest(version_dir: Path) -> Manifest:
    """Parse ``version_dir/manifest.json``."""
    path = version_dir / MANIFEST
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError as exc:
        raise ModelIntegrityError(
            f"{path} is missing; a model is loaded only with its "
            "manifest. Retrain with `stream-app train`."
        ) from exc
    except orjson.JSONDecodeError as exc:
        raise ModelIntegrityError(f"{path} is not valid JSON ({exc}).") from exc
    if not isinstance(data, dict):
        raise ModelIntegrityError(f"{path} must hold a JSON object.")
    return Manifest.parse(data, path)


def load_verified(version_dir: Path) -> tuple[Manifest, dict[str, Any]]:
    """The manifest and the unpickled artifact, after its SHA-256 matched the manifest."""
    manifest = read_manifest(version_dir)
    path = version_dir / manifest.model_file
    if path.parent.resolve() != version_dir.resolve():
        raise ModelIntegrityError(
            f"{version_dir}: model_file must name a file in the version "
            f"directory, got {manifest.model_file!r}."
        )
    try:
        payload = path.read_bytes()
    except FileNotFoundError as exc:
        raise ModelIntegrityError(
            f"{path} is missing (named by {version_dir / MANIFEST})."
        ) from exc
    actual = hashlib.sha256(payload).hexdigest()
    if actual != manifest.sha256:
        raise ModelIntegrityError(
            f"Refusing to load {path}: its SHA-256 is {actual} but {version_dir / MANIFEST} "
            f"says {manifest.sha256}. The file was changed or truncated; restore it or retrain."
        )
    try:
        artifact = joblib.load(io.BytesIO(payload))
    except Exception as exc:  # a verified file that still fails is corrupt at the source
        raise ModelIntegrityError(f"{path} matches its hash but does not load: {exc}") from exc
    if not isinstance(artifact, dict) or "estimator" not in artifact:
        raise ModelIntegrityError(
            f"{path} is not a stream_app model bundle (dict with 'estimator')."
        )
    n_in = getattr(artifact["estimator"], "n_features_in_", len(manifest.features))
    if n_in != len(manifest.features):
        raise ModelIntegrityError(
            f"{path}: the estimator takes {n_in} features but the "
            f"manifest lists {len(manifest.features)}."
        )
    return manifest, artifact


def list_versions(models_dir: Path) -> list[str]:
    """Versions present in the registry (directories with a manifest), oldest first."""
    if not models_dir.is_dir():
        return []
    return sorted(p.name for p in models_dir.iterdir() if (p / MANIFEST).is_file())


def resolve_version(models_dir: Path, version: str | None) -> Path:
    """The directory of ``version``, or of the newest version when None."""
    versions = list_versions(models_dir)
    if version is None:
        if not versions:
            raise ModelNotFoundError(
                f"No model in {models_dir}. Train one with "
                "`stream-app train` (or set STREAM_APP_MODELS_DIR)."
            )
        version = versions[-1]
    path = models_dir / version
    if not (path / MANIFEST).is_file():
        raise ModelNotFoundError(
            f"Model version {version!r} not found in {models_dir} "
            f"(present: {', '.join(versions) or 'none'})."
        )
    return path
