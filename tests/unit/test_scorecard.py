"""The live scorecard: join, eviction and per-period metrics with exact expected values."""

import math

import pytest

from stream_app.io.schemas import validator
from stream_app.monitoring.scorecard import (
    JoinedPair,
    Scorecard,
    ScoreJoin,
    event_day,
    period_metrics,
    processing_hour,
)

DAY = 86_400.0
T0 = 1_522_540_800.0  # 2018-04-01T00:00:00Z
AT = "2026-11-23T10:15:00+00:00"


def test_period_helpers():
    assert event_day(T0 + 1.5 * DAY) == "2018-04-02"
    assert processing_hour("2026-11-23T11:59:59.5+01:00") == "2026-11-23T10"


def test_period_metrics_exact():
    scores = [0.9, 0.8, 0.3, 0.2]
    labels = [1, 0, 1, 0]
    m = period_metrics(scores, labels, k=2)
    # Pairs (pos, neg): (0.9,0.8) ok, (0.9,0.2) ok, (0.3,0.8) no, (0.3,0.2) ok -> 3/4.
    assert m["auc_roc"] == 0.75
    # AP: ranks 1 (tp, precision 1), 3 (tp, precision 2/3) -> (1 + 2/3) / 2.
    assert m["average_precision"] == pytest.approx(5 / 6, abs=1e-12)
    assert m["precision_at_k"] == 0.5
    assert m["brier"] == pytest.approx((0.01 + 0.64 + 0.49 + 0.04) / 4, abs=1e-12)
    one_class = period_metrics([0.1, 0.4], [0, 0], k=100)
    assert one_class["auc_roc"] is None and one_class["average_precision"] is None
    assert one_class["precision_at_k"] == 0.0 and one_class["brier"] == pytest.approx(0.085)
    assert period_metrics([], [], k=5)["brier"] is None


def test_join_in_either_order_and_per_version():
    join = ScoreJoin(horizon_s=10 * DAY)
    assert join.add_score("a", "champ", 0.7, T0, AT) == []
    assert join.add_score("a", "chall", 0.4, T0, AT) == []
    pairs = join.add_label("a", 1, T0)
    assert sorted((p.version, p.score, p.label) for p in pairs) == [
        ("chall", 0.4, 1),
        ("champ", 0.7, 1),
    ]
    # Label first, then the score: joined on arrival.
    assert join.add_label("b", 0, T0 + 1) == []
    assert [(p.version, p.label) for p in join.add_score("b", "champ", 0.2, T0 + 1, AT)] == [
        ("champ", 0)
    ]
    # A challenger score after the label was joined for the champion still joins.
    assert [p.version for p in join.add_score("a", "late", 0.5, T0, AT)] == ["late"]
    assert join.counts.joined == 4
    # A duplicate label changes nothing.
    assert join.add_label("a", 1, T0) == []


def test_join_state_is_bounded_by_the_label_horizon():
    join = ScoreJoin(horizon_s=2 * DAY)
    join.add_score("old", "v", 0.1, T0, AT)
    join.add_score("old", "w", 0.1, T0, AT)
    join.add_label("orphan", 1, T0 + 0.5 * DAY)
    join.add_score("new", "v", 0.3, T0 + 1 * DAY, AT)
    assert len(join) == 3
    join.add_score("newest", "v", 0.3, T0 + 2.6 * DAY, AT)  # cutoff T0 + 0.6 day
    assert join.counts.evicted_unlabelled == 2 and join.counts.labels_unmatched == 1
    assert set(join.served) == {"new", "newest"} and join.early_labels == {}
    assert join.add_label("old", 1, T0) == []  # too late: counted as unmatched when evicted


def test_scorecard_records_per_period_and_coverage():
    card = Scorecard(k=1, keep_days=2, keep_hours=5)
    for i, (score, label) in enumerate([(0.9, 1), (0.2, 0), (0.6, 0)]):
        card.scored("v", T0 + i * 3600, AT)
        card.joined(JoinedPair("v", score, label, T0 + i * 3600, AT))
    card.scored("v", T0 + 5 * 3600, AT)  # scored, not (yet) labelled
    records = card.records()
    validate = validator("metrics_record")
    for record in records:
        validate(record)
    by = {(r["granularity"], r["period"]): r for r in records}
    assert set(by) == {("event_day", "2018-04-01"), ("processing_hour", "2026-11-23T10")}
    day = by[("event_day", "2018-04-01")]
    assert day["labels"] == 3 and day["label_coverage"] == 0.75
    assert day["metrics"]["auc_roc"] == 1.0
    assert day["metrics"]["precision_at_k"] == 1.0
    assert day["metrics"]["brier"] == pytest.approx((0.01 + 0.04 + 0.36) / 3, abs=1e-12)
    assert card.records() == []  # nothing changed since
    # Days beyond keep_days are dropped, oldest first.
    for d in (1, 2):
        card.scored("v", T0 + d * DAY, AT)
    card.records()
    assert sorted(k[3] for k in card.periods if k[2] == "event_day") == [
        "2018-04-02",
        "2018-04-03",
    ]
    assert not math.isnan(day["label_coverage"])
