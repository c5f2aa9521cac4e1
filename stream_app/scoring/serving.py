"""Which registered versions serve: ``models/serving.json``, changed by promote and rollback.

::

    {"champion": "20261123T120000Z-hgb", "challenger": null,
     "canary": null | {"version": "<the challenger's>", "share": 0.05},
     "updated_at": "2026-11-23T12:05:00+00:00",
     "history": [{"role": "champion", "version": "...", "previous": "...", "action": "promote",
                  "at": "..."}, ...]}

``stream-app models promote VERSION [--challenger]`` loads the version first (SHA-256 against
its manifest, feature list against the feature module) and writes the file only if that passes;
the write is atomic (a temporary file in the same directory, fsynced, then renamed over the old
one), so a worker never reads half a file. ``stream-app models canary VERSION --share 5%``
makes VERSION the challenger (if it is not) and lets it decide for that share of customers
(:mod:`stream_app.scoring.canary`); a promotion or rollback that moves the canary's version out of
the challenger's role, or makes it the champion, ends the canary. Running workers watch the file
(``STREAM_APP_MODEL_WATCH_INTERVAL_S``) and swap between two micro-batches; see
:mod:`stream_app.app`.

Which version a worker serves for a role: the setting (``STREAM_APP_CHAMPION`` /
``STREAM_APP_CHALLENGER`` or the ``--champion`` / ``--challenger`` option) pins it, and a pinned
role ignores promotions; otherwise ``serving.json``; otherwise, for the champion, the newest
registered version (and no challenger).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson

from stream_app.exceptions import ModelIntegrityError, ModelNotFoundError
from stream_app.scoring.registry import list_versions, resolve_version

SERVING_FILE = "serving.json"
Role = Literal["champion", "challenger"]
ROLES: tuple[Role, ...] = ("champion", "challenger")


@dataclass
class Serving:
    """The content of ``serving.json``."""

    champion: str | None = None
    challenger: str | None = None
    updated_at: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    canary: dict[str, Any] | None = None
    """``{"version", "share"}`` (:class:`~stream_app.scoring.canary.CanarySpec`), or None."""

    def get(self, role: Role) -> str | None:
        """The version serving ``role``."""
        return self.champion if role == "champion" else self.challenger

    def to_json(self) -> bytes:
        """The file's bytes."""
        return orjson.dumps(
            {
                "champion": self.champion,
                "challenger": self.challenger,
                "canary": self.canary,
                "updated_at": self.updated_at,
                "history": self.history,
            },
            option=orjson.OPT_INDENT_2,
        )


def serving_path(models_dir: Path) -> Path:
    """``models_dir/serving.json``."""
    return models_dir / SERVING_FILE


def read_serving(models_dir: Path) -> Serving | None:
    """The serving file, or None when there is none."""
    path = serving_path(models_dir)
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except orjson.JSONDecodeError as exc:
        raise ModelIntegrityError(
            f"{path} is not valid JSON ({exc}); fix it or promote a version again "
            "(`stream-app models promote VERSION`)."
        ) from exc
    if not isinstance(data, dict) or not all(
        data.get(role) is None or isinstance(data.get(role), str) for role in ROLES
    ):
        raise ModelIntegrityError(
            f"{path} must be an object with string or null 'champion' and 'challenger'."
        )
    return Serving(
        champion=data.get("champion"),
        challenger=data.get("challenger"),
        updated_at=data.get("updated_at"),
        history=list(data.get("history") or []),
        canary=_canary(data.get("canary"), path),
    )


def _canary(data: Any, path: Path) -> dict[str, Any] | None:
    from stream_app.scoring.canary import CanarySpec

    if data is not None and not isinstance(data, dict):
        raise ModelIntegrityError(f"{path}: 'canary' must be an object or null, got {data!r}")
    try:
        spec = CanarySpec.of(data)
    except ModelIntegrityError as exc:
        raise ModelIntegrityError(f"{path}: {exc}") from exc
    return spec.to_dict() if spec is not None else None


def write_serving(models_dir: Path, serving: Serving) -> None:
    """Replace the serving file atomically."""
    models_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".serving-", suffix=".json", dir=models_dir)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(serving.to_json())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, serving_path(models_dir))
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _current(models_dir: Path) -> Serving:
    """The serving file, or what a worker would serve without one (the newest champion)."""
    serving = read_serving(models_dir)
    if serving is not None:
        return serving
    versions = list_versions(models_dir)
    return Serving(champion=versions[-1] if versions else None)


def promote(
    models_dir: Path,
    version: str | None,
    role: Role = "champion",
    current: Serving | None = None,
    by: str | None = None,
    write: bool = True,
    audit: Mapping[str, str] | None = None,
) -> Serving:
    """Make ``version`` serve ``role`` (None: no challenger) once it loads hash-verified.

    ``current``: the assignment to change (the control topic's), instead of the file's;
    ``by`` (user@host) goes into the history entry, and so does ``audit`` (the audit record's
    ``id`` and ``reason``); ``write=False`` leaves the file as it is."""
    from stream_app.scoring.model import ScoringModel

    if version is None and role == "champion":
        raise ModelNotFoundError("A champion is always needed; name a version to promote.")
    if version is not None:
        ScoringModel.load(resolve_version(models_dir, version))  # raises what is wrong with it
    serving = _copy(current) if current is not None else _current(models_dir)
    previous = serving.get(role)
    serving.history.append(
        {
            "role": role,
            "version": version,
            "previous": previous,
            "action": "promote",
            "at": _now(),
        }
        | ({"by": by} if by else {})
        | dict(audit or {})
    )
    return _set(models_dir, serving, role, version, write)


