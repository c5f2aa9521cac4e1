"""Assigned model versions fetched by URI into a worker's own models directory, verified first.

An assignment (:mod:`stream_app.scoring.assignment`) names each version with the URI of its
registry directory and two SHA-256 digests: the artifact's (the one its manifest states) and the
manifest file's. :func:`materialise` makes ``models_dir/<version>/`` hold exactly those bytes:

* a copy already there (a shared directory mounted as models_dir, an earlier fetch, a registry
  copied by hand) is checked, never trusted: its manifest must hash to the assignment's digest,
  state the assignment's artifact digest, and the artifact must hash to it;
* otherwise the manifest and the artifact are fetched from the URI (``file://``, a plain path, or
  ``http(s)://`` with urllib) into a temporary directory beside it, checked the same way, and only
  then renamed into place, so a half-fetched or mismatching version never appears in the cache.

A copy that does not match is refused (:class:`ArtifactRefused`, with a reason code for the
metric) and left as it is, as evidence: the worker keeps serving what it served. Deleting the
directory makes the next attempt fetch the version again. Loading (joblib) happens afterwards, in
:func:`stream_app.scoring.registry.load_verified`, which checks the artifact against the manifest
once more on the very bytes it unpickles.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from stream_app.exceptions import ModelIntegrityError
from stream_app.scoring.registry import MANIFEST

if TYPE_CHECKING:
    from stream_app.scoring.assignment import ModelRef

REASON_SHA256 = "sha256_mismatch"
"""The artifact's bytes do not hash to the assignment's digest (or the manifest states another)."""
REASON_MANIFEST = "manifest_mismatch"
"""The manifest's bytes do not hash to the assignment's digest."""
REASON_FETCH = "fetch_failed"
"""The URI could not be read (missing file, HTTP error, timeout)."""
REASON_INVALID = "invalid"
"""The version does not load once verified, or its manifest is malformed."""
REASONS = (REASON_SHA256, REASON_MANIFEST, REASON_FETCH, REASON_INVALID)


class ArtifactRefused(ModelIntegrityError):
    """An assigned version that is not used; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def child_uri(base: str, name: str) -> str:
    """``name`` inside the directory ``base`` (a URI or a plain path)."""
    if "://" in base:
        return base.rstrip("/") + "/" + urllib.parse.quote(name)
    return str(Path(base) / name)


def fetch_bytes(uri: str, timeout: float) -> bytes:
    """The bytes at ``uri``: ``file://``, a plain path, or ``http(s)://``; :class:`ArtifactRefused`
    (``fetch_failed``) when it cannot be read."""
    scheme = urllib.parse.urlsplit(uri).scheme.lower() if "://" in uri else ""
    try:
        if scheme in ("", "file"):
            path = (
                Path(urllib.request.url2pathname(urllib.parse.urlsplit(uri).path))
                if scheme
                else Path(uri)
            )
            return path.read_bytes()
        if scheme in ("http", "https"):
            with urllib.request.urlopen(uri, timeout=timeout) as response:  # noqa: S310
                data: bytes = response.read()
                return data
    except urllib.error.HTTPError as exc:
        raise ArtifactRefused(
            REASON_FETCH, f"cannot fetch {uri}: HTTP {exc.code} {exc.reason}"
        ) from exc
    except (OSError, urllib.error.URLError) as exc:
        raise ArtifactRefused(REASON_FETCH, f"cannot fetch {uri}: {exc}") from exc
    raise ArtifactRefused(
        REASON_FETCH, f"cannot fetch {uri}: only file://, plain paths and http(s):// are supported"
    )


def check_version(
    ref: ModelRef, manifest_bytes: bytes, read_artifact: Callable[[str], bytes], where: str
) -> str:
    """Check a version's manifest bytes and artifact against ``ref``; the artifact's file name.

    ``read_artifact(file_name)`` returns the artifact's bytes; ``where`` names the copy in errors.
    """
    actual = sha256_hex(manifest_bytes)
    if ref.manifest_sha256 and actual != ref.manifest_sha256:
        raise ArtifactRefused(
            REASON_MANIFEST,
            f"{where}/{MANIFEST} has SHA-256 {actual} but the assignment says "
            f"{ref.manifest_sha256}",
        )
    try:
        manifest = orjson.loads(manifest_bytes)
        stated = str(manifest["sha256"]).lower()
        model_file = str(manifest["model_file"])
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise ArtifactRefused(
            REASON_INVALID, f"{where}/{MANIFEST} is not a manifest ({exc!r})"
        ) from exc
    if stated != ref.sha256:
        raise ArtifactRefused(
            REASON_SHA256,
            f"{where}/{MANIFEST} states artifact SHA-256 {stated} but the assignment says "
            f"{ref.sha256}",
        )
    if not model_file or "/" in model_file or "\\" in model_file or model_file in (".", ".."):
        raise ArtifactRefused(
            REASON_INVALID,
            f"{where}/{MANIFEST}: model_file must be a file name, got {model_file!r}",
        )
    actual = sha256_hex(read_artifact(model_file))
    if actual != ref.sha256:
        raise ArtifactRefused(
            REASON_SHA256,
            f"{where}/{model_file} has SHA-256 {actual} but its manifest and the assignment say "
            f"{ref.sha256}",
        )
    return model_file


class ArtifactReader:
    """Reads (once) the files of one version from a directory or URI."""

    def __init__(self, base: str, timeout: float) -> None:
        self.base = base
        self.timeout = timeout
        self.cache: dict[str, bytes] = {}

    def __call__(self, name: str) -> bytes:
        if name not in self.cache:
            self.cache[name] = fetch_bytes(child_uri(self.base, name), self.timeout)
        return self.cache[name]


def materialise(ref: ModelRef, models_dir: Path, timeout: float = 60.0) -> tuple[Path, bool]:
    """``models_dir/<version>`` holding exactly what ``ref`` names: (the directory, whether it was
    fetched now). Raises :class:`ArtifactRefused`."""
    if not ref.version or ref.version in (".", "..") or "/" in ref.version or "\\" in ref.version:
        raise ArtifactRefused(REASON_INVALID, f"version {ref.version!r} is not a directory name")
    target = models_dir / ref.version
    if (target / MANIFEST).is_file():  # present: check it, never trust it
        local = ArtifactReader(str(target), timeout)
        try:
            manifest = (target / MANIFEST).read_bytes()
        except OSError as exc:
            raise ArtifactRefused(REASON_FETCH, f"cannot read {target / MANIFEST}: {exc}") from exc
        try:
            check_version(ref, manifest, local, str(target))
        except ArtifactRefused as exc:
            raise ArtifactRefused(
                exc.reason,
                f"{exc} (the copy in this worker's models directory; it is kept as it is: "
                f"delete {target} to fetch the version again from {ref.uri})",
            ) from exc
        return target, False

    remote = ArtifactReader(ref.uri, timeout)
    manifest = remote(MANIFEST)
    model_file = check_version(ref, manifest, remote, ref.uri.rstrip("/"))
    models_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".fetch-{ref.version}-", dir=models_dir))
    try:
        for name, data in ((model_file, remote(model_file)), (MANIFEST, manifest)):
            with (tmp / name).open("wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        try:
            os.rename(tmp, target)
        except OSError:  # another fetch of the same version won the race: check that one
            if not (target / MANIFEST).is_file():
                raise
            return materialise(ref, models_dir, timeout)[0], False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target, True
