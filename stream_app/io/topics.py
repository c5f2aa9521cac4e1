"""Topics as code: the declarations in ``topics/topics.toml``, and applying them to a cluster.

``load_topic_specs`` reads and validates the declarations; ``apply_topics`` creates the topics
that are missing and compares the ones that exist (partitions, replication factor and the
declared configs) with their declaration. A live topic is never changed silently: every
difference is reported, and only ``fix=True`` repairs the ones Kafka allows to be repaired
(more partitions, config values). ``ensure_topics`` is the one-call version for start-up.
``changelog_specs`` adds the tables' changelogs, which the toml does not declare;
``project_topic_specs`` is every topic the project creates.

Three values are resolved here rather than written in the toml:

* ``replication = "default"``: ``Settings.replication_factor``; ``min.insync.replicas`` follows
  the replication (:func:`min_insync_replicas`). A factor above the cluster's broker count is
  refused before anything is created (:func:`check_replication`).
* ``retention_ms = "horizon"``: :func:`input_retention_ms`, what replaying an input topic needs
  to rebuild the feature state, from the feature definitions.
* ``timestamp_type`` is declared per topic (``message.timestamp.type``): time-based retention
  counts from the record timestamps, so a topic whose producers may stamp records with an old
  time (event time, a source record's time) must use ``LogAppendTime`` or have no time limit.
"""

from __future__ import annotations

import logging
import math
import re
import time
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    ResourceType,
)

from stream_app import config as _config
from stream_app.config import Settings
from stream_app.exceptions import ConfigError, TopicError
from stream_app.features.definitions import DAY_S, Entity, horizon_s
from stream_app.io.security import admin_client, fetch_metadata
from stream_app.io.topology import TOPOLOGY

log = logging.getLogger(__name__)

DECLARATION_RELPATH = Path("topics") / "topics.toml"
"""Where the declarations live, relative to the repository root."""

PACKAGED_DECLARATION = ("_contract", "topics", "topics.toml")
"""Where an installed wheel carries them, relative to the ``stream_app`` package."""

SPEC_FIELDS = (
    "name",
    "description",
    "key",
    "partitions",
    "replication",
    "retention_ms",
    "cleanup_policy",
    "timestamp_type",
)
CLEANUP_POLICIES = ("delete", "compact", "compact,delete", "delete,compact")
TIMESTAMP_TYPES = ("CreateTime", "LogAppendTime")
DEFAULT_PARTITIONS = "default"
DEFAULT_REPLICATION = "default"
HORIZON_RETENTION = "horizon"
RETENTION_MARGIN_S = 7 * DAY_S
"""Added to the features' horizon in :func:`input_retention_ms`: a week to notice that state
was lost (or that a model needs its features rebuilt) and replay before the oldest records go."""
MAX_TOPIC_NAME = 249
_LEGAL_NAME = re.compile(r"^[A-Za-z0-9._-]+$")

# Fields compared between a declaration and a live topic.
FIELD_PARTITIONS = "partitions"
FIELD_REPLICATION = "replication"
FIELD_RETENTION = "retention.ms"
FIELD_CLEANUP = "cleanup.policy"
FIELD_TIMESTAMP = "message.timestamp.type"
FIELD_MIN_ISR = "min.insync.replicas"


def input_retention_ms(settings: Settings) -> int:
    """Retention (ms) of the input topics, ``retention_ms = "horizon"`` in the toml: the longest
    look-back of any feature (window plus label delay: 30 + 7 days for the terminal windows), plus
    the allowed lateness, plus :data:`RETENTION_MARGIN_S`. Replaying that much of ``transactions``
    and ``labels`` rebuilds every window the live state holds (its own retention is the horizon
    plus the lateness, ``stream_app.features.state.Retention``). 44 days 1 hour by default."""
    longest = max(horizon_s(entity) for entity in Entity)
    return math.ceil((longest + settings.allowed_lateness_s + RETENTION_MARGIN_S) * 1000)


