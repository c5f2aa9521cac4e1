"""The canary on the real broker (issue 16, item 1).

A worker follows the group's assignment; `stream-app models canary <challenger> --share 5%`
publishes a canary before any event. On 20,000 events of 5,000 customers: the share of events the
canary decided is within 1 point of 5 %, every customer stays on one arm, the canary's customers
are exactly those its hash picks, every envelope names both versions, and the shadow goes on for
the other customers only. Then, without a restart: the share goes to 10 % (every 5 % customer
stays on the canary, the new ones are added), and `--off` gives every customer back to the
champion. The audit trail holds the three changes."""

import re
import shutil
import urllib.request
from collections import defaultdict
from datetime import UTC, datetime

import orjson
import pytest

from stream_app.devtools.worker_process import WorkerProcess
from stream_app.scoring.canary import in_canary
from stream_app.sources.producer import BulkProducer
from stream_app.sources.schedule import schedule
from stream_app.sources.simulator import simulate
from tests.integration.conftest import models_cli, wait_for_log
from tests.kafka_reader import processed_by, read_topic

pytestmark = pytest.mark.integration

FIRST = 20_000  # events with the 5 % canary
SECOND = 6_000  # with 10 %
THIRD = 2_000  # with the canary off
CUSTOMERS = 5_000


def arms(envelopes):
    """customer -> the set of routes that decided for it."""
    out = defaultdict(set)
    for e in envelopes:
        out[e["customer_id"]].add(e["route"])
    return out


