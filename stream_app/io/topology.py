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

from typing import Any

from stream_app.config import Settings
from stream_app.io.topology_model import (
    WORKER,
    Kind,
    Node,
    Partitioning,
    Table,
    Topic,
    Topology,
)

__all__ = [
    "CUSTOMER_STATE",
    "TERMINAL_STATE",
    "TOPOLOGY",
    "WORKER",
    "Kind",
    "Node",
    "Partitioning",
    "Table",
    "Topic",
    "Topology",
    "describe",
]


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
            "events in: the generator, the handbook CSV, the Python client's publisher",
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
            "evaluate",
            "stream-app evaluate served / topic",
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
