"""The audit trail on the real broker: every promote, rollback and registration writes one record
to the compacted ``models.audit``; ``stream-app models history`` prints them; the worker logs
each change it applies with its record's id."""

from __future__ import annotations

import getpass
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from stream_app.devtools.worker_process import WorkerProcess
from stream_app.io.schemas import validate
from stream_app.scoring.registry import list_versions, read_manifest
from stream_app.scoring.serving import promote
from tests.kafka_reader import read_topic

pytestmark = pytest.mark.integration


def cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream_app", *args],
        env={**os.environ, **env, "COLUMNS": "250"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_for_log(worker: WorkerProcess, pattern: str, timeout: float = 30.0) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while True:
        match = re.search(pattern, worker.log_text())
        if match:
            return match
        assert time.monotonic() < deadline, f"no {pattern!r} in the worker log:\n{worker.tail()}"
        time.sleep(0.2)


def audit_id(stdout: str) -> str:
    match = re.search(r"audit (\d{8}T\d{6}Z-[0-9a-f]{8}) at \S+\.models\.audit@(\d+)", stdout)
    assert match, stdout
    return match.group(1)


def test_promote_rollback_and_registration_are_audited(
    app_env,
    app_settings,
    kafka_bootstrap,
    models_dir,
    champion_version,
    challenger_version,
    tmp_path,
):
    registry = tmp_path / "registry"
    registry.mkdir()
    for version in (champion_version, challenger_version):
        shutil.copytree(models_dir / version, registry / version)
    promote(registry, champion_version)
    env = {k: v for k, v in app_env.items() if k != "STREAM_APP_CHAMPION"}
    env |= {"STREAM_APP_MODELS_DIR": str(registry), "STREAM_APP_MODEL_WATCH_INTERVAL_S": "0.5"}
    sha = {v: read_manifest(registry / v).sha256 for v in (champion_version, challenger_version)}
    me = f"{getpass.getuser()}@{socket.gethostname()}"

    # A change without a reason is refused before anything happens.
    result = cli(env, "models", "promote", challenger_version)
    assert result.returncode == 2 and "--reason" in result.stderr, result.stderr
    result = cli(env, "models", "promote", challenger_version, "--reason", "  ")
    assert result.returncode == 1 and "needs a reason" in result.stderr, result.stderr

    worker = WorkerProcess(tmp_path / "worker", env)
    worker.start()
    try:
        worker.wait_ready()
        # 1. promote, with --by
        started = time.monotonic()
        result = cli(
            env,
            "models",
            "promote",
            challenger_version,
            "--reason",
            "hgb: AP 0.66 against 0.61 on the shadow week",
            "--by",
            "ana",
        )
        assert result.returncode == 0, result.stderr
        promoted = audit_id(result.stdout)
        line = wait_for_log(worker, rf"champion now {challenger_version}.*audit record (\S+):")
        assert line.group(1) == promoted
        applied_after_s = time.monotonic() - started
        assert "hgb: AP 0.66 against 0.61 on the shadow week" in worker.log_text()
        # 2. a challenger, by the OS user
        result = cli(
            env, "models", "promote", "--challenger", champion_version, "--reason", "shadow it"
        )
        assert result.returncode == 0, result.stderr
        shadowed = audit_id(result.stdout)
        assert (
            wait_for_log(worker, rf"challenger now {champion_version}.*audit record (\S+):").group(
                1
            )
            == shadowed
        )
        # 3. roll the champion back
        result = cli(env, "models", "rollback", "--reason", "declines doubled overnight")
        assert result.returncode == 0, result.stderr
        rolled = audit_id(result.stdout)
        assert wait_for_log(
            worker, rf"champion now {champion_version}.*audit record {rolled}: declines doubled"
        )
    finally:
        worker.stop()
    # the assignment carries the last record's id for every worker that follows it
    result = cli(env, "models", "assignment")
    assert result.returncode == 0 and f'"id": "{rolled}"' in result.stdout, result.stdout
    # publishing serving.json as the assignment is audited too (a default reason)
    result = cli(env, "models", "assignment", "--publish")
    assert result.returncode == 0, result.stderr
    republished = audit_id(result.stdout)

    # 4. registration: `stream-app train` records the version it registers (default reason)...
    result = cli(
        env,
        "train",
        "--customers",
        "100",
        "--terminals",
        "200",
        "--seed",
        "5",
        "--by",
        "ci",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    trained = audit_id(result.stdout)
    new_version = [v for v in list_versions(registry) if v not in sha]
    assert len(new_version) == 1, new_version
    sha[new_version[0]] = read_manifest(registry / new_version[0]).sha256
    # ... and `models register` a version copied in
    result = cli(env, "models", "register", champion_version, "--reason", "copied from staging")
    assert result.returncode == 0, result.stderr
    registered = audit_id(result.stdout)
    result = cli(env, "models", "register", "no-such-version", "--reason", "x")
    assert result.returncode == 1 and "not registered" in result.stderr

    # The topic: compacted, one partition, a record per change keyed by its id, schema-valid.
    topic = app_settings.topic("models.audit")
    messages = read_topic(kafka_bootstrap, topic, expect=6, settle=1.0)
    records = [orjson.loads(m.value()) for m in messages]
    for message, record in zip(messages, records, strict=True):
        validate("model_audit", record)
        assert message.key().decode() == record["id"]
    assert [r["id"] for r in records] == [
        promoted,
        shadowed,
        rolled,
        republished,
        trained,
        registered,
    ]
    first, second, third, published, fourth, fifth = records
    assert first["action"] == "promote" and first["role"] == "champion"
    assert first["from"] == {"version": champion_version, "sha256": sha[champion_version]}
    assert first["to"] == {"version": challenger_version, "sha256": sha[challenger_version]}
    assert first["by"] == "ana" and first["group"] == app_settings.app_id
    assert re.fullmatch(
        rf"{re.escape(app_settings.topic('models.assignment'))}@\d+", first["assignment"]
    )
    assert (second["role"], second["from"], second["by"]) == ("challenger", None, me)
    assert second["to"]["version"] == champion_version
    assert (third["action"], third["from"]["version"], third["to"]["version"]) == (
        "rollback",
        challenger_version,
        champion_version,
    )
    assert third["reason"] == "declines doubled overnight"
    assert (published["action"], published["role"], published["to"]["version"]) == (
        "publish",
        None,
        champion_version,
    )
    assert published["reason"] == "models/serving.json published as the group's assignment"
    assert published["assignment"].startswith(app_settings.topic("models.assignment") + "@")
    assert (fourth["action"], fourth["by"], fourth["from"], fourth["assignment"]) == (
        "register",
        "ci",
        None,
        None,
    )
    assert fourth["to"] == {"version": new_version[0], "sha256": sha[new_version[0]]}
    assert fourth["reason"].startswith("trained by stream-app train --model logreg on synthetic:")
    assert (fifth["action"], fifth["reason"]) == ("register", "copied from staging")
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    configs = admin.describe_configs([resource])[resource].result(timeout=10)
    assert configs["cleanup.policy"].value == "compact"
    assert len(admin.list_topics(topic, timeout=10).topics[topic].partitions) == 1

    # `stream-app models history`: the same records, as a table and as JSON lines.
    result = cli(env, "models", "history")
    assert result.returncode == 0, result.stderr
    table = result.stdout
    assert f"{topic} (group {app_settings.app_id}): 6 record(s)" in table
    for record_id in (promoted, shadowed, rolled, republished, trained, registered):
        assert record_id in table
    assert f"{champion_version} ({sha[champion_version][:12]})" in table
    assert "declines doubled overnight" in table and "rollback champion" in table
    result = cli(env, "models", "history", "--json", "--limit", "2")
    assert result.returncode == 0, result.stderr
    assert [orjson.loads(line)["id"] for line in result.stdout.splitlines()] == [
        trained,
        registered,
    ]
    # another group's history is its own
    other = {**env, "STREAM_APP_APP_ID": app_settings.app_id + "-other"}
    result = cli(other, "models", "history")
    assert result.returncode == 0 and "no audit records of group" in result.stdout
    result = cli(other, "models", "history", "--all-groups", "--json")
    assert len(result.stdout.splitlines()) == 6
    help_text = cli(env, "models", "history", "--help").stdout
    assert "--all-groups" in help_text and "--limit" in help_text and "--json" in help_text
    print(f"promote applied by the worker {applied_after_s:.1f} s after the command started")


def test_training_without_a_broker_registers_and_says_how_to_audit(tmp_path: Path) -> None:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",  # nothing listens
        "STREAM_APP_MODELS_DIR": str(tmp_path / "registry"),
    }
    result = cli(
        env, "train", "--customers", "100", "--terminals", "200", "--seed", "5", timeout=300
    )
    assert result.returncode == 0, result.stderr
    (version,) = list_versions(tmp_path / "registry")
    assert f"{version} is registered, but not in the audit trail" in result.stdout
    assert f"stream-app models register {version}" in result.stdout
