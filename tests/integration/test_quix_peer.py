"""The benchmark's Quix Streams peer, running on the broker, computes the worker's features.

A simulated stream (transactions and their labels 7 days later) goes to fresh topics, paced,
once the peer (bench/peers/quix_pipeline.py, a child process) has joined its group; the peer
scores it. Every envelope's ``feature_hash`` (blake2b of the exact float64 feature row) must
equal the hash of the offline builder's row for that event, and its score the champion's score
of that row: same features, same model.

Why paced: from a full topic, the customer stage works through one transactions partition's
backlog before the next (Quix aligns partitions by timestamp only across different topics), so
a terminal meets some of its older transactions after newer ones and counts windows without
them, as any consumer of a backlog does. Paced, the stream arrives in event-time order and the
features must be exact.

Skipped when quixstreams is not installed: it is in the ``bench`` extra, not in ``dev`` (it pins
confluent-kafka and pydantic below what the core dependencies resolve to). ``make bench``'s
venv has it: ``.venv-bench/bin/pytest tests/integration/test_quix_peer.py``.
"""

import sys
import time
import uuid
from datetime import UTC, datetime

import numpy as np
import orjson
import pytest
from confluent_kafka import ConsumerGroupState, KafkaException
from confluent_kafka.admin import AdminClient

from bench.harness import ChildProcess
from stream_app.config import Settings
from stream_app.features.offline import build_features
from stream_app.io.topics import ensure_topics
from stream_app.scoring.model import ScoringModel, feature_hashes
from stream_app.tools.generator import simulate
from stream_app.tools.producer import publish_records
from stream_app.tools.schedule import schedule
from stream_app.tools.train import batch_from_events
from tests.kafka_reader import read_topic

pytest.importorskip("quixstreams")

pytestmark = pytest.mark.integration

RATE = 400.0  # records/s: transactions and labels


def wait_for_members(bootstrap: str, group: str, peer: ChildProcess, timeout: float = 90.0) -> None:
    """Until the peer's consumer group is stable with partitions assigned."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert peer.running, peer.tail()
        try:
            description = admin.describe_consumer_groups([group], request_timeout=5)[group].result(
                10
            )
        except (KafkaException, TimeoutError):
            description = None
        if (
            description is not None
            and description.state == ConsumerGroupState.STABLE
            and any(m.assignment.topic_partitions for m in description.members)
        ):
            return
        time.sleep(0.5)
    raise AssertionError(f"the peer's group {group} did not become stable: {peer.tail()}")


def test_quix_peer_features_and_scores_equal_ours(
    kafka_bootstrap, models_dir, champion_version, tmp_path
):
    events = list(
        simulate(
            n_customers=60, n_terminals=80, days=30, seed=5, start=datetime(2026, 1, 1, tzinfo=UTC)
        )
    )
    batch = batch_from_events(events)
    model = ScoringModel.load(models_dir / champion_version)
    X = build_features(batch, names=model.features)
    expected_hash = dict(zip(batch.event_id, feature_hashes(X), strict=True))
    expected_score = dict(zip(batch.event_id, model.predict(X).tolist(), strict=True))

    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=f"quix-{tag}.", partitions=3
    )
    ensure_topics(settings, ["transactions", "labels"])
    out = f"quix-{tag}.peer.scores"
    peer = ChildProcess(
        [
            sys.executable,
            "-m",
            "bench.peers.quix_pipeline",
            "--bootstrap",
            kafka_bootstrap,
            "--prefix",
            settings.topic_prefix,
            "--group",
            f"quix-{tag}",
            "--models",
            str(models_dir),
            "--champion",
            champion_version,
            "--out",
            out,
            "--state-dir",
            str(tmp_path / "quix-state"),
        ],
        tmp_path,
        "peer",
    )
    try:
        wait_for_members(kafka_bootstrap, f"quix-{tag}", peer)
        publish_records(settings, schedule(iter(events), labels=True), rate=RATE)
        records = read_topic(kafka_bootstrap, out, expect=len(events), timeout=240)
    finally:
        peer.stop()
    envelopes = [orjson.loads(m.value()) for m in records]
    assert len(envelopes) == len(events), peer.tail()
    assert {e["event_id"] for e in envelopes} == set(batch.event_id)
    wrong_features = [
        e["event_id"] for e in envelopes if e["feature_hash"] != expected_hash[e["event_id"]]
    ]
    assert wrong_features == [], f"{len(wrong_features)} events with other features"
    scores = np.asarray([e["score"] for e in envelopes])
    assert np.abs(scores - [expected_score[e["event_id"]] for e in envelopes]).max() <= 1e-12
    assert all(
        m.key().decode() == e["customer_id"] for m, e in zip(records, envelopes, strict=True)
    )
