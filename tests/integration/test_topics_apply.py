"""Topics as code against a real broker: create, idempotence, drift reports and ``--fix``.

Every test uses its own ``topic_prefix`` so tests never see each other's topics, and deletes
what it created.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME, KafkaException, Producer
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    ResourceType,
)
from typer.testing import CliRunner

from stream_app.broker import free_ports
from stream_app.config import Settings
from stream_app.exceptions import ConfigError
from stream_app.io.topics import (
    Difference,
    apply_topics,
    copartitioned,
    ensure_topics,
    input_retention_ms,
    live_topics,
    load_topic_specs,
    make_admin,
)
from tests.kafka_reader import read_topic

pytestmark = pytest.mark.integration


@pytest.fixture
def prefix(kafka_bootstrap: str) -> Iterator[str]:
    """A unique topic prefix; its topics are deleted afterwards."""
    value = f"t-{uuid.uuid4().hex[:10]}."
    yield value
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    names = [n for n in admin.list_topics(timeout=10).topics if n.startswith(value)]
    if names:
        for future in admin.delete_topics(names, operation_timeout=30).values():
            future.result(timeout=30)


def make_settings(bootstrap: str, prefix: str, partitions: int = 2) -> Settings:
    return Settings(kafka_bootstrap_servers=bootstrap, topic_prefix=prefix, partitions=partitions)


def live_config(admin: AdminClient, topic: str, name: str = "retention.ms") -> str | None:
    """A topic config as the broker serves it; None while it does not know the topic yet."""
    resource = ConfigResource(ResourceType.TOPIC, topic)
    try:
        for future in admin.describe_configs([resource]).values():
            return future.result(timeout=30)[name].value
    except KafkaException:
        return None
    return None


def live_retention(admin: AdminClient, topic: str) -> str | None:
    """retention.ms as the broker serves it; None while it does not know the topic yet."""
    return live_config(admin, topic)


def set_config(admin: AdminClient, topic: str, value: str, name: str = "retention.ms") -> None:
    """Alter a topic config live and wait until the broker serves the new value."""
    resource = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)],
    )
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)
    wait_for(lambda: live_config(admin, topic, name) == value)


def set_retention(admin: AdminClient, topic: str, value: str) -> None:
    """Alter retention.ms live and wait until the broker serves the new value."""
    set_config(admin, topic, value)


def wait_for(predicate: Callable[[], bool], timeout: float = 15) -> None:
    """Poll ``predicate`` until true: metadata may lag an admin change briefly."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.2)


def test_apply_creates_all_then_is_idempotent(kafka_bootstrap: str, prefix: str) -> None:
    settings = make_settings(kafka_bootstrap, prefix)
    specs = load_topic_specs(settings)
    names = [s.name for s in specs]
    assert len(names) >= 7
    assert all(n.startswith(prefix) for n in names)

    dry = apply_topics(settings, specs, dry_run=True)
    assert dry.created == names
    assert not any(n.startswith(prefix) for n in live_topics(settings, make_admin(settings)))

    first = apply_topics(settings, specs)
    assert first.created == names
    assert first.unchanged == []
    assert first.differences == []
    assert first.ok

    admin = make_admin(settings)
    wait_for(lambda: set(names) <= set(live_topics(settings, admin)))
    live = live_topics(settings, admin)
    for spec in specs:
        assert live[spec.name] == (spec.partitions, spec.replication)
    assert live[f"{prefix}transactions"] == (2, 1)
    assert live[f"{prefix}drift"] == (1, 1)

    second = apply_topics(settings, specs)
    assert second.created == []
    assert second.unchanged == names
    assert second.differences == []
    assert second.fixed == []
    assert second.ok


