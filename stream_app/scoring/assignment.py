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
first offset with a consumer of its own (:class:`AssignmentFollower`: manual assignment, no
commits, never in the stages' group), the latest record of its group's key wins, and the versions
are fetched by URI and checked before they load (:mod:`stream_app.scoring.artifacts`).

``canary``: the challenger decides instead of the champion for that sticky share of customers
(:mod:`stream_app.scoring.canary`; ``stream-app models canary``). A record of a newer ``schema`` is
refused (logged), and the worker keeps what it serves.
"""

from __future__ import annotations

import getpass
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from stream_app.config import Settings
from stream_app.exceptions import KafkaAccessError, ModelIntegrityError
from stream_app.scoring.artifacts import sha256_hex
from stream_app.scoring.canary import CanarySpec
from stream_app.scoring.registry import MANIFEST, read_manifest
from stream_app.scoring.serving import ROLES, Role, Serving

log = logging.getLogger("stream_app.models")

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
        manifest_sha256=sha256_hex((version_dir / MANIFEST).read_bytes()),
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


# --- Kafka --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Published:
    """An assignment as read from the topic."""

    assignment: Assignment
    offset: int
    partition: int = 0
    timestamp_ms: int | None = None
    """The record's timestamp (the publisher's clock)."""


def _consumer(settings: Settings) -> Any:
    from confluent_kafka import Consumer

    return Consumer(
        {
            **settings.kafka_client_config(),
            # never joins a group nor commits: manual assignment only
            "group.id": f"{settings.app_id}.assignment-reader.{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )


def _partitions(consumer: Any, topic: str, timeout: float) -> list[int] | None:
    """The topic's partitions; None when it does not exist."""
    from confluent_kafka import KafkaError

    meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if meta is None or meta.error is not None:
        if meta is not None and meta.error.code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
            raise KafkaAccessError(f"{topic} is not readable: {meta.error}")
        return None
    return sorted(meta.partitions)


def read_to_end(settings: Settings, topic: str, timeout: float = 15.0) -> Iterator[Any]:
    """Every record of ``topic`` from its first offset to the end it has now (confluent-kafka
    messages), read with a consumer of its own (manual assignment, nothing committed); nothing
    when the topic does not exist. :class:`KafkaAccessError` when it cannot be read in time."""
    from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

    consumer = _consumer(settings)
    try:
        try:
            partitions = _partitions(consumer, topic, timeout)
        except KafkaException as exc:
            raise KafkaAccessError(f"cannot read {topic}: {exc}") from exc
        if not partitions:
            return
        end: dict[int, int] = {}
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            if high > low:
                end[p] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in end])
        deadline = time.monotonic() + timeout
        while end:
            if time.monotonic() > deadline:
                raise KafkaAccessError(f"{topic} not read to its end within {timeout:.0f} s")
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            partition, offset = msg.partition(), msg.offset()
            if partition in end and offset + 1 >= end[partition]:
                del end[partition]
            yield msg
    finally:
        consumer.close()


def read_latest(settings: Settings, timeout: float = 15.0) -> Published | None:
    """The latest valid assignment of this group on the topic, read once from its beginning;
    None when there is none (no topic, no record of this group, or a tombstone last)."""
    topic = settings.topic(ASSIGNMENT_TOPIC)
    key = settings.app_id.encode()
    latest: Published | None = None
    for msg in read_to_end(settings, topic, timeout):
        if msg.key() != key:
            continue
        partition, offset, value = msg.partition(), msg.offset(), msg.value()
        if value is None:
            latest = None
            continue
        try:
            latest = Published(decode(value), offset, partition, msg.timestamp()[1])
        except AssignmentError as exc:
            log.error("%s[%d]@%d is not a valid assignment: %s", topic, partition, offset, exc)
    return latest


