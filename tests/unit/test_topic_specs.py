"""Topic declarations: parsing, prefix, default partitions, validation; apply logic; the CLI."""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path
from types import SimpleNamespace

import pytest
from confluent_kafka import KafkaError, KafkaException
from typer.testing import CliRunner

from stream_app import config
from stream_app.config import Settings
from stream_app.exceptions import ConfigError, TopicError
from stream_app.io import topic_declarations as topics_mod
from stream_app.io.topics import (
    Difference,
    TopicSpec,
    apply_topics,
    changelog_specs,
    check_replication,
    compare_topic,
    input_retention_ms,
    load_topic_specs,
    min_insync_replicas,
    parse_topic_specs,
    project_topic_specs,
    select_specs,
)

EXPECTED = [
    TopicSpec(
        "transactions",
        "Input: transaction events (schemas/transaction.schema.json).",
        "customer_id",
        6,
        1,
        3_805_200_000,  # (30 + 7) days + 1 hour lateness + 7 days margin
        "delete",
        "LogAppendTime",
    ),
    TopicSpec(
        "transactions.by-terminal",
        "Internal repartition: validated transactions with customer features, keyed by terminal "
        "for the terminal/scoring stage. Records carry their source record's timestamp; no time "
        "limit: the worker purges what it has consumed and committed.",
        "terminal_id",
        6,
        1,
        -1,
        "delete",
        "CreateTime",
    ),
    TopicSpec(
        "labels",
        "Input: fraud feedback (schemas/label.schema.json), arriving after a delay.",
        "terminal_id",
        6,
        1,
        3_805_200_000,
        "delete",
        "LogAppendTime",
    ),
    TopicSpec(
        "scores",
        "Output: score envelopes (schemas/score_envelope.schema.json).",
        "customer_id",
        6,
        1,
        2_592_000_000,
        "delete",
        "LogAppendTime",
    ),
    TopicSpec(
        "scores.shadow",
        "Output: challenger envelopes beside the champion (schemas/shadow_score.schema.json).",
        "customer_id",
        6,
        1,
        2_592_000_000,
        "delete",
        "LogAppendTime",
    ),
    TopicSpec(
        "drift",
        "Output: drift statistics (schemas/drift_record.schema.json).",
        "model_version",
        1,
        1,
        7_776_000_000,
        "delete",
        "LogAppendTime",
    ),
    TopicSpec(
        "metrics",
        "Output: live scorecard (schemas/metrics_record.schema.json).",
        "model_version",
        1,
        1,
        7_776_000_000,
        "delete",
        "LogAppendTime",
    ),
    TopicSpec(
        "transactions.dlq",
        "Output: rejected inputs with original bytes and a reason "
        "(schemas/dead_letter.schema.json).",
        "original key",
        1,
        1,
        2_592_000_000,
        "delete",
        "LogAppendTime",
    ),
]

GOOD_ENTRY = """
[[topic]]
name = "events"
description = "Some events."
key = "id"
partitions = "default"
replication = 1
retention_ms = 1000
cleanup_policy = "delete"
timestamp_type = "CreateTime"
"""


def settings(**kwargs: object) -> Settings:
    base: dict[str, object] = {"topic_prefix": "", "partitions": 6}
    base.update(kwargs)
    return Settings(**base)  # type: ignore[arg-type]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "topics.toml"
    path.write_text(text, encoding="utf-8")
    return path


def entry(**overrides: object) -> str:
    """One [[topic]] table: GOOD_ENTRY's values with overrides (None drops the key)."""
    values: dict[str, object] = {
        "name": "events",
        "description": "Some events.",
        "key": "id",
        "partitions": "default",
        "replication": 1,
        "retention_ms": 1000,
        "cleanup_policy": "delete",
        "timestamp_type": "CreateTime",
    }
    values.update(overrides)
    lines = ["[[topic]]"]
    for k, v in values.items():
        if v is None:
            continue
        if isinstance(v, bool):
            lines.append(f"{k} = {'true' if v else 'false'}")
        elif isinstance(v, str):
            lines.append(f'{k} = "{v}"')
        else:
            lines.append(f"{k} = {v}")
    return "\n".join(lines) + "\n"


