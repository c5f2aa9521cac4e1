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
