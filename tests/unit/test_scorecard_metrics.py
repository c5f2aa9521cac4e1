"""The scorecard's Prometheus metrics: exact counts after known records, newest period wins, no
stale value of an older period, undefined metrics left out."""

import orjson
from prometheus_client.parser import text_string_to_metric_families

from stream_app.monitoring.scorecard_metrics import ScorecardMetrics
from stream_app.monitoring.scorecard_service import LABELS, SCORES, SHADOW, ScorecardService
from tests.unit.test_scorecard_service import envelope, label


def samples(metrics: ScorecardMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
        if not s.name.endswith("_created")
    }


def metric(m: ScorecardMetrics, version: str, granularity: str) -> dict[str, float]:
    return {
        dict(labels)["metric"]: v
        for (name, labels), v in samples(m).items()
        if name == "stream_app_scorecard_metric"
        and dict(labels)["model_version"] == version
        and dict(labels)["granularity"] == granularity
    }


def test_service_counts_reads_and_joins_and_publishes_the_newest_period():
    m = ScorecardMetrics()
    service = ScorecardService(horizon_s=30 * 86_400.0, k=2, metrics=m)
    for i, (s, c, y) in enumerate([(0.9, 0.8, 1), (0.1, 0.3, 0), (0.4, 0.7, 0)]):
        service.handle(SCORES, orjson.dumps(envelope(f"e{i}", "champ", s)))
        shadow = {"challenger": envelope(f"e{i}", "chall", c), "champion_score": s}
        service.handle(SHADOW, orjson.dumps(shadow))
        service.handle(LABELS, label(f"e{i}", y))
    service.handle(SCORES, orjson.dumps(envelope("e9", "champ", 0.5)))  # never labelled
    service.handle(SCORES, b"{")
    service.handle(LABELS, b"not json")
    service.records()

    got = samples(m)
    consumed = {
        dict(k[1])["kind"]: v
        for k, v in got.items()
        if k[0] == "stream_app_scorecard_consumed_total"
    }
    assert consumed == {"scores": 4.0, "shadow": 3.0, "labels": 3.0, "undecodable": 2.0}
    joined = {
        dict(k[1])["model_version"]: v
        for k, v in got.items()
        if k[0] == "stream_app_scorecard_joined_total"
    }
    assert joined == {"champ": 3.0, "chall": 3.0}
    # champion day 2018-04-01: scores 0.9/0.1/0.4 (+0.5 unlabelled), labels 1/0/0.
    day = metric(m, "champ", "event_day")
    assert day["labels"] == 3 and day["label_coverage"] == 0.75
    assert day["auc_roc"] == 1.0 and day["average_precision"] == 1.0
    assert day["precision_at_k"] == 0.5  # top 2: 0.9 (fraud), 0.4 (not)
    assert abs(day["brier"] - (0.1**2 + 0.1**2 + 0.4**2) / 3) < 1e-12


def record(version, granularity, period, labels, auc, coverage=1.0):
    return {
        "model_version": version,
        "granularity": granularity,
        "period": period,
        "labels": labels,
        "label_coverage": coverage,
        "metrics": {
            "auc_roc": auc,
            "average_precision": None if auc is None else 0.5,
            "precision_at_k": 0.25,
            "brier": 0.1,
        },
    }


def test_an_older_period_never_overwrites_the_newest_and_undefined_values_are_removed():
    m = ScorecardMetrics()
    m.records([record("v1", "event_day", "2018-08-10", 900, 0.87)])
    m.records([record("v1", "event_day", "2018-08-09", 1000, 0.80)])  # a late label, older day
    assert metric(m, "v1", "event_day")["auc_roc"] == 0.87
    assert metric(m, "v1", "event_day")["labels"] == 900
    # a newer day with one class only: AUC and AP undefined, so not exported at all
    m.records([record("v1", "event_day", "2018-08-11", 40, None, coverage=0.1)])
    assert metric(m, "v1", "event_day") == {
        "labels": 40.0,
        "label_coverage": 0.1,
        "precision_at_k": 0.25,
        "brier": 0.1,
    }
    m.records([record("v2", "processing_hour", "2026-11-23T10", 5, 0.6)])
    assert metric(m, "v2", "processing_hour")["auc_roc"] == 0.6
    assert metric(m, "v1", "event_day")["labels"] == 40.0