# --- the repository's declarations ----------------------------------------------------------


def test_repo_declarations_exact() -> None:
    specs = load_topic_specs(settings())
    by_name = {s.name: s for s in specs}
    assert len(by_name) == len(specs)  # unique
    for expected in EXPECTED:
        assert by_name[expected.name] == expected
    # declaration order is kept
    order = [s.name for s in specs]
    assert order.index("transactions") < order.index("labels") < order.index("transactions.dlq")


def test_prefix_applies_to_every_name() -> None:
    plain = load_topic_specs(settings())
    specs = load_topic_specs(settings(topic_prefix="tenant-a."))
    assert [s.name for s in specs] == [f"tenant-a.{p.name}" for p in plain]
    assert [s.retention_ms for s in specs] == [p.retention_ms for p in plain]
    assert "tenant-a.scores.shadow" in [s.name for s in specs]


def test_default_partitions_come_from_settings() -> None:
    specs = {s.name: s for s in load_topic_specs(settings(partitions=3))}
    assert specs["transactions"].partitions == 3
    assert specs["labels"].partitions == 3
    assert specs["scores"].partitions == 3
    assert specs["scores.shadow"].partitions == 3
    assert specs["transactions.by-terminal"].partitions == 3
    # explicit integers are kept
    assert specs["drift"].partitions == 1
    assert specs["metrics"].partitions == 1
    assert specs["transactions.dlq"].partitions == 1


def test_kafka_configs() -> None:
    assert EXPECTED[0].kafka_configs() == {
        "retention.ms": "3805200000",
        "cleanup.policy": "delete",
        "message.timestamp.type": "LogAppendTime",
        "min.insync.replicas": "1",
    }


def test_explicit_path(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD_ENTRY)
    assert load_topic_specs(settings(partitions=4, topic_prefix="x-"), path) == [
        TopicSpec("x-events", "Some events.", "id", 4, 1, 1000, "delete", "CreateTime")
    ]


def test_falls_back_to_installed_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    packaged = write(tmp_path, GOOD_ENTRY)
    monkeypatch.setattr(config, "REPO_ROOT", tmp_path / "no-repo-here")
    monkeypatch.setattr(topics_mod, "_packaged_declaration", lambda: packaged)
    assert [s.name for s in load_topic_specs(settings())] == ["events"]


def test_no_declarations_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(topics_mod, "_packaged_declaration", lambda: None)
    with pytest.raises(ConfigError, match="topic declarations not found"):
        load_topic_specs(settings())


def test_missing_explicit_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml is not a file"):
        load_topic_specs(settings(), tmp_path / "nope.toml")


def test_select_specs() -> None:
    s = settings(topic_prefix="p.")
    specs = load_topic_specs(s)
    assert [x.name for x in select_specs(s, specs, ["scores", "drift"])] == ["p.scores", "p.drift"]
    with pytest.raises(ConfigError, match=r"undeclared topic.*nonsense"):
        select_specs(s, specs, ["nonsense"])


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"colour": "blue"}, r"topic #1 \('events'\): unknown key\(s\) colour"),
        ({"retention_ms": None}, r"topic #1 \('events'\): missing key\(s\) retention_ms"),
        ({"partitions": "many"}, r'partitions must be "default" or an integer >= 1, got \'many\''),
        ({"partitions": 0}, r"partitions must be .* got 0"),
        ({"partitions": True}, r"partitions must be .* got True"),
        ({"replication": "1"}, r'replication must be "default" or an integer >= 1, got \'1\''),
        ({"replication": 0}, r'replication must be "default" or an integer >= 1, got 0'),
        ({"retention_ms": -5}, r'retention_ms must be "horizon" or an integer >= -1'),
        ({"retention_ms": 1.5}, r"retention_ms must be .* got 1\.5"),
        ({"retention_ms": "forever"}, r"retention_ms must be .* got 'forever'"),
        ({"cleanup_policy": "bogus"}, r"cleanup_policy must be one of .* got 'bogus'"),
        ({"timestamp_type": None}, r"missing key\(s\) timestamp_type"),
        (
            {"timestamp_type": "EventTime"},
            r"timestamp_type must be one of CreateTime, LogAppendTime, got 'EventTime'",
        ),
        ({"name": "has space"}, r"name 'has space' may only use letters"),
        ({"name": ""}, r"name must be a non-empty string"),
        ({"name": 7}, r"topic #1 \(7\): name must be a non-empty string, got 7"),
        ({"description": ""}, r"description must be a non-empty string"),
        ({"key": 3}, r"key must be a non-empty string, got 3"),
    ],
)
def test_bad_entry(tmp_path: Path, overrides: dict[str, object], message: str) -> None:
    path = write(tmp_path, entry(**overrides))
    with pytest.raises(ConfigError, match=message) as info:
        load_topic_specs(settings(), path)
    assert str(path) in str(info.value)


