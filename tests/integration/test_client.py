"""The Python client on the real broker: publish through it, two workers (each with a
challenger in shadow) score, read every output back as typed objects (sync, async, in a group,
from an offset or a time), replay a range into an evaluation; and the README's examples run."""

import asyncio
import re
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
import orjson
import pandas as pd
import pytest
from confluent_kafka import ConsumerGroupState
from confluent_kafka.admin import AdminClient
from sklearn.metrics import roc_auc_score

from stream_app.client import (
    DriftRecord,
    Evaluation,
    MetricsRecord,
    PublishReport,
    Reason,
    RecordRejected,
    ScoreEnvelope,
    ShadowScore,
    StreamClient,
)
from stream_app.config import REPO_ROOT, Settings
from stream_app.devtools.worker_process import WorkerProcess
from stream_app.io.partitioning import expected_partition
from stream_app.monitoring.scorecard_service import ScorecardService, run_scorecard
from stream_app.scoring.model import ScoringModel
from stream_app.sources.schedule import schedule
from stream_app.sources.simulator import simulate
from tests.integration.conftest import free_port, isolated_env
from tests.kafka_reader import (
    STAGE_INPUTS,
    end_offsets,
    read_to_end_offsets,
    read_topic,
    wait_processed,
)

pytestmark = pytest.mark.integration

N = 600
WINDOW = 200
START = datetime(2026, 3, 1, tzinfo=UTC)


@dataclass
class Served:
    client: StreamClient
    settings: Settings
    truth: dict[str, int]
    report: PublishReport
    rejected: list[RecordRejected]
    days: tuple[date, date]
    members: list


@pytest.fixture(scope="module")
def served(kafka_bootstrap, models_dir, champion_version, challenger_version, tmp_path_factory):
    """Two workers in one group, each with a challenger in shadow and 200-event drift windows,
    fed N transactions and their labels through the client (with two bad records among them);
    stopped at the end."""
    home = tmp_path_factory.mktemp("client")
    env = {
        **isolated_env(kafka_bootstrap, models_dir, champion_version, home, prefix="cl"),
        "STREAM_APP_CHALLENGER": challenger_version,
        "STREAM_APP_SHADOW_MAX_PENDING": "100000",
        "STREAM_APP_DRIFT_WINDOW_EVENTS": str(WINDOW),
        "STREAM_APP_DRIFT_MIN_EVENTS": "1",
        "STREAM_APP_DRIFT_WINDOW_SECONDS": "1e9",
    }
    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=env["STREAM_APP_TOPIC_PREFIX"],
        app_id=env["STREAM_APP_APP_ID"],
        partitions=3,
        models_dir=models_dir,
        champion=champion_version,
    )
    items = list(simulate(n_customers=150, n_terminals=200, n_events=N, seed=41, start=START))
    # Both classes for the metrics: every 20th event is a fraud (the worker never sees labels
    # inside transactions; the scorecard and the evaluations need both classes).
    items = [(item.event, int(i % 20 == 3)) for i, item in enumerate(items)]
    truth = {event["event_id"]: label for event, label in items}
    workers = [
        WorkerProcess(
            home / name,
            {
                **env,
                "STREAM_APP_WEB_PORT": str(free_port()),
                "STREAM_APP_STATE_DIR": str(home / name / "state"),
            },
        )
        for name in ("w1", "w2")
    ]
    try:
        for worker in workers:
            worker.start()
            worker.wait_ready()
        members = stable_members(kafka_bootstrap, settings.app_id, 2)
        client = StreamClient(settings)
        with client.publisher() as publisher:
            records = list(schedule(items))
            bad = [
                {**items[5][0], "event_id": "bad-amount", "amount": -5},
                {**items[6][0], "event_id": "bad-id", "customer_id": "no spaces allowed"},
            ]
            rejected = publisher.send_transactions(
                [r.value for r in records if r.topic == "transactions"][:300] + bad
            )
            rejected += publisher.send_transactions(
                [r.value for r in records if r.topic == "transactions"][300:]
            )
            assert rejected[0].index == 300
            assert publisher.send_labels(r.value for r in records if r.topic == "labels") == []
            report = publisher.flush()
        wait_processed(
            kafka_bootstrap, settings.app_id, [settings.topic(t) for t in STAGE_INPUTS], 180
        )
        last_day = max(datetime.fromisoformat(e["event_time"]) for e, _ in items).date()
        yield Served(client, settings, truth, report, rejected, (START.date(), last_day), members)
    finally:
        for worker in workers:
            worker.stop()


