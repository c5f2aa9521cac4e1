"""Customer and terminal state: handbook window definitions with exact expected values."""

from datetime import UTC, datetime

import pytest

from stream_app.features.definitions import FEATURE_NAMES, event_features
from stream_app.features.state import CustomerState, Retention, TerminalState

DAY = 86_400.0
T0 = datetime(2018, 4, 2, tzinfo=UTC).timestamp()  # a Monday, midnight
RET = Retention.for_lateness(0.0)


def test_handbook_feature_names_and_order():
    assert FEATURE_NAMES[:5] == (
        "TX_AMOUNT",
        "TX_DURING_WEEKEND",
        "TX_DURING_NIGHT",
        "CUSTOMER_ID_NB_TX_1DAY_WINDOW",
        "CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW",
    )
    assert FEATURE_NAMES[-1] == "TERMINAL_ID_RISK_30DAY_WINDOW"
    assert len(FEATURE_NAMES) == 15
    assert RET.customer_s == 30 * DAY and RET.terminal_s == 37 * DAY


def test_event_features_weekend_and_night():
    assert event_features(12.5, T0 + 6 * 3600) == {
        "TX_AMOUNT": 12.5,
        "TX_DURING_WEEKEND": 0.0,
        "TX_DURING_NIGHT": 1.0,
    }
    saturday_7am = T0 + 5 * DAY + 7 * 3600
    assert event_features(1.0, saturday_7am) == {
        "TX_AMOUNT": 1.0,
        "TX_DURING_WEEKEND": 1.0,
        "TX_DURING_NIGHT": 0.0,
    }


def test_customer_windows_include_current_event_and_exclude_start():
    state = CustomerState()
    events = [(T0, 10.0), (T0 + 0.5 * DAY, 20.0), (T0 + DAY, 30.0), (T0 + 8 * DAY, 40.0)]
    for offset, (ts, amount) in enumerate(events):
        assert state.apply(ts, amount, offset, RET.customer_s)
    f = state.features(T0 + DAY)  # as seen by the third event
    assert f["CUSTOMER_ID_NB_TX_1DAY_WINDOW"] == 2.0  # (T0, T0+1d]: excludes T0 exactly
    assert f["CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW"] == 25.0
    assert f["CUSTOMER_ID_NB_TX_7DAY_WINDOW"] == 3.0
    assert f["CUSTOMER_ID_AVG_AMOUNT_7DAY_WINDOW"] == 20.0
    g = state.features(T0 + 8 * DAY)
    assert g["CUSTOMER_ID_NB_TX_1DAY_WINDOW"] == 1.0
    assert g["CUSTOMER_ID_NB_TX_7DAY_WINDOW"] == 1.0  # (T0+1d, T0+8d]
    assert g["CUSTOMER_ID_NB_TX_30DAY_WINDOW"] == 4.0
    assert g["CUSTOMER_ID_AVG_AMOUNT_30DAY_WINDOW"] == 25.0


def test_customer_replayed_offset_is_not_counted_twice():
    state = CustomerState()
    assert state.apply(T0, 10.0, 5, RET.customer_s)
    assert not state.apply(T0, 10.0, 5, RET.customer_s)
    assert not state.apply(T0, 10.0, 3, RET.customer_s)
    assert state.seen(5) and not state.seen(6)
    assert state.features(T0)["CUSTOMER_ID_NB_TX_1DAY_WINDOW"] == 1.0


def test_customer_state_evicts_beyond_retention():
    state = CustomerState()
    state.apply(T0, 1.0, 0, RET.customer_s)
    state.apply(T0 + 30 * DAY, 2.0, 1, RET.customer_s)  # T0 is exactly 30 days back: evicted
    assert state.value["t"] == [T0 + 30 * DAY]
    state.apply(T0 + 31 * DAY, 3.0, 2, RET.customer_s)
    assert len(state.value["t"]) == 2


def test_terminal_risk_uses_delayed_window_and_labels():
    state = TerminalState()
    # Transactions at day 0, 1, 2; day-1 one is fraud.
    for offset, (day, eid) in enumerate([(0, "a"), (1, "b"), (2, "c")]):
        state.apply(T0 + day * DAY, eid, offset, RET.terminal_s)
    assert state.apply_label(T0 + DAY, "b", 1)
    assert not state.apply_label(T0 + DAY, "zzz", 0)  # unknown genuine label: no effect
    f = state.features(T0 + 9 * DAY)  # window end at day 2
    assert f["TERMINAL_ID_NB_TX_1DAY_WINDOW"] == 1.0  # (day 1, day 2]: c
    assert f["TERMINAL_ID_RISK_1DAY_WINDOW"] == 0.0
    assert f["TERMINAL_ID_NB_TX_7DAY_WINDOW"] == 3.0
    assert f["TERMINAL_ID_RISK_7DAY_WINDOW"] == pytest.approx(1 / 3, abs=0)
    empty = state.features(T0 + 100 * DAY)
    assert empty["TERMINAL_ID_NB_TX_30DAY_WINDOW"] == 0.0
    assert empty["TERMINAL_ID_RISK_30DAY_WINDOW"] == 0.0


