"""The commands a user types, run for real: ``python -m stream_app ...`` as a child process
against the session's broker, checked by their output and exit code.

demo, config (secrets masked, where the models directory comes from), train, models list,
broker start/status/stop (a broker of the test's own, in a temporary home on free ports), and
the two readers of what a worker served: scorecard (rebuilt with --since-hours) and
replay --served, both fed by one worker run of this module.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from sklearn.metrics import average_precision_score, roc_auc_score

from stream_app.broker import LocalBroker, port_in_use, read_cmdline
from stream_app.config import Settings
from stream_app.devtools.worker_process import WorkerProcess
from stream_app.scoring.registry import list_versions, read_manifest
from stream_app.sources.producer import BulkProducer
from stream_app.sources.schedule import schedule
from stream_app.sources.simulator import simulate
from tests.integration.conftest import free_port, isolated_env

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MASK = "**********"


def run_cli(
    args: list[str],
    env: Mapping[str, str],
    timeout: float = 120.0,
    cwd: Path | None = None,
    inherit: bool = True,
) -> subprocess.CompletedProcess[str]:
    """``python -m stream_app <args>`` with ``env`` over this process's environment (or alone,
    with ``inherit=False``), wide enough that rich tables are not truncated."""
    base = dict(os.environ) if inherit else {"PATH": os.environ.get("PATH", "")}
    full = {**base, **env, "COLUMNS": "600", "NO_COLOR": "1", "TERM": "dumb"}
    # The repository on the child's path, as for the test process (cwd may be elsewhere).
    full["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "stream_app", *args],
        env=full,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def table_rows(text: str) -> list[list[str]]:
    """The data rows of the rich tables in ``text`` (cells stripped; rules and titles skipped)."""
    return [
        [cell.strip() for cell in line.split("│")[1:-1]]
        for line in text.splitlines()
        if line.startswith("│")
    ]


def topic_names(bootstrap: str) -> set[str]:
    return set(AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=15).topics)


def end_offsets(bootstrap: str, topic: str) -> int:
    """Records in ``topic`` (sum of the partitions' high watermarks; nothing is ever deleted)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"cli-{uuid.uuid4().hex}"})
    try:
        partitions = consumer.list_topics(topic, timeout=15).topics[topic].partitions
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=15)[1]
            for p in partitions
        )
    finally:
        consumer.close()


