"""The topic declarations of ``topics/topics.toml``: found (the repository's, else the copy an
installed wheel carries), parsed, validated and resolved into :class:`TopicSpec` objects.

``partitions = "default"`` becomes ``Settings.partitions``, ``replication = "default"``
``Settings.replication_factor`` and ``retention_ms = "horizon"``
:func:`~stream_app.io.topic_specs.input_retention_ms`; every name gets ``Settings.topic_prefix``.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from stream_app import config as _config
from stream_app.config import Settings
from stream_app.exceptions import ConfigError
from stream_app.io.topic_specs import TopicSpec, input_retention_ms

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
MAX_TOPIC_NAME = 249
_LEGAL_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


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