def test_retention_drift_reported_then_fixed(kafka_bootstrap: str, prefix: str) -> None:
    settings = make_settings(kafka_bootstrap, prefix)
    specs = load_topic_specs(settings)
    apply_topics(settings, specs)
    scores = f"{prefix}scores"
    admin = make_admin(settings)
    set_retention(admin, scores, "60000")

    report = apply_topics(settings, specs, admin=admin)
    expected = Difference(scores, "retention.ms", "2592000000", "60000", fixable=True)
    assert report.differences == [expected]
    assert report.remaining == [expected]
    assert scores not in report.unchanged
    assert not report.ok

    # a dry run with --fix repairs nothing
    dry = apply_topics(settings, specs, admin=admin, fix=True, dry_run=True)
    assert dry.fixed == [expected]
    assert apply_topics(settings, specs, admin=admin).differences == [expected]

    fixed = apply_topics(settings, specs, admin=admin, fix=True)
    assert fixed.differences == [expected]
    assert fixed.fixed == [expected]
    assert fixed.ok
    wait_for(lambda: live_retention(admin, scores) == "2592000000")

    after = apply_topics(settings, specs, admin=admin)
    assert after.differences == []
    assert scores in after.unchanged


def grow_copartitioned(settings, admin, names) -> None:
    """What `topics grow` does to the topics (no state to move here: no worker ran)."""
    from confluent_kafka.admin import NewPartitions

    for future in admin.create_partitions([NewPartitions(n, 3) for n in names]).values():
        future.result(30)
    wait_for(lambda: all(live_topics(settings, admin)[n][0] == 3 for n in names))


def test_partitions_differ(kafka_bootstrap: str, prefix: str) -> None:
    small = make_settings(kafka_bootstrap, prefix, partitions=1)
    apply_topics(small, load_topic_specs(small))
    default_topics = [s.name for s in load_topic_specs(small) if s.partitions == 1]

    # declared 3, live 1: reported; fixable except the co-partitioned topics, which only
    # `topics grow` may grow (it moves the tables' state with them)
    big = make_settings(kafka_bootstrap, prefix, partitions=3)
    big_specs = load_topic_specs(big)
    grown = [s.name for s in big_specs if s.partitions == 3]
    assert f"{prefix}transactions" in grown and f"{prefix}scores" in grown
    report = apply_topics(big, big_specs)
    assert report.differences == [
        Difference(name, "partitions", 3, 1, fixable=not copartitioned(name)) for name in grown
    ]
    transactions = next(d for d in report.differences if d.topic == f"{prefix}transactions")
    assert "`stream-app topics grow --partitions 3`" in transactions.hint
    assert set(report.unchanged) == set(default_topics) - set(grown)

    fixed = apply_topics(big, big_specs, fix=True)
    assert fixed.fixed == [d for d in fixed.differences if d.fixable]
    admin = make_admin(big)
    alone = [n for n in grown if not copartitioned(n)]
    wait_for(lambda: all(live_topics(big, admin)[n][0] == 3 for n in alone))
    assert all(live_topics(big, admin)[n][0] == 1 for n in grown if copartitioned(n))
    left = apply_topics(big, big_specs).differences
    assert [d.topic for d in left] == [n for n in grown if copartitioned(n)]
    grow_copartitioned(big, admin, [n for n in grown if copartitioned(n)])
    assert apply_topics(big, big_specs).differences == []

    # declared 1, live 3: reported, and --fix cannot repair it
    shrunk = apply_topics(small, load_topic_specs(small), fix=True)
    assert shrunk.differences == [
        Difference(name, "partitions", 1, 3, fixable=False) for name in grown
    ]
    assert shrunk.fixed == []
    assert not shrunk.ok


def test_partitions_added_live_are_reported(kafka_bootstrap: str, prefix: str) -> None:
    settings = make_settings(kafka_bootstrap, prefix)
    specs = load_topic_specs(settings)
    apply_topics(settings, specs)
    drift = f"{prefix}drift"
    admin = make_admin(settings)
    for future in admin.create_partitions([NewPartitions(drift, 4)]).values():
        future.result(timeout=30)
    wait_for(lambda: live_topics(settings, admin)[drift][0] == 4)

    report = apply_topics(settings, specs, admin=admin)
    assert report.differences == [Difference(drift, "partitions", 1, 4, fixable=False)]