def read_all(bootstrap: str, topic: str) -> list[bytes]:
    """Every record value of ``topic`` up to the end offsets taken now."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"cli-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=15).topics[topic].partitions
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=15)[1]
            for p in partitions
        }
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        values: list[bytes] = []
        positions = dict.fromkeys(partitions, 0)
        deadline = time.monotonic() + 60
        while any(positions[p] < ends[p] for p in partitions):
            assert time.monotonic() < deadline, (positions, ends)
            for message in consumer.consume(500, timeout=1.0):
                if message.error() is None:
                    positions[message.partition()] = message.offset() + 1
                    values.append(message.value())
        return values
    finally:
        consumer.close()


def pid_is_worker(pid: int) -> bool:
    argv = read_cmdline(pid) or []
    return "stream_app" in argv and "worker" in argv


# --- demo --------------------------------------------------------------------------------------

# A smaller world than the default (1,000 customers, 37 days) so the test stays near a minute;
# the attack, the label delay and the models are the demo's own.
DEMO_WORLD = ["--customers", "400", "--terminals", "800", "--history-days", "16", "--seed", "11"]


def redrawn_live_truth(world: dict) -> dict[str, tuple[int, int]]:
    """(label, scenario) of every live payment, from the generator redrawn with the world the
    demo reports: the test's own ground truth, independent of the demo's bookkeeping."""
    from datetime import timedelta

    from stream_app.devtools.demo_story import DemoWorld

    params = {k: v for k, v in world.items() if k != "start"}
    start = datetime.fromisoformat(world["start"])
    live_from = start + timedelta(days=params["history_days"])
    return {
        item.event["event_id"]: (item.label, item.scenario)
        for item in DemoWorld(**params).simulator(start)
        if datetime.fromisoformat(item.event["event_time"]) >= live_from
    }


def test_demo_catches_injected_frauds_on_the_test_broker_and_cleans_up(
    app_env, kafka_bootstrap, tmp_path
):
    """The demo finds the session's broker answering on KAFKA_BOOTSTRAP_SERVERS and uses it
    (it used to fail: `broker start` found the port taken), trains its champion and challenger
    into an empty registry, warms the state with weeks of payments and labels, then scores a live
    day in which the generator injected frauds: it catches some of them, its counts agree with
    the generator redrawn here and with the champion's thresholds, and its summary has every
    part; it stops its worker and deletes its topics; it starts no broker of its own."""
    broker_home = tmp_path / "broker-home"
    models = tmp_path / "models"
    summary_path = tmp_path / "summary.json"
    env = {
        **{k: v for k, v in app_env.items() if k != "STREAM_APP_CHAMPION"},
        "STREAM_APP_BROKER_HOME": str(broker_home),
        "STREAM_APP_MODELS_DIR": str(models),
    }
    before = topic_names(kafka_bootstrap)
    started = time.monotonic()
    result = run_cli(
        ["demo", *DEMO_WORLD, "--rate", "2000", "--summary-json", str(summary_path)],
        env,
        timeout=420,
    )
    out = result.stdout
    print(out[-6000:], result.stderr[-3000:], f"demo took {time.monotonic() - started:.1f} s")
    worker_pid = re.search(r"worker ready in [0-9.]+ s \(pid (\d+),", out)
    try:
        assert result.returncode == 0, result.stderr
        assert f"a Kafka broker already answers at {kafka_bootstrap}: using it" in out
        summary = orjson.loads(summary_path.read_bytes())

        # Every live payment scored once; the classes add up.
        assert summary["scored"] == summary["live_events"] > 0
        assert sum(summary["decisions"].values()) == summary["live_events"]
        # The injected frauds are the generator's: redraw the world and compare.
        truth = redrawn_live_truth(summary["world"])
        assert len(truth) == summary["live_events"]
        injected = sum(label for label, _ in truth.values())
        assert summary["frauds"] == injected > 0
        events = summary["events"]
        assert all(truth[e["event_id"]] == (e["label"], e["scenario"]) for e in events)
        assert sum(e["label"] for e in events) == injected  # every live fraud is listed
        # Caught = declined or sent to review, from the listed decisions.
        caught = [e for e in events if e["label"] and e["decision"] != "approve"]
        assert summary["caught"] == len(caught) >= 1, summary["kinds"]
        assert summary["caught"] + summary["missed"] == injected
        declines = [e for e in events if e["decision"] == "decline"]
        assert len(declines) == summary["decisions"]["decline"]
        if declines:
            precision = sum(e["label"] for e in declines) / len(declines)
            assert summary["precision"]["decline"] == pytest.approx(precision)
        # Each decision is the champion's thresholds applied to the score.
        champion = max(v for v in list_versions(models) if v.endswith("-logreg"))
        thresholds = read_manifest(models / champion).thresholds
        for e in events:
            expected = (
                "decline"
                if e["score"] >= thresholds["decline"]
                else "review"
                if e["score"] >= thresholds["review"]
                else "approve"
            )
            assert e["decision"] == expected, (e, thresholds)
        assert {v.rsplit("-", 1)[1] for v in list_versions(models)} == {"logreg", "hgb"}

        # The summary's parts, with the figures of the JSON.
        assert f"{summary['caught']} of {injected} injected frauds caught" in out
        assert "Decisions (live window)" in out and "Frauds caught" in out
        top = table_rows(out.split("Highest 3 scores", 1)[1].split("challenger", 1)[0])
        scored_rows = [row for row in top if row[0]]
        assert len(scored_rows) == 3, top
        assert all(row[3] in ("approve", "review", "decline") for row in scored_rows)
        assert re.search(r"challenger \S+-hgb agreed with the champion on [0-9.]+%", out), out
        assert "Drift" in out
        # One interactive query and one synchronous (what-if) score on the worker's HTTP API.
        query = re.search(r"GET /v1/customers/(\S+)/features -> as of event time (\S+)", out)
        assert query is not None, out
        assert re.search(
            r"POST /v1/score \(what-if: \S+ pays [0-9.]+ again at \S+, nothing recorded\) -> "
            r"score [0-9.]+, (approve|review|decline)",
            out,
        ), out
        assert "did not answer as expected" not in out
        for command in ("stream-app tail scores", "stream-app top", "stream-app evaluate served"):
            assert command in out

        assert worker_pid is not None, out
        removed = re.search(r"removed this run's (\d+) topics \(prefix (demo-\S+\.)\)", out)
        assert removed is not None, out
        after = topic_names(kafka_bootstrap)
        assert not {t for t in after if t.startswith(removed.group(2))}
        # Nothing of the run is left (the broker's own __consumer_offsets may appear).
        assert {t for t in after - before if not t.startswith("__")} == set()
        declared = (REPO / "topics" / "topics.toml").read_text().count("[[topic]]")
        assert int(removed.group(1)) > declared  # the declared topics and the app's own
        assert not (broker_home / "broker.pid").exists()
        assert not pid_is_worker(int(worker_pid.group(1)))  # the demo stopped its worker
    finally:
        if worker_pid is not None and pid_is_worker(int(worker_pid.group(1))):
            os.kill(int(worker_pid.group(1)), 9)


# --- config ------------------------------------------------------------------------------------


def config_values(out: str) -> dict[str, str]:
    return {row[0]: row[1] for row in table_rows(out) if len(row) == 3 and row[0]}


def test_config_masks_secrets_and_says_where_the_models_are(app_env, models_dir, tmp_path):
    password = f"pw-{uuid.uuid4().hex}"
    env = {
        **app_env,
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "cli-user",
        "KAFKA_SASL_PASSWORD": password,
    }
    result = run_cli(["config"], env)
    assert result.returncode == 0, result.stderr
    assert password not in result.stdout + result.stderr
    values = config_values(result.stdout)
    assert values["kafka_sasl_password"] == MASK
    assert values["kafka_sasl_username"] == "cli-user"
    assert values["kafka_security_protocol"] == "SASL_SSL"
    assert values["kafka_bootstrap_servers"] == app_env["KAFKA_BOOTSTRAP_SERVERS"]
    assert values["topic_prefix"] == app_env["STREAM_APP_TOPIC_PREFIX"]
    assert values["models_dir"] == str(models_dir)
    assert len(values) == len(Settings.model_fields)
    assert result.stdout.splitlines()[-1] == (
        f"models directory: {models_dir} (set by STREAM_APP_MODELS_DIR)"
    )

    # Unset: ./models of the working directory if it has one, else the per-user directory.
    bare = {"HOME": str(tmp_path / "home")}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run_cli(["config"], bare, cwd=elsewhere, inherit=False)
    assert result.returncode == 0, result.stderr
    per_user = tmp_path / "home" / ".local" / "share" / "stream-app" / "models"
    assert config_values(result.stdout)["models_dir"] == str(per_user)
    assert result.stdout.splitlines()[-1] == (
        f"models directory: {per_user} (default: per-user, under ~/.local/share; "
        "no ./models in the working directory)"
    )
    (elsewhere / "models").mkdir()
    result = run_cli(["config"], bare, cwd=elsewhere, inherit=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == (
        f"models directory: {elsewhere / 'models'} (default: ./models of the working directory)"
    )


# --- train and models list ---------------------------------------------------------------------


def test_train_registers_a_version(app_env, tmp_path):
    registry = tmp_path / "registry"
    env = {**app_env, "STREAM_APP_MODELS_DIR": str(registry)}
    result = run_cli(
        ["train", "--customers", "100", "--terminals", "200", "--seed", "11", "--model", "logreg"],
        env,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    print(out)
    # The same simulation as the command's: 37 days of history + 21 of protocol, from 2026-01-01.
    events = list(
        simulate(
            n_customers=100,
            n_terminals=200,
            start=datetime(2026, 1, 1, tzinfo=UTC),
            days=58,
            seed=11,
        )
    )
    frauds = sum(item.label for item in events)
    assert f"{len(events):,} transactions, {frauds:,} frauds · training week from 2026-02-07" in out
    versions = list_versions(registry)
    assert len(versions) == 1 and versions[0].endswith("-logreg"), versions
    manifest = read_manifest(registry / versions[0])
    assert f"Model {versions[0]} → {registry / versions[0]}" in out
    test = manifest.metrics["test"]
    assert (
        f"train rows {manifest.raw['training_data']['rows']:,} · test rows {test['n']:,} · "
        f"AUC ROC {test['auc_roc']:.3f}" in out
    )
    assert manifest.training_data_tag == "synthetic:seed=11,customers=100,terminals=200,days=58"


def test_models_list(app_env, models_dir, champion_version, challenger_version):
    result = run_cli(["models", "list"], app_env)
    assert result.returncode == 0, result.stderr
    assert f"Models in {models_dir}" in result.stdout
    rows = {row[0]: row for row in table_rows(result.stdout)}
    assert set(rows) == {champion_version, challenger_version}, rows
    for version, model_type in ((champion_version, "logreg"), (challenger_version, "hgb")):
        manifest = read_manifest(models_dir / version)
        _, _role, kind, data, auc, ap, sha = rows[version]
        assert (kind, data, sha) == (model_type, "integration", manifest.sha256[:12])
        assert auc == f"{manifest.metrics['test']['auc_roc']:.4f}"
        assert ap == f"{manifest.metrics['test']['average_precision']:.4f}"
    # No serving.json in this registry: the newest version is the champion.
    newest = max(champion_version, challenger_version)
    assert {v: row[1] for v, row in rows.items()} == {
        v: ("champion (newest)" if v == newest else "") for v in rows
    }


# --- broker start / status / stop --------------------------------------------------------------


def broker_ports() -> int:
    """A free port whose next port (the controller's) is free too."""
    for _ in range(50):
        port = free_port()
        if port < 65535 and not port_in_use(port + 1):
            return port
    raise AssertionError("no two consecutive free ports")


def status_fields(out: str) -> dict[str, str]:
    """`broker status`'s two-column table as a dict."""
    return dict(
        [*line.split(None, 1), ""][:2] for line in (ln.strip() for ln in out.splitlines()) if line
    )


def test_broker_start_status_stop(tmp_path):
    home = tmp_path / "broker"
    port = broker_ports()
    env = {
        "STREAM_APP_BROKER_HOME": str(home),
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
        "STREAM_APP_BROKER_HEAP_MB": "256",
    }
    broker = LocalBroker(home, port=port, heap_mb=256)  # the same broker, to clean up by pid file
    try:
        status = run_cli(["broker", "status"], env)
        assert status.returncode == 1, status.stdout + status.stderr
        assert status_fields(status.stdout)["running"] == "no"

        start = run_cli(["broker", "start", "--timeout", "120"], env, timeout=240)
        print(start.stdout, start.stderr)
        assert start.returncode == 0, start.stdout + start.stderr
        started = re.search(r"Kafka broker started \(pid (\d+)\)", start.stdout)
        assert started is not None, start.stdout
        pid = int(started.group(1))
        assert f"bootstrap: 127.0.0.1:{port}" in start.stdout
        assert int((home / "broker.pid").read_text()) == pid
        assert broker.is_own_cmdline(read_cmdline(pid))
        metadata = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"}).list_topics(timeout=30)
        assert len(metadata.brokers) == 1

        again = run_cli(["broker", "start"], env, timeout=120)
        assert again.returncode == 0, again.stdout + again.stderr
        assert f"Kafka broker already running (pid {pid})" in again.stdout

        status = run_cli(["broker", "status"], env)
        assert status.returncode == 0, status.stdout + status.stderr
        lines = status_fields(status.stdout)
        assert lines["running"] == "yes"
        assert lines["pid"] == str(pid)
        assert lines["bootstrap"] == f"127.0.0.1:{port}"
        assert lines["home"] == str(home)

        stop = run_cli(["broker", "stop"], env, timeout=120)
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert f"Kafka broker stopped (pid {pid})" in stop.stdout
        assert not (home / "broker.pid").exists()
        assert not broker.is_own_cmdline(read_cmdline(pid))
        assert not port_in_use(port)

        status = run_cli(["broker", "status"], env)
        assert status.returncode == 1
        assert status_fields(status.stdout)["running"] == "no"
        stop = run_cli(["broker", "stop"], env)
        assert stop.returncode == 0
        assert f"No local Kafka broker running in {home}." in stop.stdout
    finally:
        broker.stop()  # by its pid file, only if it is this home's JVM


# --- scorecard and replay --served, over one worker run ------------------------------------------

SERVED_START = datetime(2026, 3, 1, tzinfo=UTC)
FRAUD_EVERY = 10  # mark every 10th event fraudulent: the first days have almost none


@dataclass(frozen=True)
class Served:
    env: dict[str, str]
    truth: dict[str, tuple[str, int]]  # event id -> (event day, label)
    scores: dict[str, float]  # event id -> the champion's served score


@pytest.fixture(scope="module")
def served(kafka_bootstrap, models_dir, champion_version, tmp_path_factory) -> Iterator[Served]:
    """A worker scores 4 days of simulated events with their labels; stopped before the
    commands run, so they read topics that no longer change."""
    home = tmp_path_factory.mktemp("served")
    env = {
        **isolated_env(kafka_bootstrap, models_dir, champion_version, home, prefix="cli"),
        "STREAM_APP_SCORECARD_WEB_PORT": "0",
    }
    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=env["STREAM_APP_TOPIC_PREFIX"]
    )
    items = [
        (item.event, int(i % FRAUD_EVERY == 3))
        for i, item in enumerate(
            simulate(n_customers=40, n_terminals=80, days=4, seed=21, start=SERVED_START)
        )
    ]
    truth = {event["event_id"]: (event["event_time"][:10], label) for event, label in items}
    worker = WorkerProcess(home / "worker", env)
    worker.start()
    try:
        worker.wait_ready(timeout=180)
        with BulkProducer(settings) as producer:
            for record in schedule(items):
                producer.produce(settings.topic(record.topic), record.key, record.value)
        deadline = time.monotonic() + 180
        while end_offsets(kafka_bootstrap, settings.topic("scores")) < len(items):
            assert time.monotonic() < deadline, worker.tail()
            time.sleep(0.5)
    finally:
        worker.stop()
    envelopes = [orjson.loads(v) for v in read_all(kafka_bootstrap, settings.topic("scores"))]
    scores = {e["event_id"]: float(e["score"]) for e in envelopes}
    assert len(envelopes) == len(scores) == len(items)  # one envelope per event, no duplicate
    yield Served(env=env, truth=truth, scores=scores)


