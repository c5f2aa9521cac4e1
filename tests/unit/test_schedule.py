"""The shared schedule: transactions at event time, labels at label time, ties, delay."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import fastjsonschema
import orjson
import pytest

from stream_app.config import REPO_ROOT
from stream_app.sources.schedule import (
    LABELS,
    TRANSACTIONS,
    LabelledTransaction,
    ScheduleStats,
    rfc3339_utc,
    schedule,
)


def tx(event_id: str, when: str, customer: str, terminal: str, amount: float = 10.0) -> dict:
    return {
        "event_id": event_id,
        "event_time": when,
        "customer_id": customer,
        "terminal_id": terminal,
        "amount": amount,
        "schema_version": 1,
    }


A = tx("a", "2018-04-01T00:00:00+00:00", "c1", "t1")
B = tx("b", "2018-04-01T00:00:00+00:00", "c2", "t2")
C = tx("c", "2018-04-08T00:00:00+00:00", "c1", "t3")  # exactly when A's and B's labels come due
D = tx("d", "2018-04-08T00:00:01Z", "c3", "t1")
ITEMS = [
    LabelledTransaction(A, 0),
    LabelledTransaction(B, 1, 2),
    (C, 0),  # plain pairs are accepted too
    LabelledTransaction(D, 1, 1),
]


def describe(records) -> list[tuple[str, str, str]]:
    """(topic, key, event_id) per record."""
    return [(r.topic, r.key, orjson.loads(r.value)["event_id"]) for r in records]


def test_exact_order_with_a_week_delay():
    records = list(schedule(ITEMS))
    assert describe(records) == [
        (TRANSACTIONS, "c1", "a"),
        (TRANSACTIONS, "c2", "b"),
        (LABELS, "t1", "a"),  # due 04-08 00:00:00, same instant as C: labels first
        (LABELS, "t2", "b"),
        (TRANSACTIONS, "c1", "c"),
        (TRANSACTIONS, "c3", "d"),
        (LABELS, "t3", "c"),  # pending labels flushed at the end, in time order
        (LABELS, "t1", "d"),
    ]
    times = [r.time for r in records]
    assert times == sorted(times)


def test_values_are_exact():
    records = list(schedule(ITEMS))
    assert orjson.loads(records[0].value) == A
    assert records[0].value == orjson.dumps(A)
    assert orjson.loads(records[2].value) == {
        "event_id": "a",
        "customer_id": "c1",
        "terminal_id": "t1",
        "event_time": "2018-04-01T00:00:00+00:00",
        "label": 0,
        "label_time": "2018-04-08T00:00:00+00:00",
        "schema_version": 1,
    }
    label_d = orjson.loads(records[-1].value)
    assert label_d["event_time"] == "2018-04-08T00:00:01Z"  # the transaction's text, as is
    assert label_d["label_time"] == "2018-04-15T00:00:01+00:00"
    assert label_d["label"] == 1
    assert records[-1].time == datetime(2018, 4, 15, 0, 0, 1, tzinfo=UTC)


def test_labels_match_the_label_schema():
    schema = json.loads((REPO_ROOT / "schemas" / "label.schema.json").read_text())
    check = fastjsonschema.compile(schema)
    for record in schedule(ITEMS):
        if record.topic == LABELS:
            check(orjson.loads(record.value))


def test_tie_rule_with_zero_delay():
    """A label known at t comes before a transaction at t, even the next one at the same t."""
    records = list(schedule(ITEMS[:2], label_delay=timedelta(0)))
    assert describe(records) == [
        (TRANSACTIONS, "c1", "a"),
        (LABELS, "t1", "a"),
        (TRANSACTIONS, "c2", "b"),
        (LABELS, "t2", "b"),
    ]


def test_custom_delay():
    records = list(schedule(ITEMS, label_delay=timedelta(days=7, seconds=1)))
    # A's and B's labels now come due at 04-08 00:00:01: after C, tied with D, so before D.
    assert describe(records) == [
        (TRANSACTIONS, "c1", "a"),
        (TRANSACTIONS, "c2", "b"),
        (TRANSACTIONS, "c1", "c"),
        (LABELS, "t1", "a"),
        (LABELS, "t2", "b"),
        (TRANSACTIONS, "c3", "d"),
        (LABELS, "t3", "c"),
        (LABELS, "t1", "d"),
    ]
    assert orjson.loads(records[3].value)["label_time"] == "2018-04-08T00:00:01+00:00"
    short = list(schedule(ITEMS, label_delay=timedelta(hours=1)))
    assert describe(short)[:4] == [
        (TRANSACTIONS, "c1", "a"),
        (TRANSACTIONS, "c2", "b"),
        (LABELS, "t1", "a"),
        (LABELS, "t2", "b"),
    ]


def test_no_labels():
    records = list(schedule(ITEMS, labels=False))
    assert [r.topic for r in records] == [TRANSACTIONS] * 4
    assert [r.key for r in records] == ["c1", "c2", "c1", "c3"]


def test_labels_until_withholds_unknown_labels_and_stats_count():
    stats = ScheduleStats()
    until = datetime(2018, 4, 8, tzinfo=UTC)
    records = list(schedule(ITEMS, labels_until=until, stats=stats))
    assert [e for t, _, e in describe(records) if t == LABELS] == ["a", "b"]
    assert stats.transactions == 4
    assert stats.labels == 2
    assert stats.withheld_labels == 2
    assert stats.first_event_time == datetime(2018, 4, 1, tzinfo=UTC)
    assert stats.last_event_time == datetime(2018, 4, 8, 0, 0, 1, tzinfo=UTC)


def test_a_label_lead_sends_labels_earlier_and_keeps_their_label_time():
    records = list(schedule(ITEMS, label_lead=timedelta(seconds=2)))
    assert describe(records) == describe(schedule(ITEMS))  # no record of ITEMS is within 2 s
    labels = [r for r in records if r.topic == LABELS]
    assert [r.time for r in labels] == [
        datetime(2018, 4, 7, 23, 59, 58, tzinfo=UTC),
        datetime(2018, 4, 7, 23, 59, 58, tzinfo=UTC),
        datetime(2018, 4, 14, 23, 59, 58, tzinfo=UTC),
        datetime(2018, 4, 14, 23, 59, 59, tzinfo=UTC),
    ]
    assert [orjson.loads(r.value)["label_time"] for r in labels] == [
        "2018-04-08T00:00:00+00:00",
        "2018-04-08T00:00:00+00:00",
        "2018-04-15T00:00:00+00:00",
        "2018-04-15T00:00:01+00:00",
    ]
    # A's label due at 04-08 00:00:02 comes after E (00:00:01); sent 2 s early, before it
    items = [
        LabelledTransaction(A, 1),
        LabelledTransaction(tx("e", "2018-04-08T00:00:01Z", "c", "t"), 0),
    ]
    delay = timedelta(days=7, seconds=2)
    assert describe(schedule(items, label_delay=delay))[1:3] == [
        (TRANSACTIONS, "c", "e"),
        (LABELS, "t1", "a"),
    ]
    assert describe(schedule(items, label_delay=delay, label_lead=timedelta(seconds=2)))[1:3] == [
        (LABELS, "t1", "a"),
        (TRANSACTIONS, "c", "e"),
    ]


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="not in event-time order"):
        list(schedule([(C, 0), (A, 0)]))
    with pytest.raises(ValueError, match="no UTC offset"):
        list(schedule([(tx("x", "2018-04-01T00:00:00", "c", "t"), 0)]))
    with pytest.raises(ValueError, match="negative"):
        list(schedule(ITEMS, label_delay=timedelta(seconds=-1)))
    with pytest.raises(ValueError, match="label_lead must be between"):
        list(schedule(ITEMS, label_delay=timedelta(hours=1), label_lead=timedelta(hours=2)))


def test_schedule_is_lazy():
    """Records come out while the input is still being read (bounded memory)."""
    pulled = []

    def source():
        for item in ITEMS:
            pulled.append(item[0]["event_id"])
            yield item

    stream = schedule(source())
    next(stream)
    assert pulled == ["a"]


def test_rfc3339_utc():
    assert rfc3339_utc([0, 1522540831]) == [
        "1970-01-01T00:00:00+00:00",
        "2018-04-01T00:00:31+00:00",
    ]
