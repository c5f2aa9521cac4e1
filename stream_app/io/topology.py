"""The topology in one place: every topic the project creates, with its key and partitioning,
the worker's stages and the tools that read and write each one, and the ACLs derived from them.

Topic names here are logical: before ``STREAM_APP_TOPIC_PREFIX`` (a declared topic) or
``<app_id>-`` (a table's changelog, which Faust names). ``topics/topics.toml`` declares the
same topics with their Kafka configs (retention, cleanup policy, timestamp type); a unit test
holds the two to each other (names, keys, one partition or ``STREAM_APP_PARTITIONS``,
compaction). ``stream-app topology`` prints it, as Kafka Streams' ``Topology.describe()`` does:
the worker's sub-topologies with their source and sink topics and their state, then the tools.

::

    transactions, transactions.rerouted ──► customer [customer-state] ──► transactions.by-terminal
    transactions.by-terminal, labels, labels.rerouted ──► scoring [terminal-state] ──► scores, ...
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

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


CUSTOMER_STATE = Table("customer-state", key="customer_id")
TERMINAL_STATE = Table("terminal-state", key="terminal_id")

_CO, _KEYED, _ONE = Partitioning.COPARTITIONED, Partitioning.KEYED, Partitioning.SINGLE

TOPOLOGY = Topology(
    topics=(
        Topic("transactions", Kind.INPUT, "customer_id", _CO, CUSTOMER_STATE.name),
        Topic("transactions.rerouted", Kind.INTERNAL, "customer_id", _CO, CUSTOMER_STATE.name),
        Topic(
            "transactions.by-terminal",
            Kind.INTERNAL,
            "terminal_id",
            _CO,
            TERMINAL_STATE.name,
            purged=True,
        ),
        Topic("labels", Kind.INPUT, "terminal_id", _CO, TERMINAL_STATE.name),
        Topic("labels.rerouted", Kind.INTERNAL, "terminal_id", _CO, TERMINAL_STATE.name),
        Topic("scores", Kind.OUTPUT, "customer_id", _KEYED),
        Topic("scores.shadow", Kind.OUTPUT, "customer_id", _KEYED),
        Topic("drift", Kind.OUTPUT, "model_version", _ONE),
        Topic("metrics", Kind.OUTPUT, "model_version", _ONE),
        Topic("scorecard.pairs", Kind.OUTPUT, "customer_id", _ONE),
        Topic("transactions.dlq", Kind.OUTPUT, "original key", _ONE),
        Topic("models.assignment", Kind.CONTROL, "app_id", _ONE, compacted=True),
        Topic("models.audit", Kind.CONTROL, "id", _ONE, compacted=True),
        Topic(
            CUSTOMER_STATE.changelog,
            Kind.CHANGELOG,
            CUSTOMER_STATE.key,
            _CO,
            CUSTOMER_STATE.name,
            compacted=True,
        ),
        Topic(
            TERMINAL_STATE.changelog,
            Kind.CHANGELOG,
            TERMINAL_STATE.key,
            _CO,
            TERMINAL_STATE.name,
            compacted=True,
        ),
    ),
    tables=(CUSTOMER_STATE, TERMINAL_STATE),
    nodes=(
        Node(
            "customer",
            WORKER,
            "stage 1: validates transactions, customer windows, repartitions by terminal; "
            "records on the wrong partition for their key are rerouted, bad ones dead-lettered",
            sources=("transactions", "transactions.rerouted"),
            sinks=("transactions.by-terminal", "transactions.rerouted", "transactions.dlq"),
            table=CUSTOMER_STATE.name,
        ),
        Node(
            "scoring",
            WORKER,
            "stage 2: terminal windows and labels, one predict_proba per micro-batch, the "
            "challenger in shadow, drift windows; deletes the by-terminal records it committed",
            sources=("transactions.by-terminal", "labels", "labels.rerouted"),
            sinks=(
                "scores",
                "scores.shadow",
                "drift",
                "transactions.by-terminal",
                "labels.rerouted",
                "transactions.dlq",
            ),
            table=TERMINAL_STATE.name,
        ),
        Node(
            "model follow",
            WORKER,
            "follows the group's model assignment (STREAM_APP_MODEL_ASSIGNMENT=topic)",
            sources=("models.assignment",),
        ),
        Node(
            "publish",
            "stream-app publish, stream_app.client",
            "events in: the generator, a CSV replay, the Python client's publisher",
            sources=(),
            sinks=("transactions", "labels"),
        ),
        Node(
            "scorecard",
            "stream-app scorecard",
            "labels joined to served scores: model quality per version, route and slice",
            sources=("scores", "scores.shadow", "labels", "transactions"),
            sinks=("metrics", "drift", "scorecard.pairs"),
        ),
        Node(
            "compare",
            "stream-app models compare",
            "the rollout verdict, bootstrapped over the joined pairs",
            sources=("scorecard.pairs",),
        ),
        Node(
            "models",
            "stream-app models promote/rollback/canary/assignment",
            "publishes the group's model assignment, audits each change",
            sources=("models.assignment",),
            sinks=("models.assignment", "models.audit"),
        ),
        Node(
            "register",
            "stream-app train, stream-app models register",
            "audits each model registered",
            sources=(),
            sinks=("models.audit",),
        ),
        Node(
            "history",
            "stream-app models history",
            "the audit trail",
            sources=("models.audit",),
        ),
        Node(
            "replay",
            "stream-app replay --served / --topic",
            "offline evaluation of what was served, or of a range of an input topic",
            sources=("scores", "scores.shadow", "labels", "transactions"),
        ),
        Node(
            "record",
            "the worker's HTTP API, POST /v1/score?record=true",
            "publishes a transaction and answers with what the stream made of it",
            sources=("scores", "transactions.dlq"),
            sinks=("transactions",),
        ),
        Node(
            "subscribe",
            "stream_app.client",
            "the Python client's typed subscriptions",
            sources=("scores", "scores.shadow", "drift", "metrics"),
        ),
    ),
)
"""The project's topology."""