def test_scorecard_rebuild(served, champion_version, tmp_path):
    """`scorecard --once --since-hours 1`: rebuilds the join from the last hour's records (all
    of this run's), publishes to `metrics` and writes the overall figures."""
    n = len(served.truth)
    out_file = tmp_path / "overall.json"
    result = run_cli(
        ["scorecard", "--once", "--since-hours", "1", "--out", str(out_file)], served.env
    )
    print(result.stdout, result.stderr)
    assert result.returncode == 0, result.stderr
    summary = re.search(
        r"read ([\d,]+) scores, ([\d,]+) shadow scores, ([\d,]+) labels \(([\d,]+) undecodable\); "
        r"joined ([\d,]+), evicted unlabelled ([\d,]+), labels unmatched ([\d,]+); published "
        r"([\d,]+) metrics and ([\d,]+) drift records",
        result.stderr,
    )
    assert summary is not None, result.stderr
    figures = [int(g.replace(",", "")) for g in summary.groups()]
    assert figures[:7] == [n, 0, n, 0, n, 0, 0], figures
    prefix = served.env["STREAM_APP_TOPIC_PREFIX"]
    bootstrap = served.env["KAFKA_BOOTSTRAP_SERVERS"]
    assert figures[7] == end_offsets(bootstrap, f"{prefix}metrics") > 0
    assert figures[8] == end_offsets(bootstrap, f"{prefix}drift")

    ids = list(served.scores)
    y = np.array([served.truth[i][1] for i in ids])
    s = np.array([served.scores[i] for i in ids])
    overall = json.loads(out_file.read_text())
    assert set(overall) == {champion_version}
    assert overall[champion_version]["labels"] == n
    assert overall[champion_version]["auc_roc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert overall[champion_version]["average_precision"] == pytest.approx(
        average_precision_score(y, s), abs=1e-12
    )
    rows = {row[0]: row for row in table_rows(result.stdout)}
    assert rows[champion_version][1] == f"{n:,}"
    assert rows[champion_version][2] == f"{roc_auc_score(y, s):.4f}"

    # An hour that holds none of these records: nothing is read, nothing joined.
    empty = run_cli(["scorecard", "--once", "--since-hours", "0", "--no-publish"], served.env)
    assert empty.returncode == 0, empty.stderr
    assert "read 0 scores, 0 shadow scores, 0 labels (0 undecodable); joined 0" in empty.stderr


