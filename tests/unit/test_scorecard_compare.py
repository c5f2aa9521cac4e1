"""Issue 16, items 2 and 3: calibration, slices and routes in the scorecard, and the rollout
verdict of `stream-app models compare` (exact values where the maths is hand-checkable)."""

import math
from datetime import UTC, datetime

import numpy as np
import orjson
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from stream_app.config import SliceSpec
from stream_app.evaluation.compare import (
    Estimate,
    Pairs,
    bootstrap,
    compare_window,
    verdict,
)
from stream_app.evaluation.metrics import calibration
from stream_app.io.schemas import validator
from stream_app.monitoring.scorecard import JoinedPair, Scorecard
from stream_app.monitoring.scorecard_service import (
    LABELS,
    SCORES,
    SHADOW,
    TRANSACTIONS,
    ScorecardService,
)
from stream_app.monitoring.slices import Slicer, Tenure, band, declared_band, hour_band
from tests.scorecard_streams import stream

DAY = 86_400.0


def test_expected_calibration_error_on_a_hand_made_example():
    # bin 0: 0.05 (fraud rate 0); bin 1: 0.15, 0.12 (mean 0.135, rate 0.5); bin 9: 0.95, 1.0.
    ece, bins = calibration([0.05, 0.15, 0.12, 0.95, 1.0], [0, 1, 0, 1, 1])
    assert ece == pytest.approx((0.05 + abs(0.27 - 1) + abs(1.95 - 2)) / 5, abs=1e-15)
    assert ece == pytest.approx(0.166, abs=1e-12)
    assert [(b["lo"], b["hi"], b["n"]) for b in bins] == [
        (0.0, 0.1, 1),
        (0.1, 0.2, 2),
        (0.9, 1.0, 2),
    ]
    assert bins[1]["mean_score"] == pytest.approx(0.135) and bins[1]["fraud_rate"] == 0.5
    assert bins[2]["mean_score"] == pytest.approx(0.975) and bins[2]["fraud_rate"] == 1.0
    assert calibration([0.3, 0.3], [0, 1])[0] == pytest.approx(0.2)  # |0.3 - 0.5|
    assert math.isnan(calibration([], [])[0])


def test_bands_hour_and_declared_slices():
    assert [band(x, [50.0, 220.0]) for x in (0, 49.99, 50, 219.9, 220, 5000)] == [
        "<50",
        "<50",
        "50-220",
        "50-220",
        ">=220",
        ">=220",
    ]
    at = datetime(2026, 11, 1, 6, 59, tzinfo=UTC).timestamp()
    assert (hour_band(at), hour_band(at + 60), hour_band(at + 17 * 3600 + 60)) == (
        "night",
        "day",
        "night",
    )
    age = SliceSpec(field="age", edges=[25, 65])
    assert [declared_band(age, v) for v in (18, 25, 70, None, "x")] == [
        "<25",
        "25-65",
        ">=65",
        "unknown",
        "unknown",
    ]
    region = SliceSpec(field="region", values=["north", "south"])
    assert [declared_band(region, v) for v in ("north", "east")] == ["north", "other"]
    with pytest.raises(ValueError, match="clash"):
        Slicer(declared={"amount": age})


def test_tenure_new_established_unknown():
    tenure = Tenure(30 * DAY)
    tenure.seen("old", 0.0)  # first seen at the start of what was read: could be older
    tenure.seen("late", 40 * DAY)  # 40 days of history without them: new
    assert tenure.band("old", 10 * DAY) == "unknown"
    assert tenure.band("old", 30 * DAY) == "established"
    assert tenure.band("late", 45 * DAY) == "new"
    assert tenure.band("late", 70 * DAY) == "established"
    assert tenure.band("never", 45 * DAY) == "unknown"