def test_fraud_label_before_its_transaction_is_kept_pending():
    state = TerminalState()
    assert not state.apply_label(T0, "x", 1)
    assert state.value["p"] == {"x": T0}
    state.apply(T0, "x", 0, RET.terminal_s)
    assert state.value["p"] == {}
    assert state.value["f"] == [1.0]
    assert state.features(T0 + 7.5 * DAY)["TERMINAL_ID_RISK_1DAY_WINDOW"] == 1.0


def test_terminal_eviction_keeps_ids_aligned():
    state = TerminalState()
    state.apply(T0, "old", 0, RET.terminal_s)
    state.apply(T0 + 40 * DAY, "new", 1, RET.terminal_s)
    assert state.value["i"] == ["new"] and state.value["t"] == [T0 + 40 * DAY]


# --- a replayed event (read again before its offset was committed) ------------------------------

C1, A1, C7, A7, C30, A30 = (
    f"CUSTOMER_ID_{kind}_{w}DAY_WINDOW" for w in (1, 7, 30) for kind in ("NB_TX", "AVG_AMOUNT")
)


def customer(events, lateness_s=0.0):
    """A customer state with ``events`` (time, amount, event id) applied at offsets 0, 1, ..."""
    state = CustomerState()
    for offset, (ts, amount, eid) in enumerate(events):
        assert state.apply(ts, amount, offset, RET.customer_s + lateness_s, eid)
    return state


def test_replayed_event_leaves_out_a_later_event_at_its_second():
    events = [(T0 - 2 * DAY, 100.0, "e0"), (T0 + 3600, 10.0, "e1"), (T0 + 3600, 30.0, "e2")]
    first = customer(events[:2]).features(T0 + 3600)  # e1 as first applied
    state = customer([*events, (T0 + 7200, 50.0, "e3")])
    replayed = state.replayed_features(T0 + 3600, "e1")
    assert replayed == first == {C1: 1.0, A1: 10.0, C7: 2.0, A7: 55.0, C30: 2.0, A30: 55.0}
    # What a replay read before the fix: the state as it stands counts e2 in e1's windows.
    assert state.features(T0 + 3600)[C1] == 2.0
    assert state.replayed_features(T0 + 3600, "e2") == {
        C1: 2.0, A1: 20.0, C7: 3.0, A7: 140 / 3, C30: 3.0, A30: 140 / 3,
    }  # fmt: skip
    assert state.replayed_features(T0 + 7200, "e3") == state.features(T0 + 7200)


def test_replayed_events_among_several_ties_count_only_the_ties_before_them():
    tied = [(T0 + 3600, 10.0 * k, f"e{k}") for k in (1, 2, 3, 4)]
    state = customer([(T0 + 60, 6.0, "e0"), *tied, (T0 + 3601, 1000.0, "e5")])
    got = [state.replayed_features(T0 + 3600, f"e{k}") for k in (1, 2, 3, 4)]
    assert [g[C1] for g in got] == [2.0, 3.0, 4.0, 5.0]
    assert [g[A1] for g in got] == [8.0, 12.0, 16.5, 21.2]  # (6 + 10 + ... + 10k) / (k + 1)
    assert all(g[C30] == g[C1] and g[A30] == g[A1] for g in got)
    for k in (1, 2, 3, 4):  # each as it was first applied
        assert got[k - 1] == customer([(T0 + 60, 6.0, "e0"), *tied[:k]]).features(T0 + 3600)


def test_replayed_event_leaves_out_late_events_applied_after_it():
    lateness = 3600.0
    state = customer(
        [
            (T0 + 7200, 10.0, "a"),
            (T0 + 3600, 20.0, "b"),  # an hour late: placed before a
            (T0 + 7200, 40.0, "c"),  # at a's second, after it
        ],
        lateness,
    )
    assert state.value["t"] == [T0 + 3600, T0 + 7200, T0 + 7200]
    assert state.value["q"] == [1, 0, 2]  # b, applied second, sits first: its number tells
    assert state.replayed_features(T0 + 7200, "a") == {
        C1: 1.0, A1: 10.0, C7: 1.0, A7: 10.0, C30: 1.0, A30: 10.0,
    }  # fmt: skip
    assert state.replayed_features(T0 + 3600, "b") == {
        C1: 1.0, A1: 20.0, C7: 1.0, A7: 20.0, C30: 1.0, A30: 20.0,
    }  # fmt: skip
    assert state.replayed_features(T0 + 7200, "c") == state.features(T0 + 7200)
    assert state.features(T0 + 7200)[C1] == 3.0 and state.features(T0 + 7200)[A1] == 70 / 3