def describe(settings: Settings, topology: Topology = TOPOLOGY) -> dict[str, Any]:
    """The topology for ``settings`` as JSON-able data, topic names as on the cluster: the
    worker's sub-topologies (its stages) and the tools, each with its sources and sinks, then
    every topic with its key, partitioning, readers and writers."""

    def node(index: int, n: Node) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": n.name,
            "process": n.process,
            "description": n.description,
            "sources": [topology.topic(t).cluster_name(settings) for t in n.sources],
            "sinks": [topology.topic(t).cluster_name(settings) for t in n.sinks],
        }
        if n.in_worker:
            out = {"sub_topology": index, **out}
        if n.table is not None:
            table = topology.table(n.table)
            out["state"] = {"table": table.name, "changelog": table.changelog_name(settings)}
        return out

    worker = [n for n in topology.nodes if n.in_worker]
    return {
        "app_id": settings.app_id,
        "topic_prefix": settings.topic_prefix,
        "partitions": settings.partitions,
        "sub_topologies": [node(i, n) for i, n in enumerate(worker)],
        "tools": [node(0, n) for n in topology.nodes if not n.in_worker],
        "topics": [
            {
                "name": t.cluster_name(settings),
                "logical_name": t.name,
                "kind": t.kind.value,
                "key": t.key,
                "partitions": t.partitions(settings),
                "partitioning": t.partitioning.value,
                "copartitioned_with": t.table,
                "compacted": t.compacted,
                "purged": t.purged,
                "readers": list(topology.readers(t.name)),
                "writers": list(topology.writers(t.name)),
            }
            for t in topology.topics
        ],
    }


def worker_acls(
    settings: Settings,
    principal: str,
    *,
    create_topics: bool = True,
    topology: Topology = TOPOLOGY,
) -> list[Any]:
    """The ACLs (``confluent_kafka.admin.AclBinding``) the worker needs as ``principal``, from
    the topology:

    * Group ``app_id`` (the Faust consumer group): Read.
    * Every declared topic a stage of the worker reads (:meth:`Topology.worker_reads`:
      ``transactions``, ``transactions.by-terminal``, ``labels``, the reroute topics and
      ``models.assignment``): Read; every one it writes (the by-terminal repartition topic, the
      reroute topics, ``scores``, ``scores.shadow``, ``drift``, ``transactions.dlq``): Write; the
      purged by-terminal topic: Delete (the worker deletes the records it has committed there).
    * Every declared topic: Describe and DescribeConfigs (the start-up check compares each one
      with its declaration), plus Create with ``create_topics`` (it creates missing ones).
    * Topics prefixed ``<app_id>-``, Faust's own: the table changelogs
      ``<app_id>-customer-state-changelog`` and ``<app_id>-terminal-state-changelog`` (Read,
      Write; recovery reads them back) and the assignor's ``<app_id>-__assignor-__leader``
      (Read); Create there too, since Faust creates them on the first start.

    * With ``processing_guarantee=exactly_once``: TransactionalId Write and Describe on the
      prefix ``STREAM_APP_TRANSACTIONAL_ID`` (or ``<app_id>-``, which the default ids start with):
      each stage's transactional producer is ``<prefix>-customer`` / ``<prefix>-scoring``.

    No cluster-level ACL: idempotent producers need none on Kafka >= 3.0 (Write covers them).
    """
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    allow = AclPermissionType.ALLOW

    def grant(restype: Any, name: str, op: Any, pattern: Any = ResourcePatternType.LITERAL) -> Any:
        return AclBinding(restype, name, pattern, principal, "*", op, allow)

    def topics(names: tuple[str, ...], op: Any) -> list[Any]:
        return [grant(ResourceType.TOPIC, settings.topic(n), op) for n in names]

    acls = [grant(ResourceType.GROUP, settings.app_id, AclOperation.READ)]
    acls += topics(topology.worker_reads(), AclOperation.READ)
    acls += topics(topology.worker_writes(), AclOperation.WRITE)
    acls += topics(topology.worker_deletes(), AclOperation.DELETE)
    checks = [AclOperation.DESCRIBE, AclOperation.DESCRIBE_CONFIGS]
    checks += [AclOperation.CREATE] if create_topics else []
    for topic in topology.declared():
        acls += [grant(ResourceType.TOPIC, settings.topic(topic.name), op) for op in checks]
    internal = f"{settings.app_id}-"
    acls += [
        grant(ResourceType.TOPIC, internal, op, ResourcePatternType.PREFIXED)
        for op in (AclOperation.READ, AclOperation.WRITE, AclOperation.CREATE)
    ]
    if settings.processing_guarantee == "exactly_once":
        prefix = settings.transactional_id or internal
        acls += [
            grant(ResourceType.TRANSACTIONAL_ID, prefix, op, ResourcePatternType.PREFIXED)
            for op in (AclOperation.WRITE, AclOperation.DESCRIBE)
        ]
    return acls