def test_bad_entry_names_its_position(tmp_path: Path) -> None:
    text = entry(name="first") + entry(name="second", replication=-1)
    with pytest.raises(ConfigError, match=r"topic #2 \('second'\): replication"):
        load_topic_specs(settings(), write(tmp_path, text))


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    text = entry(name="a", partitions=0) + entry(name="b", cleanup_policy="x")
    with pytest.raises(ConfigError) as info:
        load_topic_specs(settings(), write(tmp_path, text))
    assert "topic #1 ('a'): partitions" in str(info.value)
    assert "topic #2 ('b'): cleanup_policy" in str(info.value)


def test_duplicate_names(tmp_path: Path) -> None:
    text = entry(name="same") + entry(name="other") + entry(name="same")
    with pytest.raises(
        ConfigError, match=r"topic #3 \('same'\): duplicate name, already declared as topic #1"
    ):
        load_topic_specs(settings(), write(tmp_path, text))


def test_not_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "[[topic]\nname = ")
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        load_topic_specs(settings(), path)
    assert str(path) in str(info.value)


def test_unknown_top_level_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown top-level key\(s\) topics"):
        load_topic_specs(settings(), write(tmp_path, GOOD_ENTRY.replace("[[topic]]", "[[topics]]")))


def test_no_topics(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no topics declared"):
        load_topic_specs(settings(), write(tmp_path, "# nothing\n"))


def test_topic_must_be_tables(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"topic #1: must be a \[\[topic\]\] table"):
        load_topic_specs(settings(), write(tmp_path, 'topic = ["a"]\n'))


def test_illegal_prefix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="with topic_prefix 'bad/' the name 'bad/events'"):
        load_topic_specs(settings(topic_prefix="bad/"), write(tmp_path, GOOD_ENTRY))


def test_parse_from_text() -> None:
    specs = parse_topic_specs(entry(partitions=2, cleanup_policy="compact,delete"), settings())
    assert specs == [
        TopicSpec("events", "Some events.", "id", 2, 1, 1000, "compact,delete", "CreateTime")
    ]


# --- comparison (pure) ----------------------------------------------------------------------


def live_configs(**overrides: str) -> dict[str, str]:
    """What the broker describes for a topic matching ``TopicSpec(..., 1000, "delete",
    "LogAppendTime")`` of one or two replicas, with ``overrides`` (dots as underscores)."""
    configs = {
        "retention.ms": "1000",
        "cleanup.policy": "delete",
        "message.timestamp.type": "LogAppendTime",
        "min.insync.replicas": "1",
    }
    configs.update({k.replace("_", "."): v for k, v in overrides.items()})
    return configs


def test_compare_topic_matching() -> None:
    spec = TopicSpec("t", "d", "k", 3, 1, 1000, "compact,delete", "LogAppendTime")
    live = live_configs(cleanup_policy="delete,compact")
    assert compare_topic(spec, 3, 1, live) == []


