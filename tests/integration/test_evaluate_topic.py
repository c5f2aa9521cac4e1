"""``stream-app evaluate topic``: a range of the real topic, features rebuilt, deterministic."""

import uuid
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from confluent_kafka import ConsumerGroupTopicPartitions
from confluent_kafka.admin import AdminClient

from stream_app.config import Settings
from stream_app.evaluation.report import score_column
from stream_app.evaluation.topic_range import Bound, evaluate_topic
from stream_app.features.definitions import FEATURE_NAMES
from stream_app.features.offline import build_features
from stream_app.io.topics import ensure_topics
from stream_app.scoring.model import ScoringModel
from stream_app.sources.producer import BulkProducer
from stream_app.sources.schedule import batch_from_events, schedule
from stream_app.sources.simulator import simulate
from tests.kafka_reader import end_offsets

pytestmark = pytest.mark.integration


def test_topic_range_replay_equals_offline_features_and_is_deterministic(
    kafka_bootstrap, models_dir, champion_version, challenger_version, tmp_path
):
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=f"rp-{tag}.",
        app_id=f"rp-{tag}",
        partitions=3,
    )
    ensure_topics(settings)
    items = list(
        simulate(
            n_customers=80, n_terminals=120, days=6, seed=8, start=datetime(2026, 3, 1, tzinfo=UTC)
        )
    )
    with BulkProducer(settings) as producer:
        for record in schedule(items):
            producer.produce(settings.topic(record.topic), record.key, record.value)
        producer.produce(settings.topic("transactions"), b"c1", b"{broken")  # counted, skipped

    def run(out, start, stop):
        return evaluate_topic(
            settings,
            topic="transactions",
            start=Bound.parse(start),
            stop=Bound.parse(stop, end=True),
            out_dir=tmp_path / out,
            models_dir=models_dir,
            champion=champion_version,
            challengers=[challenger_version],
        )

    result = run("a", "2026-03-04", "2026-03-05")
    again = run("b", "2026-03-04", "2026-03-05")
    frame = pd.read_parquet(result.files.scored)
    assert frame.equals(pd.read_parquet(again.files.scored))  # deterministic
    source = result.files.document["source"]
    assert source["undecodable"] == 1 and source["duplicates"] == 0
    assert source["unlabelled"] == 0

    # Expected: the generator's events of those days, features over all earlier events.
    batch = batch_from_events(items)
    X = build_features(batch)
    lo = datetime(2026, 3, 4, tzinfo=UTC).timestamp()
    hi = datetime(2026, 3, 6, tzinfo=UTC).timestamp()
    rows = np.flatnonzero((batch.ts >= lo) & (batch.ts < hi))
    assert len(frame) == len(rows) > 0
    assert frame.event_id.tolist() == [batch.event_id[i] for i in rows]
    assert np.array_equal(frame[list(FEATURE_NAMES)].to_numpy(), X[rows])
    assert frame.label.tolist() == batch.label[rows].tolist()
    for version in (champion_version, challenger_version):
        model = ScoringModel.load(models_dir / version)
        expected = model.predict(np.ascontiguousarray(X[rows]))
        assert np.allclose(frame[score_column(version)].to_numpy(), expected, rtol=0, atol=1e-12)

    # By offsets: offsets 10..59 of every partition (each holds more than 60 records).
    ends = end_offsets(kafka_bootstrap, settings.topic("transactions"))
    assert len(ends) == 3 and min(ends.values()) > 60, ends
    by_offset = run("c", "10", "59")
    assert by_offset.rows == 3 * 50

    # Nothing committed: the replay's consumer group holds no offsets.
    group = f"{settings.app_id}-replay"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    committed = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])
    partitions = committed[group].result(timeout=10).topic_partitions or []
    assert [tp for tp in partitions if tp.offset >= 0] == []