def min_insync_replicas(replication: int) -> int:
    """``min.insync.replicas`` for a topic of ``replication`` replicas: 1 up to 2 replicas, 2
    from 3. With ``acks=all`` (every producer of the project) a write is acknowledged once on
    that many replicas: with 3 replicas, writes go on with one broker down and an acknowledged
    write survives the loss of any one broker. 2 replicas get 1, so that one broker down does not
    stop every write (an acknowledged write may then be on one broker only: use 3)."""
    return max(1, min(2, replication - 1))


@dataclass(frozen=True)
class TopicSpec:
    """One declared topic, resolved for a deployment (prefix applied, partitions an int)."""

    name: str
    description: str
    key: str
    partitions: int
    replication: int
    retention_ms: int
    cleanup_policy: str
    timestamp_type: str
    """``message.timestamp.type``: ``LogAppendTime`` (the broker stamps arrival; retention
    counts from it) or ``CreateTime`` (the producer's timestamp is kept)."""

    def kafka_configs(self) -> dict[str, str]:
        """The topic-level Kafka configs this declaration sets (and that apply compares)."""
        return {
            FIELD_RETENTION: str(self.retention_ms),
            FIELD_CLEANUP: self.cleanup_policy,
            FIELD_TIMESTAMP: self.timestamp_type,
            FIELD_MIN_ISR: str(min_insync_replicas(self.replication)),
        }


@dataclass(frozen=True)
class Difference:
    """A live topic disagrees with its declaration on one field."""

    topic: str
    field: str
    declared: int | str
    live: int | str
    fixable: bool
    """Whether ``apply --fix`` can repair it (Kafka cannot shrink partitions or re-replicate)."""

    @property
    def hint(self) -> str:
        """What to do about it, in one line."""
        if self.field == FIELD_PARTITIONS:
            if copartitioned(self.topic) and int(self.declared) > int(self.live):
                return (
                    f"co-partitioned with the tables' state: run `stream-app topics grow "
                    f"--partitions {self.declared}` with the workers stopped (it moves the state)"
                )
            if self.fixable:
                return "run `stream-app topics apply --fix` to add partitions"
            return "Kafka cannot remove partitions: recreate the topic or change the declaration"
        if self.field == FIELD_REPLICATION:
            return (
                "reassign partitions (kafka-reassign-partitions) or change the declaration "
                "(STREAM_APP_REPLICATION_FACTOR)"
            )
        if self.field == FIELD_MIN_ISR and not self.fixable:
            return "follows the replication: fix the replication first, then `topics apply --fix`"
        if self.field == FIELD_TIMESTAMP:
            return (
                "run `stream-app topics apply --fix`; records already on the topic keep their "
                "timestamps, and time-based retention still counts from those"
            )
        return "run `stream-app topics apply --fix` to set the declared value"


@dataclass
class ApplyReport:
    """What ``apply_topics`` found and did, topic names as they are on the cluster."""

    created: list[str] = field(default_factory=list)
    """Topics created (with ``dry_run``: that would be created)."""
    unchanged: list[str] = field(default_factory=list)
    """Existing topics that match their declaration."""
    differences: list[Difference] = field(default_factory=list)
    """Every difference between a live topic and its declaration, as found before any fix."""
    fixed: list[Difference] = field(default_factory=list)
    """Differences repaired by ``fix=True`` (with ``dry_run``: that would be repaired)."""
    dry_run: bool = False

    @property
    def remaining(self) -> list[Difference]:
        """Differences still there after this apply."""
        return [d for d in self.differences if d not in self.fixed]

    @property
    def ok(self) -> bool:
        """True when every declared topic exists (or would) and matches its declaration."""
        return not self.remaining


# --------------------------------------------------------------------------------------------
# Declarations
# --------------------------------------------------------------------------------------------