def stable_members(bootstrap: str, group: str, count: int, timeout: float = 90.0) -> list:
    """The members of ``group`` once it is stable with ``count`` members that hold partitions
    (the second worker's join has been rebalanced: publishing then meets no rebalance)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout
    while True:
        group_info = admin.describe_consumer_groups([group])[group].result(timeout=10)
        members = [m for m in group_info.members if m.assignment.topic_partitions]
        if group_info.state == ConsumerGroupState.STABLE and len(members) == count:
            return members
        if time.monotonic() > deadline:
            raise AssertionError(f"group {group}: {group_info.state}, {len(members)} members")
        time.sleep(0.5)


def test_publishing_reports_each_record_on_its_murmur2_partition(served):
    report = served.report
    transactions = served.settings.topic("transactions")
    labels = served.settings.topic("labels")
    assert report.delivered == 2 * N and all(d.ok for d in report.deliveries)
    assert sum(d.topic == transactions for d in report.deliveries) == N
    assert sum(d.topic == labels for d in report.deliveries) == N
    for delivery in report.deliveries:
        assert delivery.partition == expected_partition(delivery.key.encode(), 3)
        assert delivery.offset >= 0
    assert {d.event_id for d in report.deliveries} == set(served.truth)


def test_two_workers_share_the_input_and_every_key_arrives_where_its_state_is(served):
    """Each worker owns some partitions of ``transactions``; the client's keys and murmur2
    partitions are the ones the workers check, so nothing had to be rerouted."""
    transactions = served.settings.topic("transactions")
    owned = [
        {tp.partition for tp in m.assignment.topic_partitions if tp.topic == transactions}
        for m in served.members
    ]
    assert all(owned) and set().union(*owned) == {0, 1, 2}
    bootstrap = served.settings.kafka_bootstrap_servers
    for topic in ("transactions.rerouted", "labels.rerouted"):
        assert read_to_end_offsets(bootstrap, served.settings.topic(topic)) == []


def test_a_rejected_record_says_its_reason_and_never_reaches_the_topics(served):
    assert [(e.index, e.reason, e.event_id) for e in served.rejected] == [
        (300, Reason.OUT_OF_RANGE, "bad-amount"),
        (301, Reason.INVALID_ID, "bad-id"),
    ]
    assert str(served.rejected[0]).startswith("transaction #300 'bad-amount' rejected")
    assert "It was not sent" in str(served.rejected[1])
    with served.client.publisher() as publisher, pytest.raises(RecordRejected) as err:
        publisher.send_label(
            {
                "event_id": "x",
                "customer_id": "c",
                "terminal_id": "t",
                "event_time": "2026-03-02T00:00:00Z",
                "label": 2,
                "label_time": "2026-03-09T00:00:00Z",
            }
        )
    assert err.value.reason is Reason.OUT_OF_RANGE and err.value.kind == "label"
    dlq = served.settings.topic("transactions.dlq")
    assert read_topic(served.settings.kafka_bootstrap_servers, dlq, 0, timeout=3) == []


def test_scores_come_back_as_typed_objects_sync_and_async(served):
    with served.client.scores(start="earliest", until_end=True) as subscription:
        messages = list(subscription.messages())
    assert len(messages) == N
    scores = [m.value for m in messages]
    assert all(isinstance(s, ScoreEnvelope) for s in scores)
    assert {s.event_id for s in scores} == set(served.truth)
    for message in messages:
        assert message.key == message.value.customer_id
        assert 0.0 <= message.value.score <= 1.0
        assert message.value.decision in ("approve", "review", "decline")
        assert message.value.explanation.contributions
        assert message.value.event_at >= START

    async def read_both():
        async def collect(subscription):
            return [record async for record in subscription]

        return await asyncio.gather(
            collect(served.client.scores(start="earliest", until_end=True)),
            collect(served.client.shadow_scores(start="earliest", limit=N, timeout=90)),
        )

    async_scores, shadows = asyncio.run(read_both())
    assert sorted(s.event_id for s in async_scores) == sorted(s.event_id for s in scores)
    assert {s.event_id: s.score for s in async_scores} == {s.event_id: s.score for s in scores}
    assert len(shadows) == N and all(isinstance(s, ShadowScore) for s in shadows)
    champion = {s.event_id: s for s in scores}
    for shadow in shadows:
        answer = champion[shadow.challenger.event_id]
        assert shadow.champion_score == answer.score
        assert shadow.champion_decision == answer.decision
        assert shadow.agree == (shadow.challenger.decision == answer.decision)
        assert shadow.challenger.model_version != answer.model_version


def test_drift_and_metrics_come_back_as_typed_objects(served, models_dir, champion_version):
    # Each worker closes a window per WINDOW events it scored (those of the partitions of
    # transactions.by-terminal it owns); per window: PSI and KS per non-calendar feature, the
    # score's PSI, the detector.
    by_terminal = served.settings.topic("transactions.by-terminal")
    ends = end_offsets(served.settings.kafka_bootstrap_servers, by_terminal)
    windows = sum(
        sum(ends[tp.partition] for tp in m.assignment.topic_partitions if tp.topic == by_terminal)
        // WINDOW
        for m in served.members
    )
    features = ScoringModel.load(models_dir / champion_version).features
    expected = windows * (2 * (len(features) - 2) + 2)
    assert windows >= 1
    drift = list(served.client.drift(start="earliest", limit=expected, timeout=60))
    assert len(drift) == expected
    assert all(isinstance(d, DriftRecord) for d in drift)
    assert {d.window.events for d in drift} == {WINDOW}
    assert {d.model_version for d in drift} == {champion_version}
    assert {d.statistic for d in drift} >= {"psi", "ks"}

    service = ScorecardService(horizon_s=365 * 86_400.0, k=100)
    run_scorecard(served.settings, service, since_ms=None, until_end=True)
    metrics = list(served.client.metrics(start="earliest", until_end=True))
    assert all(isinstance(m, MetricsRecord) for m in metrics)
    by_day = [m for m in metrics if m.granularity == "event_day"]
    assert sum(m.labels for m in by_day if m.model_version == champion_version) == N
    assert all(m.label_coverage == 1.0 for m in by_day)


def test_a_consumer_group_resumes_where_it_committed(served):
    group = f"client-test-{uuid.uuid4().hex[:8]}"
    first = list(served.client.scores(group=group, start="earliest", limit=100))
    rest = list(served.client.scores(group=group, start="earliest", limit=N - 100, timeout=60))
    assert len(first) == 100
    assert len(rest) == N - 100
    assert {s.event_id for s in first} | {s.event_id for s in rest} == set(served.truth)


def test_reading_from_an_offset_or_a_time(served):
    everything = list(served.client.scores(start="earliest", until_end=True).messages())
    from_offset = list(served.client.scores(start=10, until_end=True).messages())
    assert len(from_offset) == N - 3 * 10
    assert min(m.offset for m in from_offset) == 10
    one = list(served.client.scores(start={1: 5}, until_end=True).messages())
    assert {m.partition for m in one} == {1}
    assert len(one) == sum(m.partition == 1 for m in everything) - 5

    latest = max(everything, key=lambda m: m.timestamp_ms)
    moment = datetime.fromtimestamp(latest.timestamp_ms / 1000, UTC)
    since = list(served.client.scores(start=moment, until_end=True).messages())
    assert 1 <= len(since) < N
    assert (latest.partition, latest.offset) in {(m.partition, m.offset) for m in since}
    assert all(
        m.timestamp_ms >= latest.timestamp_ms for m in since if m.partition == latest.partition
    )
    future = datetime.now(UTC) + timedelta(days=1)
    assert list(served.client.scores(start=future, until_end=True)) == []
    past = datetime(2000, 1, 1, tzinfo=UTC)
    assert len(list(served.client.scores(start=past, until_end=True))) == N


def wait_markers_written(bootstrap: str, topic: str, timeout: float = 30.0) -> None:
    """Until every partition's last stable offset is its log end."""
    from confluent_kafka import Consumer, TopicPartition

    def ends(isolation: str) -> list[int]:
        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"ends-{uuid.uuid4().hex}",
                "isolation.level": isolation,
            }
        )
        try:
            return [
                consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in range(3)
            ]
        finally:
            consumer.close()

    deadline = time.monotonic() + timeout
    while ends("read_committed") != ends("read_uncommitted"):
        assert time.monotonic() < deadline, "transaction markers not written"
        time.sleep(0.2)


