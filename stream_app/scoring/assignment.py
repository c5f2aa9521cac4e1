"""One model assignment for the whole consumer group: the compacted control topic.

``models.assignment`` (declared in ``topics/topics.toml``: one partition, compacted, never deleted
by time) holds, under the key of the app id (the consumer group), the latest assignment::

    {"schema": 1, "group": "stream-app",
     "champion":   {"version": "...", "uri": "http://models.internal/models/<v>/",
                    "sha256": "<artifact, as its manifest states>",
                    "manifest_sha256": "<the manifest file>"},
     "challenger": null | {...},
     "canary": null | {"version": "<the challenger's>", "share": 0.05},
     "audit": {"action": "promote", "role": "champion", "version": "...", "previous": "...",
               "by": "user@host", "at": "2026-11-23T12:05:00+00:00"},
     "history": [<earlier audit entries, oldest first, at most HISTORY_KEPT>]}

``stream-app models promote`` / ``rollback`` publish a new one (after the version loads,
hash-verified, on the publishing machine); ``models/serving.json`` is still written there, and it
is what the topic is initialised from while it is empty. Every worker reads the topic from its
first offset with a consumer of its own (:class:`~stream_app.scoring.assignment_topic.
AssignmentFollower`: manual assignment, no commits, never in the stages' group), the latest record
of its group's key wins, and the versions are fetched by URI and checked before they load
(:mod:`stream_app.scoring.artifacts`).

This module holds the record (its types and its bytes) and its conversion from and to
``serving.json``; :mod:`stream_app.scoring.assignment_topic` reads and writes it on Kafka.

``canary``: the challenger decides instead of the champion for that sticky share of customers
(:mod:`stream_app.scoring.canary`; ``stream-app models canary``). A record of a newer ``schema`` is
refused (logged), and the worker keeps what it serves.
"""

from __future__ import annotations

import getpass
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from stream_app.config import Settings
from stream_app.exceptions import ModelIntegrityError
from stream_app.scoring.canary import CanarySpec
from stream_app.scoring.registry import MANIFEST, read_manifest, sha256_file
from stream_app.scoring.serving import ROLES, Role, Serving

ASSIGNMENT_TOPIC = "models.assignment"
SCHEMA = 1
HISTORY_KEPT = 50
"""Audit entries carried in each record (compaction keeps only the latest record per key)."""


class AssignmentError(ModelIntegrityError):
    """A control-topic record that is not a valid assignment."""


@dataclass(frozen=True)
class ModelRef:
    """One assigned version: where to fetch it and the digests it must match."""

    version: str
    uri: str
    sha256: str
    manifest_sha256: str

    def to_dict(self) -> dict[str, str]:
        """The record's fields, in order."""
        return {
            "version": self.version,
            "uri": self.uri,
            "sha256": self.sha256,
            "manifest_sha256": self.manifest_sha256,
        }


@dataclass(frozen=True)
class Assignment:
    """The versions every worker of ``group`` serves, and who set them."""

    group: str
    champion: ModelRef
    challenger: ModelRef | None = None
    canary: dict[str, Any] | None = None
    audit: dict[str, Any] = field(default_factory=dict)
    history: tuple[dict[str, Any], ...] = ()

    def get(self, role: Role) -> ModelRef | None:
        """The version assigned to ``role``."""
        return self.champion if role == "champion" else self.challenger

    def versions(self) -> dict[str, str | None]:
        """``{"champion": ..., "challenger": ...}``."""
        return {role: ref.version if (ref := self.get(role)) else None for role in ROLES}

    def canary_spec(self) -> CanarySpec | None:
        """The canary it names, if any."""
        return CanarySpec.of(self.canary)


# --- the record -------------------------------------------------------------------------------


def encode(assignment: Assignment) -> bytes:
    """The record value (compact JSON, fields in a fixed order)."""
    challenger = assignment.challenger
    return orjson.dumps(
        {
            "schema": SCHEMA,
            "group": assignment.group,
            "champion": assignment.champion.to_dict(),
            "challenger": challenger.to_dict() if challenger is not None else None,
            "canary": assignment.canary,
            "audit": assignment.audit,
            "history": list(assignment.history),
        }
    )


def _ref(data: Any, where: str) -> ModelRef:
    if not isinstance(data, dict):
        raise AssignmentError(f"{where} must be an object, got {data!r}")
    values = {}
    for name in ("version", "uri", "sha256", "manifest_sha256"):
        value = data.get(name)
        if not isinstance(value, str) or not value:
            raise AssignmentError(f"{where}.{name} must be a non-empty string, got {value!r}")
        values[name] = value
    for name in ("sha256", "manifest_sha256"):
        digest = values[name].lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise AssignmentError(f"{where}.{name} must be 64 hex digits, got {values[name]!r}")
        values[name] = digest
    return ModelRef(**values)


