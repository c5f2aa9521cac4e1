"""The entity states' bytes (stream_app.features.state): exact layout, round trips, states
written by earlier code, and the forwards' codec (stream_app.pipeline.forward)."""

from __future__ import annotations

import random
import struct

import orjson
import pytest

from stream_app.features.state import (
    CustomerState,
    TerminalState,
    decode_state,
    source_id,
    state_view,
)
from stream_app.pipeline.forward import (
    FORWARDED_FEATURES,
    ForwardError,
    decode_forward,
    encode_forward,
    forward_view,
)

DAY = 86_400.0
T0 = 1_522_540_800.0  # 2018-04-01


def test_customer_bytes_are_header_arrays_tail_and_ids():
    state = CustomerState()
    state.apply(T0, 12.5, 7, 30 * DAY, "e1", source=source_id(3))
    state.apply(T0 + 60, 1.0, 8, 30 * DAY, "e2", source=source_id(3))
    raw = state.encode()
    tail = b'{"o":{"3":8}}'
    # flag 1: applied in the order they sit, so the application numbers are 0, 1: only 0 is kept
    assert raw[:16] == struct.pack("<2sBBIII", b"SC", 1, 1, 2, 2, len(tail))
    assert raw[16:32] == struct.pack("<2d", T0, T0 + 60)
    assert raw[32:48] == struct.pack("<2d", 12.5, 1.0)
    assert raw[48:52] == struct.pack("<I", 0)
    assert raw[52:] == tail + b"e1\x1fe2"
    state.apply(T0 + 30, 3.0, 9, 30 * DAY, "late", source=source_id(3))  # placed between them
    raw = state.encode()
    assert raw[3] == 0  # no longer in order: every number kept
    assert raw[16 + 48 : 16 + 60] == struct.pack("<3I", 0, 2, 1)


def test_terminal_bytes_are_header_arrays_tail_and_ids():
    state = TerminalState()
    state.apply(T0, "a", 0, 37 * DAY, source=source_id(1))
    state.apply_label(T0, "a", 1)
    state.apply_label(T0 + 5, "later", 1)  # pending
    raw = state.encode()
    tail = b'{"o":{"1":0},"p":{"later":1522540805.0}}'
    assert raw[:12] == struct.pack("<2sBBII", b"ST", 1, 0, 1, len(tail))
    assert raw[12:20] == struct.pack("<d", T0)
    assert raw[20:21] == b"\x01"
    assert raw[21:] == tail + b"a"


def random_customer(rng: random.Random) -> CustomerState:
    state = CustomerState()
    ts = T0
    for offset in range(rng.randint(0, 60)):
        ts += rng.choice([0.0, 1.0, 3600.0, 5 * DAY])
        late = rng.random() < 0.1
        state.apply(
            ts - (rng.randint(1, 3000) if late else 0),
            round(rng.uniform(0, 500), 2),
            offset,
            30 * DAY + 3600,
            rng.choice([f"e{offset}", None]),
            source=rng.choice([0, 1, source_id(2, 1)]),
        )
        if rng.random() < 0.1:
            state.record_dead_letter(offset + 1000, "duplicate_event", 0)
    return state


@pytest.mark.parametrize("seed", range(20))
def test_customer_round_trip_is_exact(seed):
    state = random_customer(random.Random(seed))
    again = CustomerState.decode(state.encode())
    assert again.value == state.value
    assert again.encode() == state.encode()
    ts = state.newest or T0
    assert again.feature_values(ts) == state.feature_values(ts)


@pytest.mark.parametrize("seed", range(20))
def test_terminal_round_trip_is_exact(seed):
    rng = random.Random(seed)
    state = TerminalState()
    ts = T0
    for offset in range(rng.randint(0, 60)):
        ts += rng.choice([0.0, 60.0, DAY])
        state.apply(ts, f"e{offset}", offset, 37 * DAY, source=rng.choice([0, 4]))
        if rng.random() < 0.3:
            state.apply_label(ts, f"e{offset}", rng.choice([0, 1]))
        if rng.random() < 0.2:
            state.apply_label(ts + 1, f"future{offset}", 1)
    again = TerminalState.decode(state.encode())
    assert again.value == state.value
    assert again.encode() == state.encode()
    assert again.feature_values(ts + 8 * DAY) == state.feature_values(ts + 8 * DAY)


