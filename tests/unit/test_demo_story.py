"""The demo's story without a broker: the world's records split at the live window with labels 7
days late, which compromised-terminal frauds the worker could know about, and the outcome joined
with the ground truth (decisions, caught and missed, agreement, the latest drift window)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from stream_app.devtools.demo_story import (
    KNOWN_TERMINAL,
    UNKNOWN_TERMINAL,
    DemoWorld,
    Plan,
    Truth,
    outcome,
    plan,
    terminal_fraud_known,
)
from stream_app.features.definitions import DAY_S
from stream_app.sources.simulator import SCENARIO_NAMES

NOW = datetime(2026, 3, 20, 15, 30, tzinfo=UTC)
SMALL = DemoWorld(customers=120, terminals=240, history_days=10, live_days=1, seed=5)


@pytest.fixture(scope="module")
def small_plan() -> Plan:
    return plan(SMALL, NOW)


def test_the_world_ends_at_todays_midnight_and_splits_at_the_live_window(small_plan):
    midnight = datetime(2026, 3, 20, tzinfo=UTC)
    assert small_plan.start == midnight - timedelta(days=11)
    assert small_plan.live_from == midnight - timedelta(days=1)
    assert all(r.time < small_plan.live_from for r in small_plan.history)
    assert all(small_plan.live_from <= r.time < midnight for r in small_plan.live)
    assert all(r.time >= midnight and r.topic == "labels" for r in small_plan.since)
    assert all(r.time <= NOW for r in small_plan.since)  # labels not due yet are withheld
    assert small_plan.withheld_labels > 0
    live_payments = [r for r in small_plan.live if r.topic == "transactions"]
    assert len(live_payments) == len(small_plan.live_ids) > 0


def test_each_label_comes_seven_days_after_its_payment(small_plan):
    records = small_plan.history + small_plan.live + small_plan.since
    labels = [orjson.loads(r.value) for r in records if r.topic == "labels"]
    assert labels
    for label in labels:
        paid = datetime.fromisoformat(label["event_time"])
        assert datetime.fromisoformat(label["label_time"]) - paid == timedelta(days=7)
        assert label["label"] == small_plan.truth[label["event_id"]].label


def test_the_attack_raises_the_compromise_rates():
    simulator = SMALL.simulator(SMALL.start(NOW))
    assert simulator.compromised_terminals_per_day == pytest.approx(10 * 2.0 * 240 / 10_000)
    assert simulator.compromised_customers_per_day == pytest.approx(5 * 3.0 * 120 / 5_000)


def truth(label: int, scenario: int, terminal: str, day: float, live: bool = True) -> Truth:
    return Truth(label, scenario, terminal, 10.0, day * DAY_S, live)


def test_a_terminal_fraud_is_known_once_an_earlier_fraud_label_is_out_and_in_the_window():
    items = {
        "old": truth(1, 2, "t1", 100.0 - 8, live=False),  # its label out 1 day before "a"
        "a": truth(1, 2, "t1", 100.0),
        "recent": truth(1, 2, "t2", 100.0 - 3, live=False),  # label due in 4 days
        "b": truth(1, 2, "t2", 100.0),
        "ancient": truth(1, 2, "t3", 100.0 - 40, live=False),  # beyond the 30-day window
        "c": truth(1, 2, "t3", 100.0),
        "genuine": truth(0, 0, "t1", 100.0),
    }
    assert terminal_fraud_known(items) == {"a": True, "b": False, "c": False}


def envelope(event_id: str, score: float, decision: str) -> dict[str, Any]:
    return {"event_id": event_id, "score": score, "decision": decision, "latency_ms": 5.0}


def shadow(event_id: str, champion: str, challenger: str) -> dict[str, Any]:
    return {
        "challenger": {"event_id": event_id, "decision": challenger, "model_version": "v-hgb"},
        "champion_decision": champion,
        "agree": champion == challenger,
    }


def drift(statistic: str, subject: str, value: float, alert: bool, end: str) -> dict[str, Any]:
    return {
        "statistic": statistic,
        "subject": subject,
        "value": value,
        "threshold": 0.2,
        "alert": alert,
        "model_version": "v-logreg",
        "window": {"start": "2026-03-18T00:00:00+00:00", "end": end, "events": 900},
    }


def test_the_outcome_counts_decisions_caught_and_missed_against_the_truth():
    items = {
        "old": truth(1, 2, "t1", 90.0, live=False),
        "t-known": truth(1, 2, "t1", 100.0),
        "t-unknown": truth(1, 2, "t9", 100.0),
        "card": truth(1, 3, "t2", 100.0),
        "big": truth(1, 1, "t3", 100.0),
        "false-alarm": truth(0, 0, "t4", 100.0),
        "fine": truth(0, 0, "t5", 100.0),
    }
    story = Plan(NOW, NOW, [], [], [], items, 0)
    envelopes = {
        "t-known": envelope("t-known", 0.95, "review"),
        "t-unknown": envelope("t-unknown", 0.01, "approve"),
        "card": envelope("card", 0.9999, "decline"),
        "big": envelope("big", 0.99995, "decline"),
        "false-alarm": envelope("false-alarm", 0.99991, "decline"),
        "fine": envelope("fine", 0.001, "approve"),
    }
    shadows = {
        "t-known": shadow("t-known", "review", "approve"),
        "card": shadow("card", "decline", "decline"),
        "fine": shadow("fine", "approve", "review"),
    }
    late = "2026-03-19T00:00:00+00:00"
    records = [
        drift("psi", "TX_AMOUNT", 0.9, True, "2026-03-18T12:00:00+00:00"),  # an older window
        drift("psi", "TX_AMOUNT", 0.01, False, late),
        drift("ks", "TX_AMOUNT", 0.03, False, late),
        drift("psi", "TERMINAL_ID_RISK_7DAY_WINDOW", 0.0, False, late),
        drift("ks", "TERMINAL_ID_RISK_7DAY_WINDOW", 0.2, True, late),
        drift("psi", "score", 0.1, False, late),
        drift("adwin", "score", 1.0, True, late),
    ]
    result = outcome(story, envelopes, shadows, records, "v-logreg", show=2)

    assert {row.decision: (row.events, row.frauds) for row in result.classes} == {
        "decline": (3, 2),
        "review": (1, 1),
        "approve": (2, 1),
    }
    assert result.precision("decline") == pytest.approx(2 / 3)
    assert (result.frauds, result.caught, result.missed) == (4, 3, 1)
    kinds = {row.kind: (row.declined, row.reviewed, row.approved) for row in result.kinds}
    assert kinds == {
        SCENARIO_NAMES[1]: (1, 0, 0),
        KNOWN_TERMINAL: (0, 1, 0),
        UNKNOWN_TERMINAL: (0, 0, 1),
        SCENARIO_NAMES[3]: (1, 0, 0),
    }
    assert [e["event_id"] for e in result.top] == ["big", "false-alarm"]

    agreement = result.agreement
    assert (agreement.shadowed, agreement.agreed, agreement.share) == (3, 1, pytest.approx(1 / 3))
    assert (agreement.champion_only_flags, agreement.challenger_only_flags) == (1, 1)
    assert (agreement.frauds, agreement.challenger_caught, agreement.champion_caught) == (2, 1, 2)

    assert result.drift_window is not None and result.drift_window["end"] == late
    assert [(r.subject, r.alert) for r in result.drift] == [
        ("TERMINAL_ID_RISK_7DAY_WINDOW", True),
        ("score", False),
        ("TX_AMOUNT", False),
    ]
    assert result.detector is not None and result.detector["statistic"] == "adwin"
