"""Window state survives a worker restart, with the in-memory store (rebuilt from the changelogs)
and with RocksDB: features after the restart equal the offline builder over the whole stream."""

from datetime import UTC, datetime

import numpy as np
import orjson
import pytest

from stream_app.devtools.worker_process import WorkerProcess
from stream_app.features.definitions import FEATURE_NAMES
from stream_app.features.offline import build_features
from stream_app.sources.producer import BulkProducer
from stream_app.sources.schedule import batch_from_events, schedule
from stream_app.sources.simulator import simulate
from tests.kafka_reader import read_topic

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("store", ["memory", "rocksdb"])
def test_state_survives_restart(store, app_env, app_settings, kafka_bootstrap, tmp_path):
    items = list(
        simulate(
            n_customers=30,
            n_terminals=40,
            n_events=600,
            seed=8,
            start=datetime(2026, 2, 1, tzinfo=UTC),
        )
    )
    records = list(schedule(items, labels=False))
    env = {**app_env, "STREAM_APP_STORE": store, "STREAM_APP_EMIT_FEATURES": "true"}
    worker = WorkerProcess(tmp_path / "w", env)
    scores_topic = app_settings.topic("scores")

    def publish(part):
        with BulkProducer(app_settings) as producer:
            for record in part:
                producer.produce(app_settings.topic(record.topic), record.key, record.value)

    worker.start()
    try:
        worker.wait_ready()
        publish(records[:300])
        assert len(read_topic(kafka_bootstrap, scores_topic, expect=300, settle=1)) == 300
    finally:
        assert worker.stop() == 0
    worker.start()
    try:
        worker.wait_ready()
        publish(records[300:])
        scores = read_topic(kafka_bootstrap, scores_topic, expect=600)
    finally:
        worker.stop()
    envelopes = {e["event_id"]: e for e in (orjson.loads(m.value()) for m in scores)}
    assert len(scores) == 600 and len(envelopes) == 600  # nothing lost, nothing scored twice
    batch = batch_from_events(items)
    offline = build_features(batch)
    live = np.array(
        [[envelopes[eid]["features"][n] for n in FEATURE_NAMES] for eid in batch.event_id]
    )
    np.testing.assert_allclose(live, offline, rtol=0, atol=1e-9)