def _packaged_declaration() -> Path | None:
    """The copy of topics.toml inside an installed wheel, if there is one."""
    try:
        candidate = resources.files("stream_app").joinpath(*PACKAGED_DECLARATION)
    except (ModuleNotFoundError, TypeError):  # pragma: no cover - defensive
        return None
    if candidate.is_file():
        return Path(str(candidate))
    return None


def find_declaration(path: Path | None = None) -> Path:
    """The topics.toml to read: ``path``, else the repository's, else the installed copy."""
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"topic declarations not found: {path} is not a file")
        return path
    repo_copy = _config.REPO_ROOT / DECLARATION_RELPATH
    if repo_copy.is_file():
        return repo_copy
    packaged = _packaged_declaration()
    if packaged is not None:
        return packaged
    raise ConfigError(
        f"topic declarations not found: neither {repo_copy} nor the installed copy "
        f"stream_app/{'/'.join(PACKAGED_DECLARATION)} exists; reinstall stream-app or pass a path"
    )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(
    entry: Mapping[str, Any],
    key: str,
    keyword: str,
    resolved: int,
    minimum: int,
    problems: list[str],
    note: str = "",
) -> Any:
    """``entry[key]``: ``resolved`` for ``keyword``, else an integer >= ``minimum`` (a problem is
    added otherwise). None when the key is missing (reported with the other missing keys)."""
    value: Any = entry.get(key)
    if key not in entry:
        return value
    if value == keyword:
        return resolved
    if not _is_int(value) or value < minimum:
        problems.append(
            f'{key} must be "{keyword}" or an integer >= {minimum}{note}, got {value!r}'
        )
    return value


def _check_entry(
    entry: Mapping[str, Any], settings: Settings
) -> tuple[TopicSpec | None, list[str]]:
    """Validate one ``[[topic]]`` table; return the spec (or None) and the problems found."""
    problems: list[str] = []
    unknown = sorted(set(entry) - set(SPEC_FIELDS))
    if unknown:
        problems.append(f"unknown key(s) {', '.join(unknown)} (allowed: {', '.join(SPEC_FIELDS)})")
    missing = [k for k in SPEC_FIELDS if k not in entry]
    if missing:
        problems.append(f"missing key(s) {', '.join(missing)}")

    name: Any = entry.get("name")
    if "name" in entry:
        if not isinstance(name, str) or not name:
            problems.append(f"name must be a non-empty string, got {name!r}")
        elif not _LEGAL_NAME.fullmatch(name) or name in (".", ".."):
            problems.append(f"name {name!r} may only use letters, digits, '.', '_' and '-'")
    for text_key in ("description", "key"):
        if text_key in entry and not (isinstance(entry[text_key], str) and entry[text_key]):
            problems.append(f"{text_key} must be a non-empty string, got {entry[text_key]!r}")

    partitions = _number(entry, "partitions", DEFAULT_PARTITIONS, settings.partitions, 1, problems)
    replication = _number(
        entry, "replication", DEFAULT_REPLICATION, settings.replication_factor, 1, problems
    )
    retention = _number(
        entry,
        "retention_ms",
        HORIZON_RETENTION,
        input_retention_ms(settings),
        -1,
        problems,
        " (-1 = forever)",
    )
    policy: Any = entry.get("cleanup_policy")
    if "cleanup_policy" in entry and policy not in CLEANUP_POLICIES:
        problems.append(
            f"cleanup_policy must be one of {', '.join(CLEANUP_POLICIES)}, got {policy!r}"
        )
    timestamp_type: Any = entry.get("timestamp_type")
    if "timestamp_type" in entry and timestamp_type not in TIMESTAMP_TYPES:
        problems.append(
            f"timestamp_type must be one of {', '.join(TIMESTAMP_TYPES)}, got {timestamp_type!r}"
        )

    if problems:
        return None, problems
    real_name = settings.topic(name)
    if len(real_name) > MAX_TOPIC_NAME or not _LEGAL_NAME.fullmatch(real_name):
        return None, [
            f"with topic_prefix {settings.topic_prefix!r} the name {real_name!r} is not a legal "
            f"Kafka topic name (letters, digits, '.', '_', '-'; at most {MAX_TOPIC_NAME} chars)"
        ]
    spec = TopicSpec(
        name=real_name,
        description=entry["description"],
        key=entry["key"],
        partitions=partitions,
        replication=replication,
        retention_ms=retention,
        cleanup_policy=policy,
        timestamp_type=timestamp_type,
    )
    return spec, []


