"""The audit trail of the models: the compacted topic ``models.audit``.

Every ``stream-app models promote`` / ``rollback`` / ``assignment --publish`` and every model
registered (``stream-app train``, ``stream-app models register``) writes one record
(``schemas/model_audit.schema.json``)::

    {"schema": 1, "id": "20261204T231502Z-3f9a1c0d", "action": "promote",
     "group": "stream-app", "role": "champion",
     "from": {"version": "...-logreg", "sha256": "..."},
     "to": {"version": "...-hgb", "sha256": "..."},
     "by": "ana@build-1", "at": "2026-12-04T23:15:02+00:00",
     "reason": "AP 0.66 vs 0.61 over 7 days", "assignment": "stream-app.models.assignment@12"}

The topic has one partition and ``cleanup.policy=compact``, keyed by the record's ``id``: each
record has a key of its own, so compaction never drops one, and nothing is deleted by time (a
tombstone under an id removes that record on purpose, e.g. to erase a person's name). The id is
made before the change is published and goes into the assignment's audit entry too, so the
worker that applies the change logs it (:mod:`stream_app.worker.live`) and
``stream-app models history`` shows the same id.

Order: a promote or rollback publishes the assignment first and writes its audit record after,
with the assignment's offset; if that write fails the change stands, and the command says so
(the assignment's own audit entry, ``stream-app models assignment``, still holds who, when and
why).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson

from stream_app.config import Settings
from stream_app.exceptions import ModelIntegrityError, ModelNotFoundError
from stream_app.io.schemas import ValidationError, validate

AUDIT_TOPIC = "models.audit"
SCHEMA = 1
Action = Literal["promote", "rollback", "canary", "publish", "register"]
ACTIONS: tuple[Action, ...] = ("promote", "rollback", "canary", "publish", "register")


class AuditError(ModelIntegrityError):
    """A ``models.audit`` record that is not valid, or a change without a reason."""


def new_id(now: datetime | None = None) -> str:
    """A record id that sorts by time: ``<UTC second>-<8 random hex digits>``."""
    moment = now or datetime.now(UTC)
    return f"{moment.astimezone(UTC):%Y%m%dT%H%M%S}Z-{uuid.uuid4().hex[:8]}"


def side(models_dir: Path, version: str | None) -> dict[str, str | None] | None:
    """``{"version", "sha256"}`` of ``version`` as its manifest in ``models_dir`` states it
    (``sha256`` None when it is not there); None for no version."""
    if version is None:
        return None
    from stream_app.scoring.registry import read_manifest

    try:
        digest: str | None = read_manifest(models_dir / version).sha256
    except (ModelIntegrityError, ModelNotFoundError, OSError):
        digest = None
    return {"version": version, "sha256": digest}


def check_reason(reason: str | None, action: str) -> str:
    """The reason, stripped; :class:`AuditError` when there is none."""
    text = (reason or "").strip()
    if not text:
        raise AuditError(
            f"a {action} needs a reason for the audit trail: pass --reason 'why' (it goes to "
            f"{AUDIT_TOPIC} with who and when)"
        )
    return text


@dataclass(frozen=True)
class AuditRecord:
    """One record of ``models.audit`` (the schema's fields; ``from`` is ``source``)."""

    id: str
    action: Action
    group: str
    role: str | None
    source: dict[str, Any] | None
    target: dict[str, Any] | None
    by: str
    at: str
    reason: str
    assignment: str | None = None

    @classmethod
    def new(
        cls,
        action: Action,
        group: str,
        *,
        by: str,
        reason: str,
        role: str | None = None,
        source: dict[str, Any] | None = None,
        target: dict[str, Any] | None = None,
        record_id: str | None = None,
        at: datetime | None = None,
    ) -> AuditRecord:
        """A record made now (``record_id``: one made beforehand with :func:`new_id`)."""
        moment = (at or datetime.now(UTC)).astimezone(UTC)
        return cls(
            id=record_id or new_id(moment),
            action=action,
            group=group,
            role=role,
            source=source,
            target=target,
            by=by,
            at=moment.isoformat(timespec="seconds"),
            reason=check_reason(reason, action),
        )

    def with_assignment(self, where: str | None) -> AuditRecord:
        """The same record, naming where its change was published."""
        return AuditRecord(**{**self.__dict__, "assignment": where})

    def to_dict(self) -> dict[str, Any]:
        """The record's JSON object, fields in the schema's order."""
        return {
            "schema": SCHEMA,
            "id": self.id,
            "action": self.action,
            "group": self.group,
            "role": self.role,
            "from": self.source,
            "to": self.target,
            "by": self.by,
            "at": self.at,
            "reason": self.reason,
            "assignment": self.assignment,
        }

    def encode(self) -> bytes:
        """The record value, checked against ``schemas/model_audit.schema.json``."""
        data = self.to_dict()
        try:
            validate("model_audit", data)
        except ValidationError as exc:
            raise AuditError(f"audit record {self.id} is not valid: {exc.message}") from exc
        return orjson.dumps(data)

    @classmethod
    def decode(cls, value: bytes) -> AuditRecord:
        """Parse and check a record value; :class:`AuditError` says what is wrong."""
        try:
            data = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise AuditError(f"not JSON ({exc})") from exc
        try:
            validate("model_audit", data)
        except ValidationError as exc:
            raise AuditError(f"not a model audit record: {exc.message}") from exc
        return cls(
            id=data["id"],
            action=data["action"],
            group=data["group"],
            role=data["role"],
            source=data["from"],
            target=data["to"],
            by=data["by"],
            at=data["at"],
            reason=data["reason"],
            assignment=data["assignment"],
        )

    def entry(self) -> dict[str, str]:
        """What the assignment's audit entry carries of this record: its id and reason."""
        return {"id": self.id, "reason": self.reason}


# --- Kafka --------------------------------------------------------------------------------------


def write(settings: Settings, record: AuditRecord, timeout: float = 30.0) -> int:
    """Append ``record`` to ``models.audit`` (created if missing; acks=all, idempotent), keyed by
    its id; the offset it got. :class:`KafkaAccessError` says why it could not."""
    from stream_app.io.topics import ensure_topics
    from stream_app.scoring.assignment_topic import produce_one

    value = record.encode()
    ensure_topics(settings, [AUDIT_TOPIC])
    return produce_one(settings, settings.topic(AUDIT_TOPIC), record.id.encode(), value, timeout)


@dataclass(frozen=True)
class Stored:
    """A record as read from the topic, with its offset."""

    offset: int
    record: AuditRecord


def read_history(
    settings: Settings, group: str | None = None, timeout: float = 15.0
) -> tuple[list[Stored], list[str]]:
    """Every record of ``models.audit`` (of ``group`` only, unless None), oldest first, read once
    from the beginning with a consumer of its own (no group offsets committed); and one line per
    record that could not be read. A missing topic gives no records."""
    from stream_app.scoring.assignment_topic import read_to_end

    topic = settings.topic(AUDIT_TOPIC)
    latest: dict[bytes, Stored] = {}
    problems: list[str] = []
    for msg in read_to_end(settings, topic, timeout):
        key, value = msg.key() or b"", msg.value()
        if value is None:  # a tombstone deletes that id's record
            latest.pop(key, None)
            continue
        try:
            record = AuditRecord.decode(value)
        except AuditError as exc:
            problems.append(f"{topic}[{msg.partition()}]@{msg.offset()}: {exc}")
            continue
        if group is None or record.group == group:
            latest[key] = Stored(msg.offset(), record)
    return sorted(latest.values(), key=lambda s: s.offset), problems


def describe(model: Mapping[str, Any] | None) -> str:
    """``version (sha256 0123456789ab)`` or ``-``."""
    if not model:
        return "-"
    digest = model.get("sha256")
    text = f"{model['version']} ({digest[:12]})" if digest else f"{model['version']} (?)"
    share = model.get("share")
    return text if share is None else f"{text} for {share * 100:g} %"