def produce_one(
    settings: Settings, topic: str, key: bytes, value: bytes, timeout: float = 30.0
) -> int:
    """Write one record (acks=all, idempotent) and wait for it; its offset.
    :class:`KafkaAccessError` says why it could not be written."""
    from confluent_kafka import KafkaException, Producer

    producer = Producer(
        {
            **settings.kafka_client_config(),
            "acks": "all",
            "enable.idempotence": True,
            "message.timeout.ms": int(timeout * 1000),
        }
    )
    result: dict[str, Any] = {}

    def delivered(err: Any, msg: Any) -> None:
        result["err"], result["offset"] = err, msg.offset() if err is None else None

    try:
        producer.produce(topic, value, key, on_delivery=delivered)
    except KafkaException as exc:
        raise KafkaAccessError(f"cannot write to {topic}: {exc}") from exc
    producer.flush(timeout + 5)
    if "err" not in result:
        raise KafkaAccessError(f"{topic}: no delivery report within {timeout:.0f} s")
    if result["err"] is not None:
        raise KafkaAccessError(f"cannot write to {topic}: {result['err']}")
    return int(result["offset"])


def publish(settings: Settings, assignment: Assignment, timeout: float = 30.0) -> int:
    """Write ``assignment`` to the topic (acks=all, idempotent); its offset."""
    topic = settings.topic(ASSIGNMENT_TOPIC)
    return produce_one(settings, topic, settings.app_id.encode(), encode(assignment), timeout)


class AssignmentFollower:
    """A thread that reads the control topic from its beginning and keeps this group's latest
    assignment; ``on_change`` is called (from the thread) after each new one."""

    def __init__(self, settings: Settings, on_change: Callable[[], None] = lambda: None) -> None:
        self.settings = settings
        self.topic = settings.topic(ASSIGNMENT_TOPIC)
        self.key = settings.app_id.encode()
        self.on_change = on_change
        self._latest: Published | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.caught_up = threading.Event()
        """Set once the topic was read to the end seen at start (or found empty)."""
        self.error: str | None = None
        """The latest record of this group, when it is not a valid assignment."""
        self._thread = threading.Thread(target=self._run, name="assignment-follower", daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (it closes its consumer)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def latest(self) -> Published | None:
        """This group's latest valid assignment, if any."""
        with self._lock:
            return self._latest

    def _set(self, published: Published | None, error: str | None) -> None:
        with self._lock:
            self._latest, self.error = published, error
        self.on_change()

    def _run(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

        while not self._stop.is_set():
            consumer = None
            try:
                consumer = _consumer(self.settings)
                partitions = _partitions(consumer, self.topic, 10.0)
                if not partitions:  # not created yet: `topics apply` or a promote creates it
                    self.caught_up.set()
                    self._stop.wait(5.0)
                    continue
                waiting = set()
                for p in partitions:
                    low, high = consumer.get_watermark_offsets(
                        TopicPartition(self.topic, p), timeout=10.0
                    )
                    if high > low:
                        waiting.add(p)
                if not waiting:
                    self.caught_up.set()
                consumer.assign(
                    [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions]
                )
                while not self._stop.is_set():
                    msg = consumer.poll(0.5)
                    if msg is None:
                        continue
                    err = msg.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            waiting.discard(msg.partition())
                            if not waiting and not self.caught_up.is_set():
                                self.caught_up.set()
                                self.on_change()  # the latest record is known: apply it
                        else:
                            log.debug("%s: %s", self.topic, err)
                        continue
                    if msg.key() != self.key:
                        continue
                    self._record(msg.partition(), msg.offset(), msg.value(), msg.timestamp()[1])
            except Exception as exc:  # the broker is away: try again
                log.warning("reading %s failed (%r); trying again in 5 s", self.topic, exc)
                self._stop.wait(5.0)
            finally:
                if consumer is not None:
                    consumer.close()

    def _record(
        self, partition: int, offset: int, value: bytes | None, timestamp_ms: int | None = None
    ) -> None:
        if value is None:
            log.warning(
                "%s[%d]@%d: the assignment of %s was deleted (tombstone); serving what is served",
                self.topic,
                partition,
                offset,
                self.settings.app_id,
            )
            self._set(None, None)
            return
        try:
            assignment = decode(value)
        except AssignmentError as exc:
            message = f"{self.topic}[{partition}]@{offset} is not a valid assignment: {exc}"
            log.error("%s; serving what is served", message)
            with self._lock:
                self.error = message
            return
        self._set(Published(assignment, offset, partition, timestamp_ms), None)