def test_compare_topic_differences() -> None:
    spec = TopicSpec("t", "d", "k", 3, 2, 1000, "delete", "LogAppendTime")
    live = live_configs(
        retention_ms="5", cleanup_policy="compact", message_timestamp_type="CreateTime"
    )
    assert compare_topic(spec, 1, 1, live) == [
        Difference("t", "partitions", 3, 1, fixable=True),
        Difference("t", "replication", 2, 1, fixable=False),
        Difference("t", "retention.ms", "1000", "5", fixable=True),
        Difference("t", "cleanup.policy", "delete", "compact", fixable=True),
        Difference("t", "message.timestamp.type", "LogAppendTime", "CreateTime", fixable=True),
    ]
    # Kafka cannot remove partitions
    assert compare_topic(spec, 9, 2, live_configs()) == [
        Difference("t", "partitions", 3, 9, fixable=False)
    ]


def test_min_insync_replicas_follows_the_replication() -> None:
    assert [min_insync_replicas(r) for r in (1, 2, 3, 4, 5)] == [1, 1, 2, 2, 2]
    spec = TopicSpec("t", "d", "k", 3, 3, 1000, "delete", "LogAppendTime")
    assert spec.kafka_configs()["min.insync.replicas"] == "2"
    # Set on a topic with its 3 replicas; never raised above what a topic with fewer warrants
    # (every acks=all write would be refused there): that waits until the replication is fixed.
    assert compare_topic(spec, 3, 3, live_configs()) == [
        Difference("t", "min.insync.replicas", "2", "1", fixable=True)
    ]
    differences = compare_topic(spec, 3, 1, live_configs())
    assert differences == [
        Difference("t", "replication", 3, 1, fixable=False),
        Difference("t", "min.insync.replicas", "2", "1", fixable=False),
    ]
    assert "replication first" in differences[1].hint
    # lowering it (declared 1 replica, live 3) is always safe
    one = TopicSpec("t", "d", "k", 3, 1, 1000, "delete", "LogAppendTime")
    assert compare_topic(one, 3, 3, live_configs(min_insync_replicas="2")) == [
        Difference("t", "replication", 1, 3, fixable=False),
        Difference("t", "min.insync.replicas", "1", "2", fixable=True),
    ]


def test_timestamp_drift_hint_says_old_records_keep_their_timestamps() -> None:
    spec = TopicSpec("t", "d", "k", 1, 1, 1000, "delete", "LogAppendTime")
    (difference,) = compare_topic(spec, 1, 1, live_configs(message_timestamp_type="CreateTime"))
    assert "--fix" in difference.hint
    assert "keep their timestamps" in difference.hint


# --- CLI without a broker -------------------------------------------------------------------