def test_replay_served(served, champion_version, tmp_path):
    """`replay --served` over two of the four days: exactly those days' labelled events, with
    the scores the worker published."""
    first, last = date(2026, 3, 2), date(2026, 3, 3)
    days = {first.isoformat(), last.isoformat()}
    chosen = [i for i, (day, _) in served.truth.items() if day in days]
    frauds = sum(served.truth[i][1] for i in chosen)
    out = tmp_path / "served-report"
    result = run_cli(
        ["replay", "--served", "--from", str(first), "--to", str(last), "--out", str(out)],
        served.env,
    )
    print(result.stdout, result.stderr)
    assert result.returncode == 0, result.stdout + result.stderr
    assert 0 < len(chosen) < len(served.truth) and frauds > 0
    assert f"{first} .. {last}: {len(chosen):,} transactions ({frauds:,} frauds)" in result.stdout
    y = np.array([served.truth[i][1] for i in chosen])
    s = np.array([served.scores[i] for i in chosen])
    rows = {row[1]: row for row in table_rows(result.stdout)}
    assert set(rows) == {champion_version}
    assert rows[champion_version][0] == "champion"
    assert rows[champion_version][2] == f"{roc_auc_score(y, s):.4f}"
    for name in ("scored.parquet", "metrics.json", "report.html"):
        assert f"→ {out / name}" in result.stdout
        assert (out / name).stat().st_size > 0
    document = json.loads((out / "metrics.json").read_text())
    assert document["range"]["rows"] == len(chosen)
    assert document["source"]["served"]["labels"] == len(served.truth)
    assert document["source"]["served"]["evaluated"] == len(chosen)
    metrics = document["metrics"][champion_version]
    assert metrics["auc_roc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)

    # A range with no served events: exit code 1 and the reason.
    empty = run_cli(
        ["replay", "--served", "--from", "2025-01-01", "--to", "2025-01-02", "--out", str(out)],
        served.env,
    )
    assert empty.returncode == 1
    assert "no labelled, served events between 2025-01-01 and 2025-01-02" in empty.stdout
