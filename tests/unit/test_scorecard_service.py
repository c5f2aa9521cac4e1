"""ScorecardService.handle: decoding of envelopes, shadow records and labels, never raising."""

import orjson

from stream_app.monitoring.scorecard_service import LABELS, SCORES, SHADOW, ScorecardService


def envelope(event_id, version, score, event_time="2018-04-01T10:00:00+00:00"):
    return {
        "event_id": event_id,
        "model_version": version,
        "score": score,
        "event_time": event_time,
        "scored_at": "2026-11-23T10:00:00+00:00",
    }


def label(event_id, value):
    return orjson.dumps(
        {
            "event_id": event_id,
            "customer_id": "c",
            "terminal_id": "t",
            "event_time": "2018-04-01T10:00:00Z",
            "label": value,
            "label_time": "2018-04-08T10:00:00Z",
        }
    )


def test_handle_joins_champion_and_challenger_and_counts_junk():
    service = ScorecardService(horizon_s=30 * 86_400.0, k=10)
    for i, (s, c, y) in enumerate([(0.9, 0.8, 1), (0.1, 0.3, 0), (0.4, 0.7, 0)]):
        service.handle(SCORES, orjson.dumps(envelope(f"e{i}", "champ", s)))
        shadow = {"challenger": envelope(f"e{i}", "chall", c), "champion_score": s}
        service.handle(SHADOW, orjson.dumps(shadow))
        service.handle(LABELS, label(f"e{i}", y))
    for junk in (b"{", b"[]", None, orjson.dumps({"event_id": "x"})):
        service.handle(SCORES, junk)
    service.handle(LABELS, b"not json")
    totals = service.totals
    assert (totals.scores, totals.shadow, totals.labels, totals.undecodable) == (3, 3, 3, 5)
    overall = totals.overall(k=1)
    assert overall["champ"]["auc_roc"] == 1.0 and overall["chall"]["auc_roc"] == 1.0
    assert overall["champ"]["labels"] == 3 and overall["champ"]["precision_at_k"] == 1.0
    metrics, drift = service.records()
    assert {(r["model_version"], r["granularity"]) for r in metrics} == {
        ("champ", "event_day"),
        ("champ", "processing_hour"),
        ("chall", "event_day"),
        ("chall", "processing_hour"),
    }
    assert [(r["statistic"], r["subject"], r["window"]["events"]) for r in drift] == [
        ("adwin", "label_error", 3),
        ("adwin", "label_error", 3),
    ]
