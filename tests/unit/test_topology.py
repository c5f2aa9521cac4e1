"""The topology: the same topics as topics/topics.toml, the worker's ACLs derived from it exactly as
the hand-written list was, ``stream-app topology`` and its JSON."""

from __future__ import annotations

import orjson
import pytest
from typer.testing import CliRunner

from stream_app.cli.main import app
from stream_app.config import Settings
from stream_app.io.copartition import COPARTITIONED_INPUTS, TABLES
from stream_app.io.topics import changelog_specs, load_topic_specs, project_topic_specs
from stream_app.io.topology import (
    TOPOLOGY,
    Kind,
    Node,
    Partitioning,
    Table,
    Topic,
    Topology,
    describe,
)
from stream_app.io.worker_acls import worker_acls

DECLARED = (
    "transactions",
    "transactions.rerouted",
    "transactions.by-terminal",
    "labels",
    "labels.rerouted",
    "scores",
    "scores.shadow",
    "drift",
    "metrics",
    "scorecard.pairs",
    "transactions.dlq",
    "models.assignment",
    "models.audit",
)


# --- the topology and topics/topics.toml -----------------------------------------------------


def test_the_declared_topics_are_the_toml_topics_in_its_order() -> None:
    specs = load_topic_specs(Settings())
    assert tuple(s.name for s in specs) == DECLARED
    assert tuple(t.name for t in TOPOLOGY.declared()) == DECLARED


def test_keys_partitioning_and_compaction_agree_with_the_toml() -> None:
    settings = Settings(partitions=6)
    by_name = {s.name: s for s in load_topic_specs(settings)}
    for topic in TOPOLOGY.declared():
        spec = by_name[topic.name]
        assert (topic.name, topic.key) == (spec.name, spec.key)
        assert topic.partitions(settings) == spec.partitions, topic.name
        assert topic.compacted == ("compact" in spec.cleanup_policy), topic.name
        # Purged by its reader: no time limit, and not compacted either.
        assert topic.purged == (spec.retention_ms == -1 and not topic.compacted), topic.name
    assert {t.name for t in TOPOLOGY.declared() if t.partitioning is Partitioning.SINGLE} == {
        "drift",
        "metrics",
        "scorecard.pairs",
        "transactions.dlq",
        "models.assignment",
        "models.audit",
    }
    assert [t.name for t in TOPOLOGY.declared() if t.partitioning is Partitioning.KEYED] == [
        "scores",
        "scores.shadow",
    ]


def test_every_topic_the_project_creates_is_in_the_topology_and_no_other() -> None:
    settings = Settings(topic_prefix="p.", app_id="fraud")
    assert [s.name for s in project_topic_specs(settings)] == [
        t.cluster_name(settings) for t in TOPOLOGY.topics
    ]
    assert [s.name for s in changelog_specs(settings)] == [
        "fraud-customer-state-changelog",
        "fraud-terminal-state-changelog",
    ]
    assert [(s.key, s.cleanup_policy) for s in changelog_specs(settings)] == [
        ("customer_id", "compact"),
        ("terminal_id", "compact"),
    ]


def test_the_copartitioned_topics_and_tables_come_from_the_topology() -> None:
    assert COPARTITIONED_INPUTS == (
        "transactions",
        "transactions.rerouted",
        "transactions.by-terminal",
        "labels",
        "labels.rerouted",
    )
    assert TABLES == ("customer-state", "terminal-state")
    assert {t.name: t.table for t in TOPOLOGY.copartitioned()} == {
        "transactions": "customer-state",
        "transactions.rerouted": "customer-state",
        "customer-state-changelog": "customer-state",
        "transactions.by-terminal": "terminal-state",
        "labels": "terminal-state",
        "labels.rerouted": "terminal-state",
        "terminal-state-changelog": "terminal-state",
    }


def test_readers_and_writers() -> None:
    assert TOPOLOGY.readers("transactions") == ("customer", "scorecard", "evaluate")
    assert TOPOLOGY.writers("transactions") == ("publish", "record")
    assert TOPOLOGY.writers("transactions.by-terminal") == ("customer", "scoring")
    assert TOPOLOGY.readers("transactions.by-terminal") == ("scoring",)
    assert TOPOLOGY.readers("customer-state-changelog") == ("customer",)
    assert TOPOLOGY.writers("terminal-state-changelog") == ("scoring",)
    assert TOPOLOGY.writers("drift") == ("scoring", "scorecard")
    assert TOPOLOGY.readers("models.assignment") == ("model follow", "models")
    assert TOPOLOGY.writers("models.audit") == ("models", "register")
    assert TOPOLOGY.readers("scorecard.pairs") == ("compare",)
    for topic in TOPOLOGY.topics:  # every topic is written by someone
        assert TOPOLOGY.writers(topic.name), topic.name


def test_an_inconsistent_topology_is_refused() -> None:
    table = Table("t", key="k")
    changelog = Topic("t-changelog", Kind.CHANGELOG, "k", Partitioning.COPARTITIONED, "t")
    with pytest.raises(ValueError, match="node n: unknown nope, u"):
        Topology((changelog,), (table,), (Node("n", "x", "", ("nope",), table="u"),))
    with pytest.raises(ValueError, match="table t: no topic t-changelog"):
        Topology((), (table,), ())
    with pytest.raises(ValueError, match="topic a: table None"):
        Topology((Topic("a", Kind.INPUT, "k", Partitioning.COPARTITIONED),), (), ())
    with pytest.raises(ValueError, match="topic a twice"):
        Topology((Topic("a", Kind.INPUT, "k", Partitioning.KEYED),) * 2, (), ())