def test_a_json_state_of_earlier_code_loads_and_keeps_its_offset_for_any_partition():
    legacy = {
        "t": [T0, T0 + 60],
        "a": [5.0, 7.0],
        "i": ["a", "b"],
        "o": 41,
        "l": [[T0, "a", 40]],
        "d": [[39, "too_late", T0]],
    }
    state = decode_state(orjson.dumps(legacy), CustomerState)
    assert isinstance(state, CustomerState)
    assert state.seen(41, source_id(2)) and not state.seen(42, source_id(2))
    assert state.dead_lettered(39, source_id(5)) == ("too_late", T0)
    assert state.feature_values(T0 + 60)[:2] == [2.0, 6.0]
    state.apply(T0 + 120, 1.0, 42, 30 * DAY, "c", source=source_id(2))
    assert state.value["o"] == {"2": 42}  # from now on per source
    assert state_view(state.encode(), CustomerState)["t"] == [T0, T0 + 60, T0 + 120]
    terminal = decode_state(
        {"t": [T0], "f": [1.0], "i": ["x"], "o": 3, "p": {"y": T0 + 1}}, TerminalState
    )
    assert terminal.value == {
        "t": [T0],
        "f": [1.0],
        "i": ["x"],
        "o": {"-1": 3},
        "p": {"y": T0 + 1},
    }


def test_an_unknown_state_version_is_refused():
    raw = bytearray(CustomerState().encode())
    raw[2] = 9
    with pytest.raises(ValueError, match="version 9"):
        CustomerState.decode(bytes(raw))


def test_offsets_of_two_sources_are_not_compared():
    state = CustomerState()
    assert state.apply(T0, 1.0, 100, 30 * DAY, "a", source=source_id(0))
    assert not state.seen(5, source_id(1))  # another partition: its offsets are its own
    assert state.apply(T0 + 1, 1.0, 5, 30 * DAY, "b", source=source_id(1))
    assert state.seen(100, source_id(0)) and state.seen(5, source_id(1))


def test_forward_round_trip_and_view():
    features = [float(i) for i in range(len(FORWARDED_FEATURES))]
    raw = encode_forward("e1", "2018-04-01T00:00:00Z", T0, "c1", "t1", 1000.0, 3, 77, features)
    fwd = decode_forward(raw)
    assert (fwd.event_id, fwd.ts, fwd.terminal_id, fwd.source_partition, fwd.source_offset) == (
        "e1",
        T0,
        "t1",
        3,
        77,
    )
    assert fwd.features == features
    view = forward_view(raw)
    assert view["features"]["TX_AMOUNT"] == 0.0
    assert list(view["features"]) == list(FORWARDED_FEATURES)


def test_a_forward_written_by_earlier_code_still_decodes():
    old = orjson.dumps(
        {
            "event_id": "e1",
            "event_time": "2018-04-01T00:00:00Z",
            "ts": T0,
            "customer_id": "c",
            "terminal_id": "t",
            "amount": 3.0,
            "features": {name: 1.0 for name in FORWARDED_FEATURES},
            "arrived_ms": 5.0,
            "source": ["transactions", 2, 9],
        }
    )
    fwd = decode_forward(old)
    assert (fwd.source_partition, fwd.source_offset, fwd.features) == (2, 9, [1.0] * 9)


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"{broken", "not JSON"),
        (b"[2]", "version 2"),
        (b'"text"', "JSON str"),
        (b'{"event_id": "x"}', "without"),
    ],
)
def test_what_is_not_a_forward_says_why(raw, why):
    with pytest.raises(ForwardError, match=why):
        decode_forward(raw)
