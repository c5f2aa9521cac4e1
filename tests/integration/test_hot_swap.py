"""Hot swap on the real broker: `stream-app models promote` / `rollback` change the champion and
the challenger of a running worker between micro-batches, with events streaming. Every envelope
names the version that scored it and its score is that version's (so no event met a half-loaded
model); no event is lost or scored twice; a tampered version is refused and changes nothing."""

import shutil
import threading
import time
from datetime import UTC, datetime

import numpy as np
import orjson
import pytest

from stream_app.devtools.worker_process import WorkerProcess
from stream_app.scoring.model import ScoringModel
from stream_app.scoring.serving import promote
from stream_app.sources.producer import BulkProducer
from stream_app.sources.schedule import schedule
from stream_app.sources.simulator import simulate
from tests.integration.conftest import models_cli, wait_for_log
from tests.kafka_reader import processed_by, read_topic

pytestmark = pytest.mark.integration

PHASE = 400  # events per phase (the swap phase: until the swap, then AFTER_SWAP more)
RATE = 50.0  # events/s while a swap happens
AFTER_SWAP = 100


def test_promote_and_rollback_swap_models_while_events_stream(
    app_env,
    app_settings,
    kafka_bootstrap,
    models_dir,
    champion_version,
    challenger_version,
    tmp_path,
):
    registry = tmp_path / "models"  # a registry of its own: serving.json must not leak
    for version in (champion_version, challenger_version):
        shutil.copytree(models_dir / version, registry / version)
    promote(registry, champion_version)
    env = {k: v for k, v in app_env.items() if k != "STREAM_APP_CHAMPION"}
    env |= {
        "STREAM_APP_MODELS_DIR": str(registry),
        "STREAM_APP_MODEL_WATCH_INTERVAL_S": "0.5",
        "STREAM_APP_EMIT_FEATURES": "true",
        "STREAM_APP_SHADOW_MAX_PENDING": "100000",
    }
    items = list(
        simulate(
            n_customers=200,
            n_terminals=300,
            n_events=5 * PHASE,
            seed=41,
            start=datetime(2026, 3, 1, tzinfo=UTC),
        )
    )
    records = list(schedule(items, labels=False))
    topic = app_settings.topic("transactions")
    scores_topic = app_settings.topic("scores")

    def publish(batch, rate=0.0):
        with BulkProducer(app_settings, rate=rate) as producer:
            for record in batch:
                producer.produce(topic, record.key, record.value)

    worker = WorkerProcess(tmp_path / "worker", env)
    worker.start()
    try:
        worker.wait_ready()
        assert "follows models/serving.json" in worker.log_text()

        # 1. the champion from serving.json
        publish(records[:PHASE])
        read_topic(kafka_bootstrap, scores_topic, expect=PHASE, settle=0)

        # 2. promote the challenger's version to champion while events stream: at RATE until
        # the worker has swapped, then AFTER_SWAP more.
        swapped = threading.Event()
        published = [PHASE]

        def stream():
            with BulkProducer(app_settings, rate=RATE) as producer:
                after = 0
                for record in records[PHASE:]:
                    producer.produce(topic, record.key, record.value)
                    published[0] += 1
                    after += swapped.is_set()
                    if after >= AFTER_SWAP:
                        break

        streaming = threading.Thread(target=stream)
        streaming.start()
        time.sleep(1.0)
        result = models_cli(env, "promote", challenger_version, "--reason", "test")
        assert result.returncode == 0, result.stderr
        assert f"champion: {champion_version} -> {challenger_version}" in result.stdout
        wait_for_log(worker, f"champion now {challenger_version}")
        swapped.set()
        streaming.join()
        bounds = [PHASE, published[0]]
        assert published[0] - PHASE > AFTER_SWAP and published[0] < 3 * PHASE

        # 3. shadow the old champion as challenger; a tampered copy is refused
        result = models_cli(env, "promote", "--challenger", champion_version, "--reason", "test")
        assert result.returncode == 0, result.stderr
        wait_for_log(worker, f"challenger now {champion_version}")
        bad = registry / "tampered"
        shutil.copytree(registry / champion_version, bad)
        (bad / "model.joblib").write_bytes(b"\x80\x04not the model")
        result = models_cli(env, "promote", "tampered", "--reason", "test")
        assert result.returncode == 1 and "SHA-256" in result.stderr
        publish(records[bounds[1] : bounds[1] + PHASE])
        bounds.append(bounds[1] + PHASE)
        read_topic(kafka_bootstrap, scores_topic, expect=bounds[2], settle=0)

        # 4. roll the champion back
        result = models_cli(env, "rollback", "--reason", "test")
        assert result.returncode == 0, result.stderr
        wait_for_log(worker, f"champion now {champion_version}")
        publish(records[bounds[2] :])
        scores = read_topic(
            kafka_bootstrap, scores_topic, len(records), **processed_by(app_settings)
        )
        shadow = read_topic(kafka_bootstrap, app_settings.topic("scores.shadow"), expect=1)
        assert worker.running
    finally:
        worker.stop()

    envelopes = [orjson.loads(m.value()) for m in scores]
    ids = [e["event_id"] for e in envelopes]
    assert len(ids) == len(set(ids)) == len(records)  # nothing lost, nothing scored twice
    by_id = {e["event_id"]: e for e in envelopes}
    phase = {
        orjson.loads(r.value)["event_id"]: sum(i >= b for b in bounds)
        for i, r in enumerate(records)
    }

    # Each envelope's score is the named version's score of its features: never a mixture.
    models = {v: ScoringModel.load(registry / v) for v in (champion_version, challenger_version)}
    for version, model in models.items():
        mine = [e for e in envelopes if e["model_version"] == version]
        assert {e["model_sha256"] for e in mine} == {model.sha256}
        X = np.array([[e["features"][f] for f in model.features] for e in mine])
        np.testing.assert_allclose([e["score"] for e in mine], model.predict(X), atol=1e-12)

    versions = {p: {by_id[e]["model_version"] for e in by_id if phase[e] == p} for p in range(4)}
    assert versions[0] == {champion_version}
    assert versions[1] == {champion_version, challenger_version}  # swapped mid-stream
    assert versions[2] == {challenger_version}
    assert versions[3] == {champion_version}
    # The shadow started with phase 3 and scored with the old champion's version.
    shadowed = [orjson.loads(m.value()) for m in shadow]
    assert {r["challenger"]["model_version"] for r in shadowed} == {champion_version}
    assert {phase[r["challenger"]["event_id"]] for r in shadowed} >= {2}