def test_cli_help() -> None:
    from stream_app.cli.topics import app

    runner = CliRunner()
    for args in (["--help"], ["apply", "--help"], ["list", "--help"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    assert "--fix" in runner.invoke(app, ["apply", "--help"]).output
    assert "--dry-run" in runner.invoke(app, ["apply", "--help"]).output


def test_cli_list_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    from stream_app.cli.topics import app

    monkeypatch.setenv("STREAM_APP_TOPIC_PREFIX", "t-")
    monkeypatch.setenv("STREAM_APP_PARTITIONS", "4")
    monkeypatch.setenv("COLUMNS", "250")
    result = CliRunner().invoke(app, ["list", "--offline"])
    assert result.exit_code == 0, result.output
    assert "t-transactions.dlq" in result.output
    assert "original key" in result.output
    assert "44d1h" in result.output  # the inputs' horizon retention
    assert "LogAppendTime" in result.output
    assert "stream-app-terminal-state-changelog" in result.output


def test_cli_bad_declarations_exit_2(tmp_path: Path) -> None:
    from stream_app.cli.topics import app

    path = write(tmp_path, entry(partitions=0))
    result = CliRunner().invoke(app, ["apply", "--file", str(path)])
    assert result.exit_code == 2
    assert "partitions must be" in result.output


def test_cli_unreachable_broker_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    from stream_app.cli.topics import app

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    result = CliRunner().invoke(app, ["apply", "--timeout", "1"])
    assert result.exit_code == 2
    assert "cannot reach Kafka at 127.0.0.1:1" in result.output


# --- apply_topics with a fake admin client (race with a concurrent creator) -------------------


class _Meta:
    def __init__(self, topics: dict[str, tuple[int, int]], brokers: int = 1) -> None:
        self.brokers = {i: SimpleNamespace(id=i) for i in range(1, brokers + 1)}
        self.topics = {
            name: SimpleNamespace(
                error=None,
                partitions={i: SimpleNamespace(replicas=list(range(rf))) for i in range(n)},
            )
            for name, (n, rf) in topics.items()
        }


def _done(value: object = None, exc: BaseException | None = None) -> Future[object]:
    future: Future[object] = Future()
    if exc is None:
        future.set_result(value)
    else:
        future.set_exception(exc)
    return future


class RacingAdmin:
    """Metadata is stale on the first look; creation then finds the topic already there."""

    def __init__(self, spec: TopicSpec) -> None:
        self.spec = spec
        self.lists = 0
        self.altered: list[object] = []

    def list_topics(self, timeout: float) -> _Meta:
        self.lists += 1
        if self.lists == 1:
            return _Meta({})
        return _Meta({self.spec.name: (self.spec.partitions, self.spec.replication)})

    def create_topics(self, new_topics: list[object], **kwargs: object) -> dict[str, Future]:
        exists = KafkaException(KafkaError(KafkaError.TOPIC_ALREADY_EXISTS))
        return {self.spec.name: _done(exc=exists)}

    def describe_configs(self, resources: list[object], **kwargs: object) -> dict[object, Future]:
        entries = {
            "retention.ms": SimpleNamespace(value="5"),
            "cleanup.policy": SimpleNamespace(value="delete"),
            "message.timestamp.type": SimpleNamespace(value="CreateTime"),
            "min.insync.replicas": SimpleNamespace(value="1"),
        }
        return {r: _done(entries) for r in resources}

    def incremental_alter_configs(
        self, resources: list[object], **kwargs: object
    ) -> dict[object, Future]:
        self.altered.extend(resources)
        return {r: _done() for r in resources}


def test_apply_handles_concurrent_creation() -> None:
    spec = TopicSpec("events", "d", "k", 1, 1, 1000, "delete", "CreateTime")
    admin = RacingAdmin(spec)
    report = apply_topics(settings(), [spec], admin=admin, timeout=5)  # type: ignore[arg-type]
    assert report.created == []
    assert report.differences == [Difference("events", "retention.ms", "1000", "5", fixable=True)]
    assert admin.altered == []  # reported, never changed without fix

    fixed = apply_topics(settings(), [spec], admin=RacingAdmin(spec), fix=True, dry_run=True)  # type: ignore[arg-type]
    assert fixed.fixed == fixed.differences

    admin = RacingAdmin(spec)
    fixed = apply_topics(settings(), [spec], admin=admin, fix=True)  # type: ignore[arg-type]
    assert fixed.ok
    assert len(admin.altered) == 1


# --- derived values: horizon retention, replication --------------------------------------------


def test_input_retention_is_the_feature_horizon_plus_lateness_plus_margin() -> None:
    # 37 days = the 30-day terminal windows + the 7-day label delay (features/definitions.py)
    assert input_retention_ms(settings()) == 37 * 86_400_000 + 3_600_000 + 7 * 86_400_000
    assert input_retention_ms(settings()) == 3_805_200_000
    assert input_retention_ms(settings(allowed_lateness_s=0)) == 3_801_600_000
    assert input_retention_ms(settings(allowed_lateness_s=0.0005)) == 3_801_600_001  # rounds up
    # longer than what the state keeps (horizon + lateness), so a replay can rebuild all of it
    from stream_app.features.state import Retention

    retention = Retention.for_lateness(3600)
    assert input_retention_ms(settings()) > 1000 * max(retention.customer_s, retention.terminal_s)


def test_horizon_retention_in_the_toml(tmp_path: Path) -> None:
    path = write(tmp_path, entry(retention_ms="horizon"))
    (spec,) = load_topic_specs(settings(allowed_lateness_s=7200), path)
    assert spec.retention_ms == 37 * 86_400_000 + 7_200_000 + 7 * 86_400_000


def test_inputs_keep_the_horizon_and_every_timed_topic_uses_log_append_time() -> None:
    specs = {s.name: s for s in project_topic_specs(settings())}
    assert specs["transactions"].retention_ms == specs["labels"].retention_ms == 3_805_200_000
    for spec in specs.values():
        # a producer's timestamp never decides when records go: either the broker stamps them,
        # or nothing is deleted by time (by-terminal: the worker purges it; changelogs: compact)
        timed = spec.retention_ms >= 0 and "delete" in spec.cleanup_policy
        assert spec.timestamp_type == ("LogAppendTime" if timed else "CreateTime"), spec.name
    assert specs["transactions.by-terminal"].retention_ms == -1
    assert "purges" in specs["transactions.by-terminal"].description


def test_replication_default_takes_the_setting_and_an_integer_pins_it(tmp_path: Path) -> None:
    specs = load_topic_specs(settings(replication_factor=3))
    assert {s.replication for s in specs} == {3}
    assert {s.kafka_configs()["min.insync.replicas"] for s in specs} == {"2"}
    assert {s.replication for s in changelog_specs(settings(replication_factor=3))} == {3}
    text = entry(name="a", replication="default") + entry(name="b", replication=2)
    pinned = load_topic_specs(settings(replication_factor=3), write(tmp_path, text))
    assert [(s.name, s.replication) for s in pinned] == [("a", 3), ("b", 2)]


def test_replication_factor_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_APP_REPLICATION_FACTOR", "3")
    assert Settings().replication_factor == 3
    monkeypatch.setenv("STREAM_APP_REPLICATION_FACTOR", "0")
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        Settings()
    monkeypatch.delenv("STREAM_APP_REPLICATION_FACTOR")
    assert Settings().replication_factor == 1


def test_changelogs_are_compacted_only_and_never_deleted_by_time() -> None:
    for spec in changelog_specs(settings(app_id="fraud")):
        assert spec.kafka_configs() == {
            "retention.ms": "-1",
            "cleanup.policy": "compact",
            "message.timestamp.type": "CreateTime",
            "min.insync.replicas": "1",
        }
    assert [s.name for s in project_topic_specs(settings(app_id="fraud"))][-2:] == [
        "fraud-customer-state-changelog",
        "fraud-terminal-state-changelog",
    ]


def test_check_replication() -> None:
    s = settings(replication_factor=3, kafka_bootstrap_servers="k:9092")
    specs = load_topic_specs(s)
    with pytest.raises(TopicError) as info:
        check_replication(s, specs, {}, brokers=1)
    message = str(info.value)
    assert message.startswith(
        "replication factor 3 asked for (transactions, transactions.rerouted, "
        "transactions.by-terminal, labels and 9 more), but the cluster at k:9092 has 1 broker(s)"
    )
    assert "Set STREAM_APP_REPLICATION_FACTOR=1 or lower (now 3" in message
    assert "Nothing was created" in message
    check_replication(s, specs, {}, brokers=3)
    # a live topic with all its replicas is fine while a broker is down ...
    live = {spec.name: (spec.partitions, 3) for spec in specs}
    check_replication(s, specs, live, brokers=2)
    # ... one that lacks replicas the cluster cannot give is not
    live["scores"] = (6, 1)
    with pytest.raises(TopicError, match=r"replication factor 3 asked for \(scores\)"):
        check_replication(s, specs, live, brokers=2)


def test_apply_refuses_before_creating_anything() -> None:
    spec = TopicSpec("events", "d", "k", 1, 3, 1000, "delete", "LogAppendTime")

    class OneBroker(RacingAdmin):
        def create_topics(self, new_topics: list[object], **kwargs: object) -> dict[str, Future]:
            raise AssertionError("must not create")

    with pytest.raises(TopicError, match="replication factor 3 asked for"):
        apply_topics(settings(), [spec], admin=OneBroker(spec), timeout=5)  # type: ignore[arg-type]