def decode(value: bytes) -> Assignment:
    """Parse a record value; :class:`AssignmentError` says what is wrong with it."""
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise AssignmentError(f"not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise AssignmentError("must be a JSON object")
    schema = data.get("schema")
    if schema != SCHEMA:
        raise AssignmentError(
            f"schema {schema!r} is not {SCHEMA}: written by another version of stream-app "
            "(upgrade this worker to follow it)"
        )
    group = data.get("group")
    if not isinstance(group, str) or not group:
        raise AssignmentError(f"group must be a non-empty string, got {group!r}")
    challenger = data.get("challenger")
    canary = data.get("canary")
    audit = data.get("audit") or {}
    history = data.get("history") or []
    if canary is not None and not isinstance(canary, dict):
        raise AssignmentError(f"canary must be an object or null, got {canary!r}")
    try:
        spec = CanarySpec.of(canary)
    except ModelIntegrityError as exc:
        raise AssignmentError(str(exc)) from exc
    if not isinstance(audit, dict) or not isinstance(history, list):
        raise AssignmentError("audit must be an object and history a list")
    return Assignment(
        group=group,
        champion=_ref(data.get("champion"), "champion"),
        challenger=_ref(challenger, "challenger") if challenger is not None else None,
        canary=spec.to_dict() if spec is not None else None,
        audit=audit,
        history=tuple(h for h in history if isinstance(h, dict)),
    )


# --- from and to serving.json -------------------------------------------------------------------


def who() -> str:
    """``user@host`` of this process, for the audit entry."""
    try:
        user = getpass.getuser()
    except Exception:  # no login name (a container without a passwd entry)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def base_uri(settings: Settings) -> str:
    """``STREAM_APP_MODELS_URI``, else the ``file://`` URI of the models directory."""
    if settings.models_uri:
        return settings.models_uri.rstrip("/") + "/"
    return settings.models_dir.resolve().as_uri().rstrip("/") + "/"


def model_ref(models_dir: Path, version: str, base: str) -> ModelRef:
    """The reference to ``models_dir/version`` as published at ``base``."""
    version_dir = models_dir / version
    manifest = read_manifest(version_dir)
    return ModelRef(
        version=version,
        uri=f"{base.rstrip('/')}/{version}/",
        sha256=manifest.sha256,
        manifest_sha256=sha256_file(version_dir / MANIFEST),
    )


def from_serving(
    serving: Serving,
    models_dir: Path,
    group: str,
    base: str,
    by: str | None = None,
    previous: Assignment | None = None,
) -> Assignment:
    """The assignment for ``serving`` (its latest history entry is the audit entry). A role whose
    version ``previous`` already names keeps that reference (its URI and digests) as it is."""
    if serving.champion is None:
        raise ModelIntegrityError("An assignment needs a champion; promote a version first.")
    by = by or who()

    def ref(role: Role, version: str) -> ModelRef:
        kept = previous.get(role) if previous is not None else None
        if kept is not None and kept.version == version:
            return kept
        return model_ref(models_dir, version, base)

    history = [dict(h) for h in serving.history[-HISTORY_KEPT - 1 :]]
    audit = history.pop() if history else {"action": "publish", "at": serving.updated_at}
    audit.setdefault("by", by)
    return Assignment(
        group=group,
        champion=ref("champion", serving.champion),
        challenger=ref("challenger", serving.challenger) if serving.challenger else None,
        canary=dict(serving.canary) if serving.canary is not None else None,
        audit=audit,
        history=tuple(history[-HISTORY_KEPT:]),
    )


def to_serving(assignment: Assignment) -> Serving:
    """The assignment as ``serving.json`` content (history: the audit trail, oldest first)."""
    trail = (
        [*assignment.history, assignment.audit] if assignment.audit else list(assignment.history)
    )
    return Serving(
        champion=assignment.champion.version,
        challenger=assignment.challenger.version if assignment.challenger else None,
        updated_at=assignment.audit.get("at"),
        history=[dict(h) for h in trail],
        canary=dict(assignment.canary) if assignment.canary is not None else None,
    )


@dataclass(frozen=True)
class Published:
    """An assignment as read from the topic."""

    assignment: Assignment
    offset: int
    partition: int = 0
    timestamp_ms: int | None = None
    """The record's timestamp (the publisher's clock)."""