def parse_topic_specs(text: str, settings: Settings, source: str = "<string>") -> list[TopicSpec]:
    """Parse and validate declarations from TOML text; ``source`` names it in errors."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc

    extra = sorted(set(doc) - {"topic"})
    if extra:
        raise ConfigError(
            f"{source}: unknown top-level key(s) {', '.join(extra)}; "
            "declare each topic in a [[topic]] table"
        )
    entries = doc.get("topic")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{source}: no topics declared; add [[topic]] tables")

    specs: list[TopicSpec] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict):
            problems.append(f"topic #{index}: must be a [[topic]] table, got {entry!r}")
            continue
        label = f"topic #{index} ({entry['name']!r})" if "name" in entry else f"topic #{index}"
        spec, entry_problems = _check_entry(entry, settings)
        problems.extend(f"{label}: {p}" for p in entry_problems)
        name = entry.get("name")
        if isinstance(name, str):
            if name in seen:
                problems.append(f"{label}: duplicate name, already declared as topic #{seen[name]}")
            else:
                seen[name] = index
        if spec is not None:
            specs.append(spec)
    if problems:
        raise ConfigError(f"{source}: invalid topic declarations:\n  " + "\n  ".join(problems))
    return specs


def load_topic_specs(settings: Settings, path: Path | None = None) -> list[TopicSpec]:
    """Read, validate and resolve the topic declarations.

    ``path`` defaults to ``topics/topics.toml`` in the repository (``REPO_ROOT``), falling back to
    the copy installed with the package. ``partitions = "default"`` becomes
    ``settings.partitions``, ``replication = "default"`` ``settings.replication_factor``,
    ``retention_ms = "horizon"`` :func:`input_retention_ms`, and every name gets
    ``settings.topic_prefix``. Raises ``ConfigError`` naming the file and the bad entry.
    """
    source = find_declaration(path)
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read topic declarations: {exc}") from exc
    return parse_topic_specs(text, settings, source=str(source))


def select_specs(
    settings: Settings, specs: Sequence[TopicSpec], names: Iterable[str]
) -> list[TopicSpec]:
    """The specs for the declared (unprefixed) ``names``; unknown names raise ``ConfigError``."""
    by_name = {s.name: s for s in specs}
    wanted = list(names)
    unknown = [n for n in wanted if settings.topic(n) not in by_name]
    if unknown:
        declared = ", ".join(s.name.removeprefix(settings.topic_prefix) for s in specs)
        raise ConfigError(f"undeclared topic(s) {', '.join(unknown)} (declared: {declared})")
    return [by_name[settings.topic(n)] for n in wanted]


# --------------------------------------------------------------------------------------------
# Applying to a cluster
# --------------------------------------------------------------------------------------------


def make_admin(settings: Settings) -> AdminClient:
    """An AdminClient for ``settings`` (:func:`stream_app.io.security.admin_client`): a wrong
    password or an untrusted certificate fails its first request within about a second."""
    return admin_client(settings)


def _kafka_error(exc: BaseException) -> KafkaError | None:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None


def live_topics(
    settings: Settings, admin: AdminClient, timeout: float = 30
) -> dict[str, tuple[int, int]]:
    """Every topic on the cluster: name -> (partition count, replication factor).

    Raises ``KafkaAccessError`` when the cluster cannot be reached or refuses the credentials.
    """
    return _cluster(settings, admin, timeout)[0]


def _cluster(
    settings: Settings, admin: AdminClient, timeout: float
) -> tuple[dict[str, tuple[int, int]], int]:
    """(:func:`live_topics`, how many brokers the metadata lists) from one metadata request."""
    metadata = fetch_metadata(admin, settings, timeout)
    out: dict[str, tuple[int, int]] = {}
    for name, topic in metadata.topics.items():
        if topic.error is not None and topic.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            continue
        replicas = [len(p.replicas) for p in topic.partitions.values()]
        out[name] = (len(topic.partitions), min(replicas) if replicas else 0)
    return out, len(metadata.brokers)


def check_replication(
    settings: Settings,
    specs: Sequence[TopicSpec],
    live: Mapping[str, tuple[int, int]],
    brokers: int,
) -> None:
    """Refuse, with what to do, a replication factor the cluster has too few brokers for.

    A topic is refused when it asks for more replicas than ``brokers`` (the brokers the cluster's
    metadata lists) and does not already have them: a missing one cannot be created, a live one
    with fewer replicas cannot be brought to its declaration. A live topic that has all its
    replicas is fine while a broker is down. Raises ``TopicError``.
    """
    short = [
        s
        for s in specs
        if s.replication > brokers and (s.name not in live or live[s.name][1] < s.replication)
    ]
    if not short:
        return
    wanted = max(s.replication for s in short)
    names = ", ".join(s.name for s in short[:4]) + (
        f" and {len(short) - 4} more" if len(short) > 4 else ""
    )
    raise TopicError(
        f"replication factor {wanted} asked for ({names}), but the cluster at "
        f"{settings.kafka_bootstrap_servers} has {brokers} broker(s): Kafka cannot place "
        f"{wanted} replicas of a partition on {brokers} broker(s). Set "
        f"STREAM_APP_REPLICATION_FACTOR={brokers} or lower (now {settings.replication_factor}; 1 "
        "for the local broker), lower a replication that topics/topics.toml pins, or point "
        "KAFKA_BOOTSTRAP_SERVERS at a cluster with enough brokers. Nothing was created."
    )


def _wait_visible(
    settings: Settings, admin: AdminClient, names: Sequence[str], timeout: float
) -> dict[str, tuple[int, int]]:
    """Live topics once all ``names`` show in the metadata (a broker may lag the controller)."""
    deadline = time.monotonic() + timeout
    while True:
        live = live_topics(settings, admin, timeout)
        missing = [n for n in names if n not in live]
        if not missing:
            return live
        if time.monotonic() >= deadline:
            raise TopicError(
                f"topic(s) {', '.join(missing)} exist on the controller but did not appear in "
                f"the metadata within {timeout:g}s; run `stream-app topics apply` again"
            )
        time.sleep(0.2)


def _describe_configs(
    admin: AdminClient, names: Sequence[str], timeout: float
) -> dict[str, dict[str, str | None]]:
    """Live topic configs: name -> {config: value}; retries topics the broker does not know yet."""
    out: dict[str, dict[str, str | None]] = {}
    pending = list(names)
    deadline = time.monotonic() + timeout
    while pending:
        resources_ = [ConfigResource(ResourceType.TOPIC, n) for n in pending]
        futures = admin.describe_configs(resources_, request_timeout=timeout)
        retry: list[str] = []
        failures: list[str] = []
        for resource, future in futures.items():
            try:
                entries = future.result(timeout=timeout)
            except KafkaException as exc:
                err = _kafka_error(exc)
                if (
                    err is not None
                    and err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
                    and time.monotonic() < deadline
                ):
                    retry.append(resource.name)
                else:
                    failures.append(f"{resource.name}: {exc}")
                continue
            out[resource.name] = {k: v.value for k, v in entries.items()}
        if failures:
            raise TopicError("cannot describe topic configs:\n  " + "\n  ".join(failures))
        pending = retry
        if pending:
            time.sleep(0.2)
    return out


def _same_config(name: str, declared: str, live: str | None) -> bool:
    if live is None:
        return False
    if name == FIELD_CLEANUP:
        return {p.strip() for p in declared.split(",")} == {p.strip() for p in live.split(",")}
    return declared.strip() == live.strip()


def copartitioned(name: str) -> bool:
    """Whether topic ``name`` (as on the cluster) is co-partitioned with the tables
    (:mod:`stream_app.io.copartition`): only ``topics grow`` may add partitions to it."""
    from stream_app.io.copartition import COPARTITIONED_INPUTS

    return name.endswith("-changelog") or any(name.endswith(n) for n in COPARTITIONED_INPUTS)


def compare_topic(
    spec: TopicSpec, partitions: int, replication: int, configs: Mapping[str, str | None]
) -> list[Difference]:
    """Every difference between ``spec`` and a live topic with these properties."""
    diffs: list[Difference] = []
    if partitions != spec.partitions:
        diffs.append(
            Difference(
                spec.name,
                FIELD_PARTITIONS,
                spec.partitions,
                partitions,
                # Growing one co-partitioned topic alone halts the workers: `topics grow`.
                fixable=spec.partitions > partitions and not copartitioned(spec.name),
            )
        )
    if replication != spec.replication:
        diffs.append(
            Difference(spec.name, FIELD_REPLICATION, spec.replication, replication, fixable=False)
        )
    for key, declared in spec.kafka_configs().items():
        live = configs.get(key)
        if not _same_config(key, declared, live):
            # min.insync.replicas is set for the declared replication: never above what the
            # live replication warrants (on a topic without its replicas yet, a larger value
            # would refuse every acks=all write).
            fixable = key != FIELD_MIN_ISR or int(declared) <= min_insync_replicas(replication)
            diffs.append(
                Difference(
                    spec.name,
                    key,
                    declared,
                    "<unset>" if live is None else live,
                    fixable=fixable,
                )
            )
    return diffs


def _create(
    admin: AdminClient, specs: Sequence[TopicSpec], timeout: float
) -> tuple[list[str], list[TopicSpec]]:
    """Create ``specs``; return (created names, specs that someone else created meanwhile)."""
    new_topics = [
        NewTopic(
            s.name,
            num_partitions=s.partitions,
            replication_factor=s.replication,
            config=s.kafka_configs(),
        )
        for s in specs
    ]
    futures = admin.create_topics(new_topics, operation_timeout=timeout, request_timeout=timeout)
    by_name = {s.name: s for s in specs}
    created: list[str] = []
    raced: list[TopicSpec] = []
    failures: list[str] = []
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            err = _kafka_error(exc)
            if err is not None and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                raced.append(by_name[name])
            else:
                failures.append(f"{name}: {exc}")
            continue
        created.append(name)
    if failures:
        raise TopicError(
            "cannot create topic(s) (check replication against the broker count and the "
            "client's ACLs):\n  " + "\n  ".join(failures)
        )
    order = {s.name: i for i, s in enumerate(specs)}
    created.sort(key=order.__getitem__)
    return created, raced


def _fix(admin: AdminClient, diffs: Sequence[Difference], timeout: float) -> list[Difference]:
    """Repair fixable differences: add partitions, set configs. Returns what was repaired."""
    fixed: list[Difference] = []
    failures: list[str] = []

    grow = [d for d in diffs if d.fixable and d.field == FIELD_PARTITIONS]
    if grow:
        futures = admin.create_partitions(
            [NewPartitions(d.topic, int(d.declared)) for d in grow],
            operation_timeout=timeout,
            request_timeout=timeout,
        )
        by_topic = {d.topic: d for d in grow}
        for topic, future in futures.items():
            try:
                future.result(timeout=timeout)
            except KafkaException as exc:
                failures.append(f"{topic}: add partitions: {exc}")
                continue
            fixed.append(by_topic[topic])

    config_diffs: dict[str, list[Difference]] = {}
    for d in diffs:
        if d.fixable and d.field != FIELD_PARTITIONS:
            config_diffs.setdefault(d.topic, []).append(d)
    if config_diffs:
        resources_ = [
            ConfigResource(
                ResourceType.TOPIC,
                topic,
                incremental_configs=[
                    ConfigEntry(
                        d.field, str(d.declared), incremental_operation=AlterConfigOpType.SET
                    )
                    for d in topic_diffs
                ],
            )
            for topic, topic_diffs in config_diffs.items()
        ]
        futures_cfg = admin.incremental_alter_configs(resources_, request_timeout=timeout)
        for resource, future in futures_cfg.items():
            try:
                future.result(timeout=timeout)
            except KafkaException as exc:
                failures.append(f"{resource.name}: alter configs: {exc}")
                continue
            fixed.extend(config_diffs[resource.name])

    if failures:
        raise TopicError("cannot fix topic(s):\n  " + "\n  ".join(failures))
    return fixed


def apply_topics(
    settings: Settings,
    specs: Sequence[TopicSpec],
    admin: AdminClient | None = None,
    timeout: float = 30,
    *,
    fix: bool = False,
    dry_run: bool = False,
) -> ApplyReport:
    """Make the cluster match ``specs`` as far as it may be done without surprises.

    Missing topics are created with their declared partitions, replication and configs (a
    concurrent creation by someone else is fine). Existing topics are compared field by field;
    each difference is reported with the declared and the live value. With ``fix=True``,
    partitions are increased (never decreased) and config values set to the declared ones;
    replication differences are only reported. ``dry_run=True`` changes nothing and reports what
    would be created (and, with ``fix``, fixed). Raises ``KafkaAccessError`` if the cluster
    cannot be reached or refuses the credentials, ``TopicError`` if the cluster has too few
    brokers for a replication factor (:func:`check_replication`, before anything is created) or
    a creation or fix fails.
    """
    admin = admin if admin is not None else make_admin(settings)
    report = ApplyReport(dry_run=dry_run)
    live, brokers = _cluster(settings, admin, timeout)
    check_replication(settings, specs, live, brokers)

    missing = [s for s in specs if s.name not in live]
    existing = [s for s in specs if s.name in live]
    if missing:
        if dry_run:
            report.created = [s.name for s in missing]
        else:
            report.created, raced = _create(admin, missing, timeout)
            for name in report.created:
                log.info("created topic %s", name)
            if raced:
                log.info("topic(s) created concurrently: %s", ", ".join(s.name for s in raced))
                existing.extend(raced)
            # The controller has them; the broker's metadata follows a moment later. Return only
            # once clients (the worker starting next, a test) can see every one of them.
            live = _wait_visible(
                settings, admin, [*report.created, *(s.name for s in raced)], timeout
            )

    if existing:
        configs = _describe_configs(admin, [s.name for s in existing], timeout)
        order = {s.name: i for i, s in enumerate(specs)}
        for spec in sorted(existing, key=lambda s: order[s.name]):
            partitions, replication = live[spec.name]
            diffs = compare_topic(spec, partitions, replication, configs.get(spec.name, {}))
            if diffs:
                report.differences.extend(diffs)
            else:
                report.unchanged.append(spec.name)

    if fix and report.differences:
        fixable = [d for d in report.differences if d.fixable]
        if dry_run:
            report.fixed = fixable
        elif fixable:
            report.fixed = _fix(admin, fixable, timeout)
            for d in report.fixed:
                log.info("fixed %s %s: %s -> %s", d.topic, d.field, d.live, d.declared)
    return report


def changelog_specs(settings: Settings) -> list[TopicSpec]:
    """The changelog topics of the worker's tables (:data:`stream_app.io.topology.TOPOLOGY`) as
    Faust names them, ``<app_id>-<table>-changelog``: the table's partition count
    (``settings.partitions``, co-partitioned with its input),
    ``settings.replication_factor`` (as the app's ``topic_replication_factor``), compacted and
    never deleted by time (compaction keeps each key's latest value whatever its timestamp)."""
    return [
        TopicSpec(
            name=table.changelog_name(settings),
            description=f"Changelog of the {table.name} table (Faust's), replayed on recovery; "
            "compacted, never deleted by time.",
            key=table.key,
            partitions=settings.partitions,
            replication=settings.replication_factor,
            retention_ms=-1,
            cleanup_policy="compact",
            timestamp_type="CreateTime",
        )
        for table in TOPOLOGY.tables
    ]


def project_topic_specs(settings: Settings, path: Path | None = None) -> list[TopicSpec]:
    """Every topic the project creates: the declared ones (:func:`load_topic_specs`), then the
    tables' changelogs (:func:`changelog_specs`). Faust's own ``<app_id>-__assignor-__leader``
    (no records; ``settings.replication_factor`` through the app) is left to Faust."""
    return [*load_topic_specs(settings, path), *changelog_specs(settings)]


def ensure_changelogs(
    settings: Settings, *, admin: AdminClient | None = None, timeout: float = 30
) -> list[str]:
    """Create the tables' missing changelog topics before Faust starts; returns those created.

    With a fresh app id Faust creates the changelogs itself just before its consumer's first
    metadata request, which may not list a topic created a moment ago: the assignor then ignores
    it ("Ignoring missing topic"), aiokafka does not refresh its metadata for minutes, and the
    first write to that table fails with ``PartitionsMismatch`` (the worker exits 70). Created
    here, they are in the metadata before Faust asks. Existing changelogs are left alone (the
    worker's ACLs on its ``<app_id>-`` topics hold no DescribeConfigs); one with another partition
    count than the table's is logged as an error (Faust refuses it).
    """
    admin = admin if admin is not None else make_admin(settings)
    specs = changelog_specs(settings)
    live, brokers = _cluster(settings, admin, timeout)
    check_replication(settings, specs, live, brokers)
    missing = [s for s in specs if s.name not in live]
    created: list[str] = []
    if missing:
        created, _ = _create(admin, missing, timeout)
        for name in created:
            log.info("created changelog topic %s", name)
        live = _wait_visible(settings, admin, [s.name for s in missing], timeout)
    for spec in specs:
        partitions = live[spec.name][0]
        if partitions != spec.partitions:
            log.error(
                "changelog %s has %d partitions, its table %d: Faust will refuse it; recreate "
                "it or use another app id",
                spec.name,
                partitions,
                spec.partitions,
            )
    return created


def ensure_topics(
    settings: Settings,
    names: list[str] | None = None,
    *,
    admin: AdminClient | None = None,
    timeout: float = 30,
    path: Path | None = None,
    strict: bool = False,
) -> ApplyReport:
    """Create the declared topics that are missing (all, or the declared ``names``) at start-up.

    Differences on existing topics are logged as warnings and left alone; with ``strict=True``
    they raise ``TopicError`` instead.
    """
    specs = load_topic_specs(settings, path)
    if names is not None:
        specs = select_specs(settings, specs, names)
    report = apply_topics(settings, specs, admin=admin, timeout=timeout)
    for d in report.remaining:
        log.warning(
            "topic %s differs from its declaration: %s declared %s, live %s (%s)",
            d.topic,
            d.field,
            d.declared,
            d.live,
            d.hint,
        )
    if strict and report.remaining:
        lines = [
            f"{d.topic} {d.field}: declared {d.declared}, live {d.live}" for d in report.remaining
        ]
        raise TopicError(
            "topics differ from their declarations (see `stream-app topics apply`):\n  "
            + "\n  ".join(lines)
        )
    return report