def test_scorecard_records_per_route_and_slice_with_calibration():
    card = Scorecard(k=2)
    at = "2026-11-23T10:00:00+00:00"
    t = datetime(2026, 11, 1, 12, tzinfo=UTC).timestamp()
    rows = [(0.9, 1, "<50"), (0.2, 0, "<50"), (0.6, 0, ">=220"), (0.7, 1, ">=220")]
    for i, (score, label, amount) in enumerate(rows):
        card.scored("v", t + i, at, "canary")
        card.joined(JoinedPair("v", score, label, t + i, at, "canary"), {"amount": amount})
    records = card.records()
    validate = validator("metrics_record")
    for record in records:
        validate(record)
    by = {r["granularity"]: r for r in records}
    assert set(by) == {"event_day", "processing_hour"}
    assert {r["route"] for r in records} == {"canary"}
    day = by["event_day"]
    assert day["metrics"]["auc_roc"] == 1.0 and day["metrics"]["precision_at_k"] == 1.0
    # one score per bin: (|0.9 - 1| + |0.2 - 0| + |0.6 - 0| + |0.7 - 1|) / 4
    assert day["calibration"]["ece"] == pytest.approx(0.3, abs=1e-12)
    assert [b["n"] for b in day["calibration"]["bins"]] == [1, 1, 1, 1]
    assert "slices" not in by["processing_hour"]
    assert set(day["slices"]) == {"amount"} and set(day["slices"]["amount"]) == {"<50", ">=220"}
    low = day["slices"]["amount"]["<50"]
    assert low["labels"] == 2 and low["metrics"]["auc_roc"] == 1.0
    assert low["calibration"]["ece"] == pytest.approx((0.1 + 0.2) / 2, abs=1e-12)
    high = day["slices"]["amount"][">=220"]
    assert high["metrics"]["brier"] == pytest.approx((0.36 + 0.09) / 2, abs=1e-15)


def feed(service, records):
    for tx in records["transactions"]:
        service.handle(TRANSACTIONS, orjson.dumps(tx))
    for kind in (SCORES, SHADOW, LABELS):
        for r in records[kind]:
            service.handle(kind, orjson.dumps(r))


def test_service_slices_routes_and_pairs():
    service = ScorecardService(horizon_s=60 * DAY, k=10, slicer=Slicer([50.0, 220.0], 30.0))
    records = stream("champ", "chall", 4.0)
    canary = dict(records["scores"][0], model_version="chall", route="canary")
    feed(service, records)
    service.handle(SCORES, orjson.dumps(canary))  # its label is known: joined at once
    assert service.totals.transactions == 1500
    pairs = service.take_pairs()
    assert len(pairs) == 2 * 1500 + 1
    assert {(p["model_version"], p["route"]) for p in pairs} == {
        ("champ", "champion"),
        ("chall", "shadow"),
        ("chall", "canary"),
    }
    first = next(p for p in pairs if p["event_id"] == "e0-0" and p["route"] == "champion")
    assert first["slices"] == {"amount": "<50", "hour": "night", "tenure": "unknown"}
    assert first["customer_id"] == "c0" and first["label"] == 1
    metrics, _ = service.records()
    # amounts 10, 50, 90, 130, 170 per customer, over the days their events fall on
    per_band: dict[str, int] = {}
    for r in metrics:
        if r["route"] == "champion" and r["granularity"] == "event_day":
            for name, bands in r["slices"].items():
                for value, part in bands.items():
                    per_band[f"{name}:{value}"] = (
                        per_band.get(f"{name}:{value}", 0) + part["labels"]
                    )
    assert per_band["amount:<50"] == 300 and per_band["amount:50-220"] == 1200
    assert per_band["tenure:unknown"] == 1500  # 1.6 days of history: nobody known new
    assert per_band["hour:night"] + per_band["hour:day"] == 1500


def test_bootstrap_collapses_when_every_customer_is_the_same():
    s = np.array([0.9, 0.1] * 10)
    y = np.array([1, 0] * 10)
    customers = [f"c{i // 2}" for i in range(20)]
    side = Pairs([str(i) for i in range(20)], customers, np.zeros(20), s, y)
    better = Pairs(side.event_id, customers, np.zeros(20), np.where(y == 1, 0.95, 0.05), y)
    champ, _chall, delta = bootstrap(side, better, k=5, n_boot=200, seed=1)
    assert champ["auc_roc"] == Estimate(1.0, 1.0, 1.0)
    assert champ["brier"].value == pytest.approx(0.01) and champ["brier"].low == pytest.approx(0.01)
    assert delta["brier"].value == pytest.approx(0.0025 - 0.01)
    assert delta["brier"].low == pytest.approx(delta["brier"].high)
    assert delta["ece"].value == pytest.approx(0.05 - 0.1)


