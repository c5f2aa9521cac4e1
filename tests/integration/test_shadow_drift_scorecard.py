"""Shadow challenger, drift records and the live scorecard, on the real broker."""

import time
from datetime import UTC, datetime

import numpy as np
import orjson
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from stream_app.devtools.worker_process import WorkerProcess
from stream_app.evaluation.served_scores import read_served
from stream_app.io.schemas import validate
from stream_app.monitoring.scorecard_metrics import ScorecardMetrics
from stream_app.monitoring.scorecard_service import ScorecardService, run_scorecard
from stream_app.operations.top import by_label, parse, scrape
from stream_app.scoring.model import ScoringModel
from stream_app.sources.producer import BulkProducer
from stream_app.sources.schedule import schedule
from stream_app.sources.simulator import simulate
from tests.kafka_reader import processed_by, read_topic

pytestmark = pytest.mark.integration


def champion_features(models_dir, version):
    return ScoringModel.load(models_dir / version).features


def scrape_samples(port):
    return scrape(f"http://127.0.0.1:{port}/metrics")


N = 1000
WINDOW = 250


def test_shadow_drift_and_scorecard(
    app_env,
    app_settings,
    kafka_bootstrap,
    models_dir,
    champion_version,
    challenger_version,
    tmp_path,
):
    env = {
        **app_env,
        "STREAM_APP_CHALLENGER": challenger_version,
        "STREAM_APP_EMIT_FEATURES": "true",
        "STREAM_APP_SHADOW_MAX_PENDING": "100000",  # this test wants every event shadowed
        "STREAM_APP_DRIFT_WINDOW_EVENTS": str(WINDOW),
        "STREAM_APP_DRIFT_MIN_EVENTS": "1",
        "STREAM_APP_DRIFT_WINDOW_SECONDS": "1e9",
    }
    items = list(
        simulate(
            n_customers=200,
            n_terminals=300,
            n_events=N,
            seed=33,
            start=datetime(2026, 3, 1, tzinfo=UTC),
        )
    )
    # The generator's first day has almost no fraud; mark every 20th event so both classes exist
    # (the worker does not care, the scorecard's metrics need both).
    items = [(item.event, int(i % 20 == 7)) for i, item in enumerate(items)]
    truth = {event["event_id"]: label for event, label in items}
    worker = WorkerProcess(tmp_path / "worker", env)
    worker.start()
    try:
        worker.wait_ready()
        with BulkProducer(app_settings) as producer:
            for record in schedule(items):
                producer.produce(app_settings.topic(record.topic), record.key, record.value)
        scores = read_topic(
            kafka_bootstrap, app_settings.topic("scores"), N, **processed_by(app_settings)
        )
        shadow = read_topic(kafka_bootstrap, app_settings.topic("scores.shadow"), expect=N)
        per_window = 2 * (len(champion_features(models_dir, champion_version)) - 2) + 2
        drift = read_topic(
            kafka_bootstrap, app_settings.topic("drift"), expect=(N // WINDOW) * per_window
        )
        # /metrics agrees with the topics: shadow outcomes (synced every second), drift gauges.
        port = int(env["STREAM_APP_WEB_PORT"])
        deadline = time.monotonic() + 15
        while True:
            metrics = scrape_samples(port)
            shadow_total = {
                outcome: v
                for (outcome,), v in by_label(metrics, "stream_app_shadow_total", "outcome").items()
            }
            done = shadow_total.get("agree", 0) + shadow_total.get("disagree", 0) == N
            if done or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        worker.stop()
    shadow_agree = sum(orjson.loads(m.value())["agree"] for m in shadow)
    assert shadow_total.get("agree", 0) == shadow_agree
    assert shadow_total.get("disagree", 0) == N - shadow_agree
    assert shadow_total.get("skipped", 0) == 0
    info = [dict(k[1]) for k in metrics if k[0] == "stream_app_challenger_info"]
    assert [i["version"] for i in info] == [challenger_version]
    last = {}
    for message in drift:
        record = orjson.loads(message.value())
        last[(record["statistic"], record["subject"])] = record
    gauges = by_label(metrics, "stream_app_drift_value", "statistic", "subject")
    assert gauges == pytest.approx({key: r["value"] for key, r in last.items()}, abs=1e-12)
    alerting = by_label(metrics, "stream_app_drift_alerting", "statistic", "subject")
    assert alerting == {key: float(r["alert"]) for key, r in last.items()}
    assert "challenger" in worker.log_text() and challenger_version in worker.log_text()

    # Shadow: one record per event, the champion's answer copied, the challenger's recomputed.
    champion = ScoringModel.load(models_dir / champion_version)
    challenger = ScoringModel.load(models_dir / challenger_version)
    served = {e["event_id"]: e for e in (orjson.loads(m.value()) for m in scores)}
    assert len(served) == N and set(served) == set(truth)
    records = [orjson.loads(m.value()) for m in shadow]
    assert len(records) == N
    assert {r["challenger"]["event_id"] for r in records} == set(truth)
    X = np.array([[r["challenger"]["features"][f] for f in challenger.features] for r in records])
    expected = challenger.predict(X)
    for record, message, p in zip(records, shadow, expected, strict=True):
        validate("shadow_score", record)
        env_ = record["challenger"]
        champ = served[env_["event_id"]]
        assert message.key().decode() == env_["customer_id"]
        assert env_["model_version"] == challenger_version
        assert env_["score"] == pytest.approx(p, abs=1e-12)
        assert record["champion_version"] == champion.version
        assert record["champion_score"] == champ["score"]
        assert record["champion_decision"] == champ["decision"]
        assert record["agree"] == (env_["decision"] == champ["decision"])
        assert env_["features"] == champ["features"]  # one feature vector for both models

    # Drift: N / WINDOW windows of (PSI + KS per feature, score PSI, detector).
    # (Calendar features, weekend and night, get no PSI/KS: they follow the clock.)
    drift = read_topic(
        kafka_bootstrap, app_settings.topic("drift"), expect=(N // WINDOW) * per_window
    )
    assert len(drift) == (N // WINDOW) * per_window
    for message in drift:
        record = orjson.loads(message.value())
        validate("drift_record", record)
        assert message.key().decode() == champion_version
        assert record["window"]["events"] == WINDOW

    # Scorecard: labels joined to both models' scores, metrics equal an independent computation.
    card_metrics = ScorecardMetrics()
    service = ScorecardService(horizon_s=365 * 86_400.0, k=100, metrics=card_metrics)
    totals = run_scorecard(app_settings, service, since_ms=None, until_end=True)
    assert (totals.scores, totals.shadow, totals.labels) == (N, N, N)
    assert service.join.counts.joined == 2 * N
    card = parse(card_metrics.render().decode())
    assert {
        dict(k[1])["kind"]: v
        for k, v in card.items()
        if k[0] == "stream_app_scorecard_consumed_total"
    } == {"scores": N, "shadow": N, "labels": N, "undecodable": 0}
    assert {
        dict(k[1])["model_version"]: v
        for k, v in card.items()
        if k[0] == "stream_app_scorecard_joined_total"
    } == {champion_version: N, challenger_version: N}
    overall = totals.overall(k=100)
    y = np.array([truth[e] for e in served])
    s = np.array([served[e]["score"] for e in served])
    assert 0 < y.sum() < N
    assert overall[champion_version]["auc_roc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert overall[champion_version]["average_precision"] == pytest.approx(
        average_precision_score(y, s), abs=1e-12
    )
    assert overall[challenger_version]["labels"] == N
    published = read_topic(kafka_bootstrap, app_settings.topic("metrics"), expect=4)
    by_day = {}
    for message in published:
        record = orjson.loads(message.value())
        validate("metrics_record", record)
        if record["granularity"] == "event_day":
            by_day[(record["model_version"], record["period"])] = record
    for version in (champion_version, challenger_version):
        assert sum(r["labels"] for (v, _), r in by_day.items() if v == version) == N
        assert all(r["label_coverage"] == 1.0 for (v, _), r in by_day.items() if v == version)

    # The served-score reader (replay --served) sees the same: both models, every label.
    data = read_served(app_settings)
    assert {v: len(ids) for v, ids in data.scores.items()} == {
        champion_version: N,
        challenger_version: N,
    }
    assert len(data.labels) == N and data.undecodable == 0
    assert data.scores[champion_version] == {e: served[e]["score"] for e in served}
    assert [m.role for m in data.models.values()].count("champion") == 1
