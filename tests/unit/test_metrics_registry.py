"""The worker's Prometheus metrics: exact values after known updates, histogram buckets, the
model Info line, readiness checks, and the hot-path helpers the app uses."""

from types import SimpleNamespace

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stream_app.features.state import Retention
from stream_app.io.deadletter import Reason, SourcePosition
from stream_app.monitoring.health import readiness
from stream_app.monitoring.metrics import (
    LATENCY_BUCKETS,
    BatchHistogram,
    WorkerMetrics,
    latencies_from_ms,
)
from stream_app.pipeline.customer_stage import InputRecord
from stream_app.pipeline.forward import encode_forward
from stream_app.pipeline.scoring_stage import ScoringStage
from stream_app.scoring.model import ScoringModel


def samples(metrics: WorkerMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the rendered text, keyed by (name, sorted labels)."""
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(metrics: WorkerMetrics, name: str, **labels: str) -> float:
    return samples(metrics)[(name, tuple(sorted(labels.items())))]


def test_counters_hold_exact_values_after_known_updates():
    m = WorkerMetrics()
    m.set_model("v1", "ab" * 32)
    m.batch("customer", 200, replayed=3)
    m.batch("customer", 5)
    m.batch("scoring", 120)
    m.dead({"invalid_json": 2, "empty_value": 1})
    m.dead({"invalid_json": 1, "key_mismatch": 1})
    m.scored_batch("v1", 100, scoring_seconds=0.004)
    m.scored_batch("v1", 20)
    m.scored_batch("v2", 7)
    m.label_outcomes(applied=4, unmatched=1)
    m.label_outcomes(applied=0, unmatched=2)

    assert value(m, "stream_app_events_consumed_total", stage="customer") == 205
    assert value(m, "stream_app_events_consumed_total", stage="scoring") == 120
    assert value(m, "stream_app_replayed_total", stage="customer") == 3
    assert value(m, "stream_app_replayed_total", stage="scoring") == 0
    assert value(m, "stream_app_events_scored_total", model_version="v1") == 120
    assert value(m, "stream_app_events_scored_total", model_version="v2") == 7
    assert value(m, "stream_app_dead_letters_total", reason="invalid_json") == 3
    assert value(m, "stream_app_dead_letters_total", reason="empty_value") == 1
    assert value(m, "stream_app_dead_letters_total", reason="key_mismatch") == 1
    dead = {
        dict(k[1])["reason"]: v
        for k, v in samples(m).items()
        if k[0] == "stream_app_dead_letters_total"
    }
    assert set(dead) == {r.value for r in Reason}  # the closed list, exported from the start
    assert sum(dead.values()) == 5
    assert value(m, "stream_app_labels_total", outcome="applied") == 4
    assert value(m, "stream_app_labels_total", outcome="unmatched") == 3
    # batch sizes: one histogram observation per batch
    assert value(m, "stream_app_batch_size_count", stage="customer") == 2
    assert value(m, "stream_app_batch_size_sum", stage="customer") == 205
    assert value(m, "stream_app_batch_size_bucket", stage="customer", le="5.0") == 1
    assert value(m, "stream_app_batch_size_bucket", stage="customer", le="200.0") == 2
    assert value(m, "stream_app_scoring_seconds_count") == 1
    assert value(m, "stream_app_scoring_seconds_bucket", le="0.0025") == 0
    assert value(m, "stream_app_scoring_seconds_bucket", le="0.005") == 1


def test_latency_histogram_bucket_counts_for_known_latencies():
    m = WorkerMetrics()
    known = [0.001, 0.005, 0.0051, 0.02, 0.2, 0.2, 3.0, 29.0, 31.0, 120.0]
    m.scored_batch("v1", len(known), latencies_s=np.array(known[:6]))
    m.scored_batch("v1", 0, latencies_s=known[6:])
    expected = {
        "0.005": 2,  # le is inclusive: 0.001, 0.005
        "0.01": 3,
        "0.025": 4,
        "0.05": 4,
        "0.1": 4,
        "0.25": 6,
        "0.5": 6,
        "1.0": 6,
        "2.5": 6,
        "5.0": 7,
        "10.0": 7,
        "30.0": 8,
        "+Inf": 10,
    }
    got = {
        dict(k[1])["le"]: v
        for k, v in samples(m).items()
        if k[0] == "stream_app_end_to_end_latency_seconds_bucket"
    }
    assert got == expected
    assert value(m, "stream_app_end_to_end_latency_seconds_count") == 10
    assert value(m, "stream_app_end_to_end_latency_seconds_sum") == pytest.approx(sum(known))
    assert [float(le) for le in expected if le != "+Inf"] == list(LATENCY_BUCKETS)


def test_batch_histogram_matches_prometheus_client_histogram():
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    values = np.random.default_rng(1).exponential(0.3, size=500)
    values[:5] = [0.005, 0.01, 0.25, 30.0, 0.0]  # exactly on bounds
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    h = BatchHistogram("lat_seconds", "x", LATENCY_BUCKETS)
    ours.register(h)
    h.observe_many(values[:200])
    h.observe_many(values[200:])
    ref = Histogram("lat_seconds", "x", buckets=LATENCY_BUCKETS, registry=theirs)
    for v in values:
        ref.observe(float(v))

    def buckets(registry):
        fams = text_string_to_metric_families(generate_latest(registry).decode())
        return {
            (s.name, s.labels.get("le")): round(s.value, 9)
            for f in fams
            for s in f.samples
            if not s.name.endswith("_created")
        }

    assert buckets(ours) == buckets(theirs)


def test_render_has_model_info_and_content_type_is_prometheus_text():
    from stream_app.monitoring.metrics import CONTENT_TYPE_LATEST

    m = WorkerMetrics()
    m.set_model("20260301-logreg-abc", "0123456789abcdef" * 4)
    text = m.render().decode()
    assert (
        'stream_app_model_info{sha256="' + "0123456789abcdef" * 4 + '",'
        'version="20260301-logreg-abc"} 1.0'
    ) in text
    # the champion's scored series exists at 0 before the first batch
    assert 'stream_app_events_scored_total{model_version="20260301-logreg-abc"} 0.0' in text
    assert "# TYPE stream_app_end_to_end_latency_seconds histogram" in text
    assert CONTENT_TYPE_LATEST.startswith("text/plain")


def test_two_workers_in_one_process_do_not_clash():
    a, b = WorkerMetrics(), WorkerMetrics()
    a.batch("customer", 3)
    assert value(a, "stream_app_events_consumed_total", stage="customer") == 3
    assert value(b, "stream_app_events_consumed_total", stage="customer") == 0


def test_table_keys_refresh_is_throttled():
    m = WorkerMetrics()
    tables = {"customer-state": {"a": 1, "b": 2}, "terminal-state": {}}
    m.refresh_table_keys(tables, min_interval_s=60)
    tables["customer-state"]["c"] = 3
    m.refresh_table_keys(tables, min_interval_s=60)  # too soon: unchanged
    assert value(m, "stream_app_table_keys", table="customer-state") == 2
    assert value(m, "stream_app_table_keys", table="terminal-state") == 0
    m.refresh_table_keys(tables, min_interval_s=0)
    assert value(m, "stream_app_table_keys", table="customer-state") == 3


def test_latencies_from_ms_drops_unknown_and_clips_skew():
    got = latencies_from_ms([1_000_000.0, 0.0, 1_001_500.0, 1_003_000.0], now_s=1_002.0)
    assert got.tolist() == [2.0, 0.5, 0.0]


def test_scoring_stage_reports_arrival_times_and_scoring_time(model_dir):
    champion = ScoringModel.load(model_dir)
    stage = ScoringStage({}, champion, Retention.for_lateness(3600.0), "labels", 65_536)
    records = [
        InputRecord(
            b"t1",
            encode_forward(
                f"e{i}",
                "2026-03-01T00:00:00Z",
                1.77e9 + i,
                "c1",
                "t1",
                1_000.0 + i,
                0,
                i,
                [1.0] * 9,
            ),
            SourcePosition("transactions.by-terminal", 0, i, 0),
        )
        for i in range(5)
    ]
    out = stage.process(
        [*records, InputRecord(b"t1", b'{"label": 1}', SourcePosition("labels", 0, 0, 0))]
    )
    assert out.arrived_ms == [1_000.0, 1_001.0, 1_002.0, 1_003.0, 1_004.0]
    assert len(out.dead_letters) == 1  # the bad label: not among the scored arrivals
    assert out.scoring_s > 0
    assert stage.process([]).scoring_s == 0.0


def _app(assigned=2, completed=True, rebalancing=False, in_recovery=False):
    """A stand-in with just the attributes readiness() reads from a faust.App."""

    class Flag:
        def is_set(self):
            return completed

    return SimpleNamespace(
        consumer=SimpleNamespace(assignment=lambda: set(range(assigned))),
        tables=SimpleNamespace(recovery=SimpleNamespace(completed=Flag())),
        rebalancing=rebalancing,
        in_recovery=in_recovery,
    )


def test_readiness_names_each_failing_check(model_dir):
    champion = ScoringModel.load(model_dir)
    assert all(c["ok"] for c in readiness(_app(), champion).values())
    assert not readiness(_app(assigned=0), champion)["partitions_assigned"]["ok"]
    assert not readiness(_app(completed=False), champion)["recovery_finished"]["ok"]
    assert not readiness(_app(rebalancing=True), champion)["recovery_finished"]["ok"]
    assert not readiness(_app(in_recovery=True), champion)["recovery_finished"]["ok"]
    assert not readiness(_app(), None)["champion_loaded"]["ok"]

    def boom():
        raise RuntimeError("consumer not started")

    broken = _app()
    broken.consumer = SimpleNamespace(assignment=boom)
    check = readiness(broken, champion)["partitions_assigned"]  # type: ignore[arg-type]
    assert not check["ok"] and "not started" in check["detail"]


def test_drift_gauges_keep_the_latest_value_and_alert_flag():
    m = WorkerMetrics()
    m.drift(
        [
            {"statistic": "psi", "subject": "TX_AMOUNT", "value": 0.31, "alert": True},
            {"statistic": "ks", "subject": "TX_AMOUNT", "value": 0.02, "alert": False},
        ]
    )
    m.drift([{"statistic": "psi", "subject": "TX_AMOUNT", "value": 0.05, "alert": False}])

    assert value(m, "stream_app_drift_value", statistic="psi", subject="TX_AMOUNT") == 0.05
    assert value(m, "stream_app_drift_alerting", statistic="psi", subject="TX_AMOUNT") == 0
    assert value(m, "stream_app_drift_value", statistic="ks", subject="TX_AMOUNT") == 0.02
    assert value(m, "stream_app_drift_records_total", statistic="psi") == 2
    assert value(m, "stream_app_drift_alerts_total", statistic="psi", subject="TX_AMOUNT") == 1


def test_lag_gauge_is_replaced_on_each_refresh():
    m = WorkerMetrics()
    m.set_lag({("transactions", 0): 12, ("transactions", 1): 0, ("labels", 3): 5})
    assert value(m, "stream_app_consumer_lag", topic="transactions", partition="0") == 12
    m.set_lag({("transactions", 1): 7})  # partition 0 and labels 3 revoked
    lag = {k: v for k, v in samples(m).items() if k[0] == "stream_app_consumer_lag"}
    assert lag == {
        ("stream_app_consumer_lag", (("partition", "1"), ("topic", "transactions"))): 7.0
    }


def test_challenger_info_line():
    m = WorkerMetrics()
    m.set_challenger("hgb-2", "cd" * 32)
    assert value(m, "stream_app_challenger_info", version="hgb-2", sha256="cd" * 32) == 1.0


class FakeConsumer:
    """What consumer_lag reads from Faust's consumer."""

    def __init__(self, highwater, read, committed):
        self._highwater, self._read_offset, self._committed_offset = highwater, read, committed

    def assignment(self):
        return set(self._highwater)

    def highwater(self, tp):
        return self._highwater[tp]


def test_consumer_lag_from_highwater_and_read_or_committed_offset():
    from stream_app.monitoring.health import consumer_lag

    keys = {
        ("transactions", 0): 1000,
        ("transactions", 1): 50,
        ("transactions", 2): None,
        ("customer-state-changelog", 0): 99,
    }

    class TP(tuple):
        topic = property(lambda self: self[0])
        partition = property(lambda self: self[1])

    highwater = {TP(k): v for k, v in keys.items()}
    read = {TP(("transactions", 0)): 899}  # last offset handed to the stream
    committed = {TP(("transactions", 1)): 40, TP(("transactions", 2)): 3}
    lags = consumer_lag(FakeConsumer(highwater, read, committed), {"transactions"})
    # p0: 1000 - (899 + 1); p1: nothing read since start, committed 40; p2: log end unknown;
    # the changelog is not an input topic.
    assert lags == {("transactions", 0): 100, ("transactions", 1): 10}
