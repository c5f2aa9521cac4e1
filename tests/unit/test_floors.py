"""Replay floors (stream_app.pipeline.floors) and what the states evict relative to them."""

from __future__ import annotations

from typing import NamedTuple

from stream_app.features.state import CustomerState
from stream_app.pipeline.floors import CommitFloors
from stream_app.pipeline.forward import FORWARDED_FEATURES, decode_forward, encode_forward

INF = float("inf")


class TP(NamedTuple):
    topic: str
    partition: int


def test_the_floor_is_the_value_marked_at_or_below_the_committed_offset():
    floors = CommitFloors()
    assert floors.floor("t", 0) == -INF and not floors.active("t", 0)
    floors.advance("t", 0, 10, 100.0)
    floors.advance("t", 0, 20, 90.0)  # a lower batch maximum: the running maximum stays 100
    floors.advance("t", 0, 30, 300.0)
    assert floors.active("t", 0) and floors.floor("t", 0) == -INF  # nothing committed yet
    floors.committed({TP("t", 0): 25})  # records from 25 on were taken after the mark at 20
    assert floors.floor("t", 0) == 100.0
    floors.committed({TP("t", 0): 25})  # the same commit again changes nothing
    assert floors.floor("t", 0) == 100.0
    floors.committed({TP("t", 0): 30, TP("other", 0): 99})
    assert floors.floor("t", 0) == 300.0 and floors.floor("other", 0) == -INF


def test_a_partition_floor_is_the_least_over_its_active_topics():
    floors = CommitFloors()
    floors.advance("tx", 1, 5, 50.0)
    floors.committed({TP("tx", 1): 5})
    assert floors.partition_floor(1) == 50.0
    floors.advance("rerouted", 1, 2, 70.0)  # taken, not committed: it holds the floor at -inf
    assert floors.partition_floor(1) == -INF
    floors.committed({TP("rerouted", 1): 2})
    assert floors.partition_floor(1) == 50.0
    assert floors.partition_floor(0) == -INF  # nothing taken there


def test_a_reset_forgets_floors_and_running_maxima():
    floors = CommitFloors()
    floors.advance("t", 0, 10, 500.0)
    floors.committed({TP("t", 0): 10})
    floors.reset()
    assert floors.floor("t", 0) == -INF
    floors.advance("t", 0, 4, 200.0)  # read again from the commit: a running max from scratch
    floors.committed({TP("t", 0): 4})
    assert floors.floor("t", 0) == 200.0


def test_a_customer_state_evicts_relative_to_its_horizon():
    day = 86_400.0
    state = CustomerState()
    for i, ts in enumerate([0.0, 10 * day, 20 * day, 45 * day]):
        state.apply(ts, 1.0, i, 30 * day, f"e{i}", horizon_end=15 * day)
    assert state.value["t"] == [0.0, 10 * day, 20 * day, 45 * day]  # nothing before -15 days
    state.apply(46 * day, 1.0, 4, 30 * day, "e4", horizon_end=41 * day)
    assert state.value["t"] == [20 * day, 45 * day, 46 * day]
    state.apply(47 * day, 1.0, 5, 30 * day, "e5", horizon_end=-INF)  # before a commit: none
    assert len(state.value["t"]) == 4
    state.apply(48 * day, 1.0, 6, 30 * day, "e6")  # no horizon: from the newest sample
    assert state.value["t"] == [20 * day, 45 * day, 46 * day, 47 * day, 48 * day]
    state.apply(51 * day, 1.0, 7, 30 * day, "e7")  # 21 days: the sample at 20 goes
    assert state.value["t"][0] == 45 * day


def test_a_forward_carries_its_floor_and_one_of_version_1_still_decodes():
    features = [0.5] * len(FORWARDED_FEATURES)
    args = ("e", "2018-04-01T00:00:00Z", 1.5, "c", "t", 0.0, 2, 7, features)
    assert decode_forward(encode_forward(*args, 1234.5)).floor == 1234.5
    assert decode_forward(encode_forward(*args, -INF)).floor is None  # no commit yet
    assert decode_forward(encode_forward(*args)).floor is None
    v1 = (
        b'[1,"e","2018-04-01T00:00:00Z",1.5,"c","t",0.0,2,7,['
        + b",".join([b"0.5"] * len(FORWARDED_FEATURES))
        + b"]]"
    )
    old = decode_forward(v1)
    assert (old.event_id, old.source_offset, old.floor) == ("e", 7, None)
