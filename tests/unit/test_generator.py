"""The transaction simulator: determinism, schema validity, time order, fraud rules and rate."""

from __future__ import annotations

import itertools
import json
import re
import time
from datetime import UTC, datetime, timedelta

import fastjsonschema
import numpy as np
import pytest

from stream_app.config import REPO_ROOT
from stream_app.sources.simulator import FRAUD_AMOUNT, TransactionSimulator, simulate

START = datetime(2024, 3, 1, tzinfo=UTC)
TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\+00:00$")


@pytest.fixture(scope="module")
def validate_transaction():
    schema = json.loads((REPO_ROOT / "schemas" / "transaction.schema.json").read_text())
    return fastjsonschema.compile(schema)


@pytest.fixture(scope="module")
def two_months():
    """A mid-sized population over 60 days (about 115,000 transactions)."""
    return list(
        TransactionSimulator(n_customers=1000, n_terminals=2000, start=START, days=60, seed=7)
    )


def test_same_seed_same_events():
    a = list(simulate(n_customers=300, n_terminals=600, start=START, days=5, seed=11))
    b = list(simulate(n_customers=300, n_terminals=600, start=START, days=5, seed=11))
    assert len(a) > 1000
    assert a == b


def test_other_seed_other_events():
    a = list(simulate(n_customers=300, n_terminals=600, start=START, n_events=500, seed=11))
    b = list(simulate(n_customers=300, n_terminals=600, start=START, n_events=500, seed=12))
    assert [x.event for x in a] != [x.event for x in b]


def test_shorter_run_is_a_prefix():
    long = list(simulate(n_customers=200, n_terminals=400, start=START, n_events=3000, seed=3))
    short = list(simulate(n_customers=200, n_terminals=400, start=START, n_events=1234, seed=3))
    assert len(long) == 3000
    assert len(short) == 1234
    assert short == long[:1234]


def test_days_and_n_events_stop_at_the_first(two_months):
    capped = list(
        TransactionSimulator(
            n_customers=1000, n_terminals=2000, start=START, days=60, n_events=100, seed=7
        )
    )
    assert capped == two_months[:100]
    one_day = list(
        TransactionSimulator(
            n_customers=1000, n_terminals=2000, start=START, days=1, n_events=10**9, seed=7
        )
    )
    assert all(x.event["event_time"].startswith("2024-03-01T") for x in one_day)
    assert one_day == two_months[: len(one_day)]


def test_every_event_matches_the_schema(two_months, validate_transaction):
    for item in two_months:
        validate_transaction(item.event)
        assert set(item.event) == {
            "event_id",
            "event_time",
            "customer_id",
            "terminal_id",
            "amount",
            "schema_version",
        }
        assert TIME_RE.match(item.event["event_time"])
        assert item.event["amount"] == round(item.event["amount"], 2)
        assert item.label in (0, 1)
        assert item.scenario in (0, 1, 2, 3)


def test_ids_unique_and_time_ordered(two_months):
    ids = [x.event["event_id"] for x in two_months]
    assert len(set(ids)) == len(ids)
    times = [datetime.fromisoformat(x.event["event_time"]) for x in two_months]
    assert all(a <= b for a, b in itertools.pairwise(times))
    assert times[0] >= START
    assert times[-1] < START + timedelta(days=60)


def test_fraud_rules(two_months):
    amounts = np.array([x.event["amount"] for x in two_months])
    labels = np.array([x.label for x in two_months])
    scenarios = np.array([x.scenario for x in two_months])
    # A label is fraud exactly when some scenario applies.
    assert np.array_equal(labels, (scenarios > 0).astype(labels.dtype))
    # Scenario 1 exact: every amount above 220 is fraud, and no genuine one is above 220.
    assert labels[amounts > FRAUD_AMOUNT].all()
    assert (amounts[scenarios == 0] <= FRAUD_AMOUNT).all()
    assert (amounts[scenarios == 1] > FRAUD_AMOUNT).all()
    # All three scenarios occur.
    assert {1, 2, 3} <= set(scenarios.tolist())


def test_scenario_2_compromises_whole_terminal_days(two_months):
    # A terminal with a scenario-2 fraud on a day has only frauds that day.
    by_key: dict[tuple[str, str], set[int]] = {}
    for x in two_months:
        key = (x.event["terminal_id"], x.event["event_time"][:10])
        by_key.setdefault(key, set()).add(x.label)
    compromised = {
        (x.event["terminal_id"], x.event["event_time"][:10]) for x in two_months if x.scenario == 2
    }
    assert compromised
    assert all(by_key[key] == {1} for key in compromised)


def test_fraud_rate_in_the_handbook_range(two_months):
    """After the first month (compromises piled up) the rate is 0.5 - 1.3 % (handbook: 0.88 %)."""
    cutoff = (START + timedelta(days=30)).isoformat()
    late = [x.label for x in two_months if x.event["event_time"] >= cutoff]
    assert len(late) > 40_000
    assert 0.005 <= float(np.mean(late)) <= 0.013
    overall = float(np.mean([x.label for x in two_months]))
    assert 0.003 <= overall <= 0.012


def test_default_start_is_recent_and_in_the_past():
    sim = TransactionSimulator(n_customers=200, n_terminals=400, n_events=2000, seed=1)
    events = list(sim)
    now = datetime.now(UTC)
    assert sim.start.tzinfo is not None
    assert (sim.start.hour, sim.start.minute, sim.start.second) == (0, 0, 0)
    last = datetime.fromisoformat(events[-1].event["event_time"])
    assert last <= now
    assert now - last < timedelta(days=2)


def test_bad_parameters():
    with pytest.raises(ValueError, match="days, n_events"):
        TransactionSimulator(n_customers=10, n_terminals=10)
    with pytest.raises(ValueError, match="timezone-aware"):
        TransactionSimulator(start=datetime(2024, 1, 1), days=1)  # noqa: DTZ001
    with pytest.raises(ValueError, match="no customer has a terminal"):
        TransactionSimulator(n_customers=5, n_terminals=5, radius=1e-9, days=1)


def test_generation_is_fast():
    """At least 100,000 events/s (measured ~400,000 on the 2-core reference machine)."""
    sim = TransactionSimulator(start=START, n_events=300_000, seed=5)
    began = time.perf_counter()
    n = sum(1 for _ in sim)
    rate = n / (time.perf_counter() - began)
    assert n == 300_000
    assert rate >= 100_000, f"{rate:,.0f} events/s"