def test_a_canary_decides_for_a_sticky_share_and_changes_without_a_restart(
    app_env,
    app_settings,
    kafka_bootstrap,
    models_dir,
    champion_version,
    challenger_version,
    tmp_path,
):
    registry = tmp_path / "models"
    for version in (champion_version, challenger_version):
        shutil.copytree(models_dir / version, registry / version)
    env = {k: v for k, v in app_env.items() if k != "STREAM_APP_CHAMPION"}
    env |= {
        "STREAM_APP_MODELS_DIR": str(registry),
        "STREAM_APP_MODEL_WATCH_INTERVAL_S": "0.5",
        "STREAM_APP_SHADOW_MAX_PENDING": "100000",  # no shadow batch skipped: all are checked
        "STREAM_APP_SHADOW_NICE": "0",
    }
    result = models_cli(env, "promote", champion_version, "--reason", "the first champion")
    assert result.returncode == 0, result.stderr
    result = models_cli(
        env, "canary", challenger_version, "--share", "5%", "--reason", "first real decisions"
    )
    assert result.returncode == 0, result.stderr
    assert f"canary: off -> {challenger_version} for 5 %" in result.stdout
    assert f"{challenger_version} is now the challenger (was None)" in result.stdout

    items = list(
        simulate(
            n_customers=CUSTOMERS,
            n_terminals=2_000,
            n_events=FIRST + SECOND + THIRD,
            seed=16,
            start=datetime(2026, 5, 1, tzinfo=UTC),
        )
    )
    records = list(schedule(items, labels=False))
    topic = app_settings.topic("transactions")
    scores_topic = app_settings.topic("scores")

    def publish(batch):
        with BulkProducer(app_settings) as producer:
            for record in batch:
                producer.produce(topic, record.key, record.value)

    worker = WorkerProcess(tmp_path / "worker", env)
    worker.start()
    try:
        worker.wait_ready(timeout=180)
        log = worker.log_text()
        assert f"canary {challenger_version} for 5 % of customers" in log, worker.tail()

        publish(records[:FIRST])
        read_topic(kafka_bootstrap, scores_topic, expect=FIRST, settle=0, timeout=600)
        port = env["STREAM_APP_WEB_PORT"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            metrics = response.read().decode()
        share = re.search(
            rf'^stream_app_canary_share\{{version="{re.escape(challenger_version)}"\}} (\S+)$',
            metrics,
            flags=re.MULTILINE,
        )
        assert share is not None and float(share.group(1)) == 0.05

        result = models_cli(
            env, "canary", challenger_version, "--share", "10%", "--reason", "looks good"
        )
        assert result.returncode == 0, result.stderr
        assert f"canary: {challenger_version} for 5 % -> {challenger_version} for 10 %" in (
            result.stdout
        )
        wait_for_log(worker, f"canary {challenger_version} for 10 % of customers", timeout=60)
        publish(records[FIRST : FIRST + SECOND])
        read_topic(kafka_bootstrap, scores_topic, expect=FIRST + SECOND, settle=0, timeout=600)

        result = models_cli(env, "canary", "--off", "--reason", "enough evidence")
        assert result.returncode == 0, result.stderr
        assert f"canary: {challenger_version} for 10 % -> off" in result.stdout
        wait_for_log(worker, "no canary (was: canary", timeout=60)
        publish(records[FIRST + SECOND :])
        scores = read_topic(
            kafka_bootstrap, scores_topic, len(records), **processed_by(app_settings)
        )
        shadow = read_topic(
            kafka_bootstrap, app_settings.topic("scores.shadow"), expect=1, settle=3
        )
        history = models_cli(env, "history", "--json")
        assert worker.running
    finally:
        worker.stop()

    envelopes = [orjson.loads(m.value()) for m in scores]
    assert len({e["event_id"] for e in envelopes}) == len(envelopes) == len(records)
    phase_of = {
        orjson.loads(r.value)["event_id"]: (i >= FIRST) + (i >= FIRST + SECOND)
        for i, r in enumerate(records)
    }
    phases = [[e for e in envelopes if phase_of[e["event_id"]] == p] for p in range(3)]

    # 1. 5 %: within 1 point of the setting on 20,000 events; one arm per customer; the hash's
    # customers exactly; both versions named; the canary's envelopes are the challenger's.
    first = phases[0]
    canary_share = sum(e["route"] == "canary" for e in first) / len(first)
    print(f"canary share on {len(first)} events at 5 %: {canary_share:.4f}")
    assert abs(canary_share - 0.05) <= 0.01
    arms5 = arms(first)
    assert all(len(routes) == 1 for routes in arms5.values())
    on5 = {c for c, routes in arms5.items() if routes == {"canary"}}
    assert on5 == {c for c in arms5 if in_canary(c, 0.05)}
    for e in first:
        assert e["champion_version"] == champion_version
        assert e["canary_version"] == challenger_version
        decided = challenger_version if e["route"] == "canary" else champion_version
        assert e["model_version"] == decided

    # 2. 10 %, hot: every 5 % customer still on the canary; one arm per customer.
    second = phases[1]
    arms10 = arms(second)
    assert all(len(routes) == 1 for routes in arms10.values())
    on10 = {c for c, routes in arms10.items() if routes == {"canary"}}
    assert on10 == {c for c in arms10 if in_canary(c, 0.10)}
    assert on5 & set(arms10) <= on10  # raising the share moved nobody off the canary
    share10 = sum(e["route"] == "canary" for e in second) / len(second)
    print(f"canary share on {len(second)} events at 10 %: {share10:.4f}")
    assert abs(share10 - 0.10) <= 0.02

    # 3. off: the champion for everyone, no canary named.
    assert {(e["route"], e["model_version"], e["canary_version"]) for e in phases[2]} == {
        ("champion", champion_version, None)
    }

    # The shadow: the challenger's records for the champion's customers only, route shadow.
    shadowed = [orjson.loads(m.value())["challenger"] for m in shadow]
    canary_ids = {e["event_id"] for e in envelopes if e["route"] == "canary"}
    assert shadowed and not canary_ids & {s["event_id"] for s in shadowed}
    assert {s["route"] for s in shadowed} == {"shadow"}
    assert {s["model_version"] for s in shadowed} == {challenger_version}

    # The audit trail: the three canary changes, with their shares.
    assert history.returncode == 0, history.stderr
    trail = [orjson.loads(line) for line in history.stdout.splitlines()]
    changes = [(r["from"], r["to"], r["reason"]) for r in trail if r["action"] == "canary"]
    assert [(f and f.get("share"), t and t.get("share"), why) for f, t, why in changes] == [
        (None, 0.05, "first real decisions"),
        (0.05, 0.10, "looks good"),
        (0.10, None, "enough evidence"),
    ]