BOTH = {"champion": 30, "challenger": 30}
FEW = {"champion": 30, "challenger": 19}


def e(value, low, high):
    return Estimate(value, low, high)


@pytest.mark.parametrize(
    ("ap", "auc", "frauds", "expected"),
    [
        (e(0.1, 0.02, 0.2), e(0.0, -0.01, 0.01), BOTH, "promote"),
        (e(-0.1, -0.2, -0.01), e(0.0, -0.01, 0.01), BOTH, "roll back"),
        (e(0.1, 0.02, 0.2), e(-0.03, -0.05, -0.01), BOTH, "roll back"),
        (e(0.05, -0.01, 0.1), e(0.0, -0.01, 0.01), BOTH, "keep watching"),
        (e(0.1, 0.02, 0.2), e(0.0, -0.01, 0.01), FEW, "keep watching"),
        (e(0.1, 0.0, 0.2), e(0.0, -0.01, 0.01), BOTH, "keep watching"),
    ],
)
def test_verdict_rule(ap, auc, frauds, expected):
    got, reason = verdict({"average_precision": ap, "auc_roc": auc}, frauds, min_frauds=20)
    assert got == expected, reason


@pytest.mark.parametrize(("strength", "expected"), [(4.0, "promote"), (0.5, "roll back")])
def test_compare_a_clearly_better_and_a_clearly_worse_challenger(strength, expected):
    service = ScorecardService(horizon_s=60 * DAY, k=100)
    feed(service, stream("champ", "chall", strength))
    pairs = service.take_pairs()
    result = compare_window(pairs, "chall", "champ", "shadow", n_boot=300, seed=0)
    assert result is not None and result.verdict == expected, result.reason
    assert compare_window(pairs, "chall", "champ", "canary") is None
    assert result.labels == {"champion": 1500, "challenger": 1500}
    assert result.frauds == {"champion": 90, "challenger": 90} and result.customers == 300
    by_event = {(p["model_version"], p["event_id"]): p for p in pairs}
    ids = [p["event_id"] for p in pairs if p["model_version"] == "champ"]
    y = np.array([by_event[("champ", i)]["label"] for i in ids])
    for version, side in (("champ", result.champion), ("chall", result.challenger)):
        s = np.array([by_event[(version, i)]["score"] for i in ids])
        assert side["auc_roc"].value == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert side["average_precision"].value == pytest.approx(
            average_precision_score(y, s), abs=1e-12
        )
        assert side["auc_roc"].low <= side["auc_roc"].value <= side["auc_roc"].high


def test_the_canary_window_compares_other_customers_over_the_same_span():
    """Canary pairs (route canary, other customers) against the champion's route over the
    canary's event-time span; champion pairs outside the span are left out."""
    records = []
    for c in range(100):
        canary = c % 2 == 0
        for j in range(4):
            label = int(c % 5 == 0 and j < 2)
            records.append(
                {
                    "model_version": "chall" if canary else "champ",
                    "route": "canary" if canary else "champion",
                    "event_id": f"e{c}-{j}",
                    "customer_id": f"c{c}",
                    "event_time": f"2026-11-0{1 + j}T12:00:00+00:00",
                    "score": (0.9 if label else 0.1) if canary else (0.6 if label else 0.4),
                    "label": label,
                }
            )
    late = dict(records[-1], event_id="late", event_time="2026-11-09T12:00:00+00:00")
    result = compare_window([*records, late], "chall", "champ", "canary", n_boot=200)
    assert result is not None
    assert result.labels == {"champion": 200, "challenger": 200} and result.customers == 100
    assert result.frauds == {"champion": 20, "challenger": 20}
    assert result.challenger["brier"].value == pytest.approx(0.01)
    assert result.champion["brier"].value == pytest.approx(0.16)
    assert result.delta["ece"].value == pytest.approx(0.1 - 0.4)  # both bins off by 0.1 / 0.4
    assert result.verdict == "keep watching"  # AUC 1.0 on both sides, AP 1.0: no difference
    assert compare_window(records, "chall", "champ", "shadow") is None