# --- the worker's ACLs, derived ---------------------------------------------------------------

READS = (
    "transactions",
    "transactions.rerouted",
    "transactions.by-terminal",
    "labels",
    "labels.rerouted",
    "models.assignment",
)
WRITES = (
    "transactions.rerouted",
    "transactions.by-terminal",
    "labels.rerouted",
    "scores",
    "scores.shadow",
    "drift",
    "transactions.dlq",
)


def hand_written(prefix: str, app_id: str, *, create: bool, txn: str | None) -> list[tuple]:
    """The list the hand-written ``worker_acls`` (``stream_app.io.security``, before the
    topology) returned, in its order: (resource type, name, pattern, operation)."""
    acls = [("GROUP", app_id, "LITERAL", "READ")]
    acls += [("TOPIC", prefix + n, "LITERAL", "READ") for n in READS]
    acls += [("TOPIC", prefix + n, "LITERAL", "WRITE") for n in WRITES]
    acls += [("TOPIC", prefix + "transactions.by-terminal", "LITERAL", "DELETE")]
    ops = ("DESCRIBE", "DESCRIBE_CONFIGS", *(("CREATE",) if create else ()))
    acls += [("TOPIC", prefix + n, "LITERAL", op) for n in DECLARED for op in ops]
    acls += [("TOPIC", f"{app_id}-", "PREFIXED", op) for op in ("READ", "WRITE", "CREATE")]
    if txn is not None:
        acls += [("TRANSACTIONAL_ID", txn, "PREFIXED", op) for op in ("WRITE", "DESCRIBE")]
    return acls


def derived(settings: Settings, **kwargs: bool) -> list[tuple]:
    acls = worker_acls(settings, "User:app", **kwargs)
    assert {(a.principal, a.host, a.permission_type.name) for a in acls} == {
        ("User:app", "*", "ALLOW")
    }
    return [(a.restype.name, a.name, a.resource_pattern_type.name, a.operation.name) for a in acls]


def test_the_derived_acls_are_the_hand_written_ones() -> None:
    settings = Settings(topic_prefix="t.", app_id="fraud")
    assert derived(settings) == hand_written("t.", "fraud", create=True, txn=None)
    assert len(derived(settings)) == 57
    assert derived(settings, create_topics=False) == hand_written(
        "t.", "fraud", create=False, txn=None
    )
    eos = Settings(app_id="fraud", processing_guarantee="exactly_once")
    assert derived(eos) == hand_written("", "fraud", create=True, txn="fraud-")
    pinned = Settings(app_id="fraud", processing_guarantee="exactly_once", transactional_id="p7")
    assert derived(pinned) == hand_written("", "fraud", create=True, txn="p7")


def test_worker_reads_writes_and_deletes() -> None:
    assert TOPOLOGY.worker_reads() == READS
    assert TOPOLOGY.worker_writes() == WRITES
    assert TOPOLOGY.worker_deletes() == ("transactions.by-terminal",)


# --- stream-app topology ----------------------------------------------------------------------


def test_describe_names_topics_as_on_the_cluster() -> None:
    described = describe(Settings(topic_prefix="p.", app_id="fraud", partitions=4))
    assert [(s["sub_topology"], s["name"]) for s in described["sub_topologies"]] == [
        (0, "customer"),
        (1, "scoring"),
        (2, "model follow"),
    ]
    customer = described["sub_topologies"][0]
    assert customer["sources"] == ["p.transactions", "p.transactions.rerouted"]
    assert customer["sinks"] == [
        "p.transactions.by-terminal",
        "p.transactions.rerouted",
        "p.transactions.dlq",
    ]
    assert customer["state"] == {
        "table": "customer-state",
        "changelog": "fraud-customer-state-changelog",
    }
    topics = {t["name"]: t for t in described["topics"]}
    assert len(topics) == 15
    assert topics["p.drift"]["partitions"] == 1
    assert topics["fraud-terminal-state-changelog"] == {
        "name": "fraud-terminal-state-changelog",
        "logical_name": "terminal-state-changelog",
        "kind": "changelog",
        "key": "terminal_id",
        "partitions": 4,
        "partitioning": "co-partitioned",
        "copartitioned_with": "terminal-state",
        "compacted": True,
        "purged": False,
        "readers": ["scoring"],
        "writers": ["scoring"],
    }


def test_the_command_prints_sub_topologies_and_topics(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_APP_TOPIC_PREFIX", "p.")
    monkeypatch.setenv("STREAM_APP_APP_ID", "fraud")
    runner = CliRunner()
    result = runner.invoke(app, ["topology"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[:4] == [
        "Topology of app id fraud (topic prefix p., 6 partitions)",
        "Worker (consumer group fraud):",
        "  Sub-topology: 0 (customer)",
        "    stage 1: validates transactions, customer windows, repartitions by terminal; "
        "records on the wrong partition for their key are rerouted, bad ones dead-lettered",
    ]
    assert lines[4:7] == [
        "    Source: p.transactions, p.transactions.rerouted",
        "    State:  customer-state (changelog fraud-customer-state-changelog)",
        "    Sink:   p.transactions.by-terminal, p.transactions.rerouted, p.transactions.dlq",
    ]
    assert "Tools and clients:" in lines
    assert "Topics:" in lines
    as_json = runner.invoke(app, ["topology", "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert orjson.loads(as_json.output) == describe(Settings(topic_prefix="p.", app_id="fraud"))
    help_ = runner.invoke(app, ["topology", "--help"])
    assert help_.exit_code == 0 and "--json" in help_.output