def test_late_samples_are_evicted_with_their_numbers():
    state = customer([(T0 + 7200, 10.0, "a"), (T0 + 3600, 20.0, "b")], 3600.0)
    assert state.value["q"] == [1, 0]
    state.apply(T0 + 7200 + 30 * DAY, 1.0, 2, RET.customer_s + 3600.0, "d")  # evicts b
    assert state.value["t"] == [T0 + 7200, T0 + 7200 + 30 * DAY]
    assert state.value["q"] == [0, 2] and state.value["n"] == 3
    assert state.value["i"] == ["a", "d"]


def test_in_order_samples_cost_no_extra_state_bytes():
    state = customer([(T0, 1.0, "a"), (T0, 2.0, "b"), (T0 + 1, 3.0, "c")])
    assert set(state.value) == {"t", "a", "i", "q", "n", "o"}
    assert state.value["o"] == {"0": 2}


def test_replay_on_a_state_without_the_event_id_falls_back_to_the_caller():
    old = {"t": [T0, T0], "a": [1.0, 2.0], "o": 1}  # JSON written before ids were kept
    state = CustomerState(old)
    assert state.replayed_features(T0, "x") is None
    assert state.features(T0)[C1] == 2.0  # and it still loads and scores as before
    assert customer([(T0, 1.0, "a")]).replayed_features(T0 + 1, "a") is None


# --- records dead-lettered by a decision on the state (duplicate, too late) ----------------------


def test_a_dead_lettered_offset_is_remembered_with_its_reason_and_the_newest_time():
    state = customer([(T0, 1.0, "a"), (T0 + 60, 2.0, "b")])
    state.record_dead_letter(2, "duplicate_event")
    state.record_dead_letter(3, "too_late")
    state.record_dead_letter(2, "duplicate_event")  # decided again (re-read): kept once
    assert state.value["d"] == [[0, 2, "duplicate_event", T0 + 60], [0, 3, "too_late", T0 + 60]]
    assert state.dead_lettered(2) == ("duplicate_event", T0 + 60)
    assert state.dead_lettered(3) == ("too_late", T0 + 60)
    assert state.dead_lettered(1) is None and state.dead_lettered(4) is None
    state.record_dead_letter(-1, "too_late")  # no source offset: nothing to recognise it by
    assert len(state.value["d"]) == 2
    assert state.value["t"] == [T0, T0 + 60] and state.value["o"] == {"0": 1}  # samples untouched


def test_dead_letters_kept_are_bounded_by_count_oldest_dropped():
    state = customer([(T0, 1.0, "a")])
    for offset in range(1, 41):
        state.record_dead_letter(offset, "duplicate_event")
    kept = CustomerState.DEAD_LETTERS_KEPT
    assert [entry[1] for entry in state.value["d"]] == list(range(41 - kept, 41))
    assert state.dead_lettered(40 - kept) is None and state.dead_lettered(41 - kept) is not None


def test_dead_letters_are_forgotten_past_the_retention_and_the_key_goes_with_them():
    state = customer([(T0, 1.0, "a")])
    state.record_dead_letter(1, "too_late")  # decided when the newest event was at T0
    state.apply(T0 + 10 * DAY, 1.0, 2, RET.customer_s, "b")
    state.record_dead_letter(3, "duplicate_event")  # newest at T0 + 10 days
    state.apply(T0 + 30 * DAY, 1.0, 4, RET.customer_s, "c")  # evicts T0: the first goes with it
    assert state.value["t"] == [T0 + 10 * DAY, T0 + 30 * DAY]
    assert state.value["d"] == [[0, 3, "duplicate_event", T0 + 10 * DAY]]
    state.apply(T0 + 40 * DAY, 1.0, 5, RET.customer_s, "e")  # evicts T0 + 10 days
    assert "d" not in state.value  # no bytes spent once none is held
    assert set(state.value) == {"t", "a", "i", "q", "n", "o"}
    assert state.dead_lettered(3) is None


def test_states_without_dead_letters_load_and_gain_no_key():
    old = {"t": [T0, T0 + 1], "a": [1.0, 2.0], "i": ["a", "b"], "o": 1}  # JSON, before 'd'
    state = CustomerState(old)
    assert state.dead_lettered(0) is None and state.dead_lettered(1) is None
    assert state.seen(1) and not state.seen(2)  # the earlier offset holds for the partition
    assert state.apply(T0 + 2, 3.0, 2, RET.customer_s, "c")
    assert set(state.value) == {"t", "a", "i", "q", "n", "o"}
    assert state.value["o"] == {"0": 2}
    older = CustomerState({"t": [T0], "a": [1.0], "o": 0})  # written before ids were kept
    assert older.dead_lettered(0) is None
    older.record_dead_letter(1, "too_late")
    assert older.dead_lettered(1) == ("too_late", T0)