def _copy(serving: Serving) -> Serving:
    return Serving(
        serving.champion,
        serving.challenger,
        serving.updated_at,
        [dict(h) for h in serving.history],
        dict(serving.canary) if serving.canary is not None else None,
    )


def rollback(
    models_dir: Path,
    role: Role = "champion",
    current: Serving | None = None,
    by: str | None = None,
    write: bool = True,
    audit: Mapping[str, str] | None = None,
) -> Serving:
    """Serve ``role`` with the version it had before its latest promotion (``current``, ``by``,
    ``write``, ``audit``: as for :func:`promote`)."""
    from stream_app.scoring.model import ScoringModel

    serving = _copy(current) if current is not None else read_serving(models_dir)
    now = serving.get(role) if serving is not None else None
    # The promotion that installed the current version (for the challenger, also a canary that
    # made its version the challenger); roll back to what it replaced.
    installed: list[tuple[str | None, str | None]] = []
    for h in serving.history if serving is not None else []:
        if h.get("role") == role and h.get("action") == "promote":
            installed.append((h.get("version"), h.get("previous")))
        elif (
            role == "challenger"
            and h.get("action") == "canary"
            and h.get("version")
            and h.get("challenger_before") != h["version"]
        ):
            installed.append((h["version"], h.get("challenger_before")))
    for version, replaced in reversed(installed):
        if version == now:
            target = replaced
            break
    else:
        raise ModelNotFoundError(
            f"No earlier {role} to roll back to in "
            f"{'the published assignment' if current is not None else serving_path(models_dir)}; "
            f"promote a version instead (`stream-app models promote VERSION`)."
        )
    assert serving is not None
    if target is None and role == "champion":
        raise ModelNotFoundError("The current champion replaced no earlier champion.")
    if target is not None:
        ScoringModel.load(resolve_version(models_dir, target))
    serving.history.append(
        {"role": role, "version": target, "previous": now, "action": "rollback", "at": _now()}
        | ({"by": by} if by else {})
        | dict(audit or {})
    )
    return _set(models_dir, serving, role, target, write)


def _set(
    models_dir: Path, serving: Serving, role: Role, version: str | None, write: bool = True
) -> Serving:
    if role == "champion":
        serving.champion = version
    else:
        serving.challenger = version
    canary = serving.canary
    if canary is not None and (
        serving.challenger != canary["version"] or serving.champion == canary["version"]
    ):
        serving.canary = None  # its version no longer challenges: the canary ends with it
    serving.updated_at = _now()
    if write:
        write_serving(models_dir, serving)
    return serving


def set_canary(
    models_dir: Path,
    version: str | None,
    share: float,
    current: Serving | None = None,
    by: str | None = None,
    write: bool = True,
    audit: Mapping[str, str] | None = None,
) -> Serving:
    """Let ``version`` decide for ``share`` (0-1) of customers as the canary; ``version`` None
    (or a share of 0) ends the canary. A version that is not the challenger yet becomes it (it
    loads hash-verified first, as for :func:`promote`); the champion cannot be its own canary.
    ``current``, ``by``, ``write``, ``audit``: as for :func:`promote`."""
    from stream_app.scoring.model import ScoringModel

    serving = _copy(current) if current is not None else _current(models_dir)
    before = dict(serving.canary) if serving.canary is not None else None
    if version is not None and share > 0:
        if version == serving.champion:
            raise ModelIntegrityError(
                f"{version} is the champion: a canary is a challenger deciding for a share of "
                "customers; name another version."
            )
        if version != serving.challenger:
            ScoringModel.load(resolve_version(models_dir, version))  # raises what is wrong
        previous_challenger = serving.challenger
        serving.challenger = version
        serving.canary = {"version": version, "share": share}
    else:
        if before is None:
            raise ModelNotFoundError("No canary is on; nothing to switch off.")
        previous_challenger = serving.challenger
        serving.canary = None
    serving.history.append(
        {
            "role": "canary",
            "version": version if serving.canary is not None else None,
            "previous": before["version"] if before is not None else None,
            "action": "canary",
            "share": serving.canary["share"] if serving.canary is not None else 0.0,
            "previous_share": before["share"] if before is not None else 0.0,
            "challenger_before": previous_challenger,
            "at": _now(),
        }
        | ({"by": by} if by else {})
        | dict(audit or {})
    )
    serving.updated_at = _now()
    if write:
        write_serving(models_dir, serving)
    return serving


def served_version(models_dir: Path, role: Role, pinned: str | None) -> str | None:
    """The version a worker starts with for ``role`` (see the module docstring)."""
    if pinned:
        return pinned
    serving = read_serving(models_dir)
    if serving is not None and (role == "challenger" or serving.champion):
        return serving.get(role)
    if role == "champion":
        return resolve_version(models_dir, None).name
    return None


class ServingWatcher:
    """Notices changes of ``serving.json`` by its (mtime, size, inode) signature."""

    def __init__(self, models_dir: Path) -> None:
        self.path = serving_path(models_dir)
        self.models_dir = models_dir
        self._signature = self._stat()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def changed(self) -> Serving | None:
        """The new content when the file changed since the last call, else None."""
        signature = self._stat()
        if signature == self._signature:
            return None
        self._signature = signature
        return read_serving(self.models_dir) if signature is not None else None
