"""The vocabulary of the topology (:mod:`stream_app.io.topology`): what a topic is for
(:class:`Kind`), how it is partitioned (:class:`Partitioning`), a state table, a topic, a node
(a stage of the worker or a tool) and the :class:`Topology` that holds them and answers who
reads and writes what."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from stream_app.config import Settings

WORKER = "worker"
"""The process of the Faust app's nodes (one consumer group, ``STREAM_APP_APP_ID``)."""


class Kind(StrEnum):
    """What a topic is for."""

    INPUT = "input"
    INTERNAL = "internal"
    OUTPUT = "output"
    CONTROL = "control"
    CHANGELOG = "changelog"


class Partitioning(StrEnum):
    """How a topic is partitioned."""

    COPARTITIONED = "co-partitioned"
    """``STREAM_APP_PARTITIONS`` partitions by murmur2 of the key, the layout of a table's state:
    only ``stream-app topics grow`` may change the count (:mod:`stream_app.io.copartition`)."""
    KEYED = "keyed"
    """``STREAM_APP_PARTITIONS`` partitions by murmur2 of the key; no state depends on it."""
    SINGLE = "single"
    """One partition: every record in one order."""


@dataclass(frozen=True)
class Table:
    """A changelogged Faust table of the worker."""

    name: str
    key: str
    """The field its keys carry."""

    @property
    def changelog(self) -> str:
        """Its changelog topic, logical name (Faust's ``<table>-changelog`` after ``<app_id>-``)."""
        return f"{self.name}-changelog"

    def changelog_name(self, settings: Settings) -> str:
        """Its changelog topic as named on the cluster: ``<app_id>-<table>-changelog``."""
        return f"{settings.app_id}-{self.changelog}"


@dataclass(frozen=True)
class Topic:
    """One topic the project creates."""

    name: str
    kind: Kind
    key: str
    """The field the message key carries."""
    partitioning: Partitioning
    table: str | None = None
    """The table it is co-partitioned with (``Partitioning.COPARTITIONED`` only)."""
    compacted: bool = False
    """Compacted: each key's latest record is kept, never deleted by time."""
    purged: bool = False
    """Kept until its reader has committed a record, then deleted by it (no time limit)."""

    def cluster_name(self, settings: Settings) -> str:
        """The topic's name on the cluster: prefixed, or ``<app_id>-`` for a changelog."""
        if self.kind is Kind.CHANGELOG:
            return f"{settings.app_id}-{self.name}"
        return settings.topic(self.name)

    def partitions(self, settings: Settings) -> int:
        """Its partition count for ``settings``."""
        return 1 if self.partitioning is Partitioning.SINGLE else settings.partitions


@dataclass(frozen=True)
class Node:
    """A stage of the worker or a tool: what it reads and what it writes."""

    name: str
    process: str
    """:data:`WORKER` for a stage of the Faust app, else the command or API that runs it."""
    description: str
    sources: tuple[str, ...]
    sinks: tuple[str, ...] = ()
    table: str | None = None
    """The table it keeps (its changelog is read back on recovery)."""

    @property
    def in_worker(self) -> bool:
        """Whether it runs in the worker (and needs the worker's ACLs)."""
        return self.process == WORKER


@dataclass(frozen=True)
class Topology:
    """Topics, tables and nodes; checks on construction that every name refers to something."""

    topics: tuple[Topic, ...]
    tables: tuple[Table, ...]
    nodes: tuple[Node, ...]

    def __post_init__(self) -> None:
        names = [t.name for t in self.topics]
        tables = {t.name for t in self.tables}
        problems = [f"topic {n} twice" for n in sorted({n for n in names if names.count(n) > 1})]
        for topic in self.topics:
            copartitioned = topic.partitioning is Partitioning.COPARTITIONED
            if copartitioned != (topic.table in tables):
                problems.append(f"topic {topic.name}: table {topic.table!r} ({topic.partitioning})")
        for table in self.tables:
            if table.changelog not in names:
                problems.append(f"table {table.name}: no topic {table.changelog}")
        for node in self.nodes:
            unknown = [n for n in (*node.sources, *node.sinks) if n not in names]
            if node.table is not None and node.table not in tables:
                unknown.append(node.table)
            if unknown:
                problems.append(f"node {node.name}: unknown {', '.join(unknown)}")
        if problems:
            raise ValueError("inconsistent topology: " + "; ".join(problems))

    def topic(self, name: str) -> Topic:
        """The topic of logical name ``name`` (``KeyError`` if there is none)."""
        for topic in self.topics:
            if topic.name == name:
                return topic
        raise KeyError(name)

    def table(self, name: str) -> Table:
        """The table ``name`` (``KeyError`` if there is none)."""
        for table in self.tables:
            if table.name == name:
                return table
        raise KeyError(name)

    def declared(self) -> tuple[Topic, ...]:
        """The topics ``topics/topics.toml`` declares: all but the tables' changelogs."""
        return tuple(t for t in self.topics if t.kind is not Kind.CHANGELOG)

    def copartitioned(self, *, changelogs: bool = True) -> tuple[Topic, ...]:
        """The topics co-partitioned with a table, in topology order."""
        return tuple(
            t
            for t in self.topics
            if t.partitioning is Partitioning.COPARTITIONED
            and (changelogs or t.kind is not Kind.CHANGELOG)
        )

    def readers(self, name: str) -> tuple[str, ...]:
        """The nodes that read topic ``name`` (a table's stage reads its changelog on recovery)."""
        return tuple(n.name for n in self.nodes if name in n.sources or self._keeps(n, name))

    def writers(self, name: str) -> tuple[str, ...]:
        """The nodes that write topic ``name`` (a table's stage writes its changelog)."""
        return tuple(n.name for n in self.nodes if name in n.sinks or self._keeps(n, name))

    def _keeps(self, node: Node, topic: str) -> bool:
        return node.table is not None and self.table(node.table).changelog == topic

    def worker_reads(self) -> tuple[str, ...]:
        """Declared topics a stage of the worker reads, in topology order."""
        worker = [n for n in self.nodes if n.in_worker]
        return tuple(t.name for t in self.declared() if any(t.name in n.sources for n in worker))

    def worker_writes(self) -> tuple[str, ...]:
        """Declared topics a stage of the worker writes, in topology order."""
        worker = [n for n in self.nodes if n.in_worker]
        return tuple(t.name for t in self.declared() if any(t.name in n.sinks for n in worker))

    def worker_deletes(self) -> tuple[str, ...]:
        """Declared topics the worker deletes records of once committed (:attr:`Topic.purged`)."""
        reads = self.worker_reads()
        return tuple(t.name for t in self.declared() if t.purged and t.name in reads)