def test_until_end_stops_past_transaction_markers_and_aborted_records(served, kafka_bootstrap):
    """An exactly-once worker writes its outputs in transactions: each partition's last offset is
    a commit marker no consumer is handed, and aborted records are skipped. ``until_end`` must
    still end, with exactly the committed records."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import NewTopic

    tag = uuid.uuid4().hex[:8]
    settings = Settings(kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=f"cltx-{tag}.")
    topic = settings.topic("scores")
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(topic, 3, 1)])[topic].result(timeout=30)
    served_scores = read_to_end_offsets(kafka_bootstrap, served.settings.topic("scores"))
    envelopes = [m.value() for m in served_scores]
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": f"cltx-{tag}"})
    producer.init_transactions(30)
    producer.begin_transaction()
    for i, value in enumerate(envelopes[:12]):
        producer.produce(topic, value, key=f"k{i}")
    producer.commit_transaction(30)
    producer.begin_transaction()
    for i, value in enumerate(envelopes[12:16]):
        producer.produce(topic, value, key=f"k{i}")
    producer.abort_transaction(30)
    # The coordinator writes the markers after answering: until the last one is in, a
    # read_committed reader's end (the last stable offset) is short of the log end.
    wait_markers_written(kafka_bootstrap, topic)

    began = time.monotonic()
    got = list(StreamClient(settings).scores(start="earliest", until_end=True, timeout=30))
    assert time.monotonic() - began < 20  # ended at the end, not by the idle timeout
    assert [s.event_id for s in got] != [] and len(got) == 12
    assert {s.event_id for s in got} == {
        ScoreEnvelope.from_dict(orjson.loads(v)).event_id for v in envelopes[:12]
    }
    admin.delete_topics([topic])


def test_replaying_a_range_into_an_evaluation_gives_the_metrics(
    served, champion_version, challenger_version, tmp_path
):
    first, last = served.days
    evaluation = served.client.replay(
        first, last, out_dir=tmp_path / "replay", challengers=[challenger_version]
    )
    assert isinstance(evaluation, Evaluation)
    assert evaluation.champion == champion_version
    assert set(evaluation.models) == {champion_version, challenger_version}
    assert evaluation.rows == N and evaluation.source["undecodable"] == 0
    frame = pd.read_parquet(evaluation.files.scored)
    labels = np.array([served.truth[e] for e in frame.event_id])
    for version, metrics in evaluation.models.items():
        assert metrics.transactions == N and metrics.frauds == N // 20
        expected = roc_auc_score(labels, frame[f"score_{version}"])
        assert metrics.auc_roc == pytest.approx(expected, abs=1e-12)
        assert metrics.average_precision is not None
        assert metrics.card_precision_at_100 is not None

    # The replay rebuilds what the worker served: the champion's scores are the same.
    live = {s.event_id: s.score for s in served.client.scores(start="earliest", until_end=True)}
    replayed = dict(zip(frame.event_id, frame[f"score_{champion_version}"], strict=True))
    assert replayed == pytest.approx(live, abs=1e-9)

    # The served scores (nothing recomputed) evaluate to the same champion metrics.
    served_eval = served.client.evaluate_served(first, last, out_dir=tmp_path / "served")
    assert served_eval.champion_metrics.auc_roc == pytest.approx(
        evaluation.champion_metrics.auc_roc, abs=1e-9
    )
    assert served_eval.champion_metrics.transactions == N


def readme_client_blocks() -> list[str]:
    """The fenced python blocks of the README's "Python client" section, in order."""
    text = (REPO_ROOT / "README.md").read_text()
    section = re.search(r"^## Python client\n(.*?)(?=^## )", text, flags=re.MULTILINE | re.DOTALL)
    assert section is not None, "README has no '## Python client' section"
    return re.findall(r"^```python\n(.*?)^```", section.group(1), flags=re.MULTILINE | re.DOTALL)


def test_the_readme_client_examples_run(worker, app_env, monkeypatch, capsys):
    """Each example of the README's section, in order, in one namespace, against a live worker
    configured through the environment as the README says."""
    for name, value in app_env.items():
        monkeypatch.setenv(name, value)
    blocks = readme_client_blocks()
    assert len(blocks) >= 4
    namespace: dict = {"__name__": "readme"}
    for block in blocks:
        exec(compile(block, "README.md (Python client)", "exec"), namespace)
    out = capsys.readouterr().out
    assert "rejected (out_of_range)" in out
    assert re.search(r"^delivered 40 records", out, flags=re.MULTILINE), out
    assert re.search(r"^scored 20 ", out, flags=re.MULTILINE), out
    assert re.search(r"^async: 20 ", out, flags=re.MULTILINE), out
    assert re.search(r"^AUC ROC [01]\.\d{3}, AP", out, flags=re.MULTILINE), out
    assert re.search(r"^as served: AUC ROC [01]\.\d{3}", out, flags=re.MULTILINE), out