def test_ensure_topics_subset(kafka_bootstrap: str, prefix: str) -> None:
    settings = make_settings(kafka_bootstrap, prefix)
    report = ensure_topics(settings, ["transactions", "transactions.dlq"])
    assert report.created == [f"{prefix}transactions", f"{prefix}transactions.dlq"]
    again = ensure_topics(settings, ["transactions"])
    assert again.created == []
    assert again.unchanged == [f"{prefix}transactions"]
    with pytest.raises(ConfigError, match="undeclared"):
        ensure_topics(settings, ["nope"])


def test_cli_apply_reports_and_fixes(
    kafka_bootstrap: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stream_app.cli.topics import app

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("STREAM_APP_TOPIC_PREFIX", prefix)
    monkeypatch.setenv("STREAM_APP_APP_ID", f"{prefix}app")  # its changelogs carry the prefix
    monkeypatch.setenv("STREAM_APP_PARTITIONS", "2")
    monkeypatch.setenv("COLUMNS", "250")
    runner = CliRunner()

    dry = runner.invoke(app, ["apply", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would create" in dry.output

    created = runner.invoke(app, ["apply"])
    assert created.exit_code == 0, created.output
    assert f"{prefix}transactions" in created.output
    assert f"{prefix}app-terminal-state-changelog" in created.output  # the tables' too
    assert "created" in created.output

    listed = runner.invoke(app, ["list"])
    assert listed.exit_code == 0, listed.output
    assert "yes" in listed.output
    assert not re.search(r"│ no +│", listed.output)  # the exists column

    set_retention(make_admin(make_settings(kafka_bootstrap, prefix)), f"{prefix}metrics", "1000")
    differs = runner.invoke(app, ["apply"])
    assert differs.exit_code == 1, differs.output
    assert "differs" in differs.output
    assert "retention.ms" in differs.output
    assert "7776000000" in differs.output

    fixed = runner.invoke(app, ["apply", "--fix"])
    assert fixed.exit_code == 0, fixed.output
    assert "fixed" in fixed.output
    admin = make_admin(make_settings(kafka_bootstrap, prefix))
    wait_for(lambda: live_retention(admin, f"{prefix}metrics") == "7776000000")

    clean = runner.invoke(app, ["apply"])
    assert clean.exit_code == 0, clean.output
    assert "differs" not in clean.output


def test_topics_declared_before_get_log_append_time_with_fix(
    kafka_bootstrap: str, prefix: str
) -> None:
    """Topics created from the old declarations (producer's timestamps, 14/7/45-day inputs):
    apply reports the timestamp type and the retentions, --fix sets them, and a record stamped
    in 2018 then gets the broker's append time."""
    settings = make_settings(kafka_bootstrap, prefix)
    specs = load_topic_specs(settings)
    old_retention = {"transactions": 1_209_600_000, "transactions.by-terminal": 604_800_000}
    old_retention["labels"] = 3_888_000_000
    before = [
        dataclasses.replace(
            s,
            retention_ms=old_retention.get(s.name.removeprefix(prefix), s.retention_ms),
            timestamp_type="CreateTime",
        )
        for s in specs
    ]
    apply_topics(settings, before)

    report = apply_topics(settings, specs)
    horizon = str(input_retention_ms(settings))
    expected = [
        Difference(f"{prefix}transactions", "retention.ms", horizon, "1209600000", True),
        Difference(
            f"{prefix}transactions", "message.timestamp.type", "LogAppendTime", "CreateTime", True
        ),
        Difference(f"{prefix}transactions.by-terminal", "retention.ms", "-1", "604800000", True),
        Difference(f"{prefix}labels", "retention.ms", horizon, "3888000000", True),
        *(
            Difference(s.name, "message.timestamp.type", "LogAppendTime", "CreateTime", True)
            for s in specs
            if s.timestamp_type == "LogAppendTime" and not s.name.endswith(".transactions")
        ),
    ]
    assert sorted(map(repr, report.differences)) == sorted(map(repr, expected))
    assert horizon == "3805200000"

    fixed = apply_topics(settings, specs, fix=True)
    assert fixed.fixed == fixed.differences
    assert fixed.ok
    admin = make_admin(settings)
    transactions = f"{prefix}transactions"
    wait_for(lambda: live_config(admin, transactions, "message.timestamp.type") == "LogAppendTime")
    assert apply_topics(settings, specs).differences == []

    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    stamp_2018 = int(datetime(2018, 4, 1, tzinfo=UTC).timestamp() * 1000)
    producer.produce(transactions, b"{}", b"c1", timestamp=stamp_2018)
    assert producer.flush(30) == 0
    (record,) = read_topic(kafka_bootstrap, transactions, expect=1, settle=0.5)
    kind, ts_ms = record.timestamp()
    assert kind == TIMESTAMP_LOG_APPEND_TIME
    assert abs(ts_ms - time.time() * 1000) < 120_000


def test_cli_reports_and_fixes_a_changelog_that_deletes_by_time(
    kafka_bootstrap: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stream_app.cli.topics import app

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("STREAM_APP_TOPIC_PREFIX", prefix)
    monkeypatch.setenv("STREAM_APP_APP_ID", f"{prefix}app")
    monkeypatch.setenv("STREAM_APP_PARTITIONS", "2")
    monkeypatch.setenv("COLUMNS", "250")
    changelog = f"{prefix}app-customer-state-changelog"
    admin = make_admin(make_settings(kafka_bootstrap, prefix))
    config = {"cleanup.policy": "compact,delete", "retention.ms": "86400000"}
    admin.create_topics([NewTopic(changelog, 2, 1, config=config)])[changelog].result(timeout=30)
    wait_for(lambda: live_config(admin, changelog, "cleanup.policy") == "compact,delete")

    runner = CliRunner()
    differs = runner.invoke(app, ["apply"])
    assert differs.exit_code == 1, differs.output
    rows = [line for line in differs.output.splitlines() if changelog in line]
    assert any("cleanup.policy" in r and "compact,delete" in r for r in rows), differs.output
    assert any("retention.ms" in r and "86400000" in r for r in rows), differs.output

    fixed = runner.invoke(app, ["apply", "--fix"])
    assert fixed.exit_code == 0, fixed.output
    wait_for(lambda: live_config(admin, changelog, "cleanup.policy") == "compact")
    assert live_config(admin, changelog) == "-1"


REFUSAL = "replication factor 3 asked for"


def test_a_replication_factor_above_the_broker_count_is_refused(
    kafka_bootstrap: str, prefix: str, models_dir: Path, champion_version: str, tmp_path: Path
) -> None:
    """On the single-node test broker, STREAM_APP_REPLICATION_FACTOR=3 stops `topics apply`
    and the worker's start with what is wrong and what to do, and nothing is created."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "STREAM_APP_"))}
    env = {
        **clean,
        "COLUMNS": "250",
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "STREAM_APP_TOPIC_PREFIX": prefix,
        "STREAM_APP_APP_ID": f"{prefix}app",
        "STREAM_APP_REPLICATION_FACTOR": "3",
        "STREAM_APP_MODELS_DIR": str(models_dir),
        "STREAM_APP_CHAMPION": champion_version,
        "STREAM_APP_STATE_DIR": str(tmp_path / "state"),
        "STREAM_APP_WEB_PORT": str(free_ports(1)[0]),
    }
    outputs = {}
    for command in (["topics", "apply"], ["worker"]):
        result = subprocess.run(
            [sys.executable, "-m", "stream_app", *command],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        output = result.stdout + result.stderr
        outputs[command[0]] = output
        assert result.returncode == 2, output
        assert REFUSAL in output
        assert f"but the cluster at {kafka_bootstrap} has 1 broker(s)" in output
        assert "Set STREAM_APP_REPLICATION_FACTOR=1 or lower (now 3" in output
        assert "Traceback" not in output
    print(outputs["worker"].strip().splitlines()[-1])
    admin = make_admin(make_settings(kafka_bootstrap, prefix))
    assert [
        n for n in live_topics(make_settings(kafka_bootstrap, prefix), admin) if prefix in n
    ] == []
