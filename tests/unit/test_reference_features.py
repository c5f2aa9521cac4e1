"""The pandas reference (tests/reference_features.py) against values worked out by hand.

Six transactions, two customers, three terminals, ten days (2018-04-02 .. 2018-04-11), one fraud.
The event times put samples exactly on window edges: windows are ``(start, end]``.

    id  time (UTC)            customer terminal amount fraud  notes
    0   Mon 04-02 10:00:00    C1       T1       10.0   1
    1   Mon 04-02 12:00:00    C2       T2       20.0   0
    2   Tue 04-03 03:00:00    C1       T1       30.0   0      night
    3   Sat 04-07 10:00:00    C1       T3       40.0   0      weekend
    4   Mon 04-09 10:00:00    C1       T1       50.0   0      t - 7 d = tx 0's time exactly
    5   Wed 04-11 03:00:00    C2       T1       60.0   0      night; t - 8 d = tx 2's time
"""

import numpy as np
import pandas as pd
import pytest

from stream_app.features.definitions import FEATURE_NAMES
from stream_app.features.offline import TransactionBatch, build_features
from tests.reference_features import reference_features

ROWS = [
    (0, "2018-04-02 10:00:00", "C1", "T1", 10.0, 1),
    (1, "2018-04-02 12:00:00", "C2", "T2", 20.0, 0),
    (2, "2018-04-03 03:00:00", "C1", "T1", 30.0, 0),
    (3, "2018-04-07 10:00:00", "C1", "T3", 40.0, 0),
    (4, "2018-04-09 10:00:00", "C1", "T1", 50.0, 0),
    (5, "2018-04-11 03:00:00", "C2", "T1", 60.0, 0),
]

# Hand-computed, row by row: (feature, row) -> value.
EXPECTED = {
    # event features
    ("TX_DURING_WEEKEND", 3): 1.0,
    ("TX_DURING_WEEKEND", 4): 0.0,
    ("TX_DURING_NIGHT", 2): 1.0,
    ("TX_DURING_NIGHT", 5): 1.0,
    ("TX_DURING_NIGHT", 0): 0.0,
    # C1 at tx 2: 1-day window (04-02 03:00, 04-03 03:00] holds tx 0 and tx 2
    ("CUSTOMER_ID_NB_TX_1DAY_WINDOW", 2): 2.0,
    ("CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW", 2): 20.0,
    # C1 at tx 4: 1 day holds only tx 4
    ("CUSTOMER_ID_NB_TX_1DAY_WINDOW", 4): 1.0,
    ("CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW", 4): 50.0,
    # C1 at tx 4: 7 days = (04-02 10:00, 04-09 10:00]: tx 0 sits on the open left edge -> out
    ("CUSTOMER_ID_NB_TX_7DAY_WINDOW", 4): 3.0,
    ("CUSTOMER_ID_AVG_AMOUNT_7DAY_WINDOW", 4): 40.0,
    # C1 at tx 4: 30 days hold tx 0, 2, 3, 4
    ("CUSTOMER_ID_NB_TX_30DAY_WINDOW", 4): 4.0,
    ("CUSTOMER_ID_AVG_AMOUNT_30DAY_WINDOW", 4): 32.5,
    # C2 at tx 5: 7 days hold only tx 5; 30 days hold tx 1 and 5
    ("CUSTOMER_ID_NB_TX_7DAY_WINDOW", 5): 1.0,
    ("CUSTOMER_ID_AVG_AMOUNT_7DAY_WINDOW", 5): 60.0,
    ("CUSTOMER_ID_NB_TX_30DAY_WINDOW", 5): 2.0,
    ("CUSTOMER_ID_AVG_AMOUNT_30DAY_WINDOW", 5): 40.0,
    # T1 at tx 2: (03-26 03:00, 03-27 03:00] is empty -> count 0, risk 0 (not NaN)
    ("TERMINAL_ID_NB_TX_1DAY_WINDOW", 2): 0.0,
    ("TERMINAL_ID_RISK_1DAY_WINDOW", 2): 0.0,
    ("TERMINAL_ID_RISK_30DAY_WINDOW", 2): 0.0,
    # T1 at tx 4: (04-01 10:00, 04-02 10:00] holds the fraud tx 0 on its closed right edge
    ("TERMINAL_ID_NB_TX_1DAY_WINDOW", 4): 1.0,
    ("TERMINAL_ID_RISK_1DAY_WINDOW", 4): 1.0,
    ("TERMINAL_ID_NB_TX_7DAY_WINDOW", 4): 1.0,
    ("TERMINAL_ID_RISK_7DAY_WINDOW", 4): 1.0,
    # T1 at tx 5: 1 day = (04-03 03:00, 04-04 03:00]: tx 2 on the open left edge -> empty
    ("TERMINAL_ID_NB_TX_1DAY_WINDOW", 5): 0.0,
    ("TERMINAL_ID_RISK_1DAY_WINDOW", 5): 0.0,
    # T1 at tx 5: 7 and 30 days end 04-04 03:00 and hold tx 0 (fraud) and tx 2; tx 4 is too new
    ("TERMINAL_ID_NB_TX_7DAY_WINDOW", 5): 2.0,
    ("TERMINAL_ID_RISK_7DAY_WINDOW", 5): 0.5,
    ("TERMINAL_ID_NB_TX_30DAY_WINDOW", 5): 2.0,
    ("TERMINAL_ID_RISK_30DAY_WINDOW", 5): 0.5,
    # T3 at tx 3: no history
    ("TERMINAL_ID_NB_TX_30DAY_WINDOW", 3): 0.0,
}


@pytest.fixture
def frame() -> pd.DataFrame:
    df = pd.DataFrame(
        ROWS,
        columns=[
            "TRANSACTION_ID",
            "TX_DATETIME",
            "CUSTOMER_ID",
            "TERMINAL_ID",
            "TX_AMOUNT",
            "TX_FRAUD",
        ],
    )
    df["TX_DATETIME"] = pd.to_datetime(df.TX_DATETIME, format="%Y-%m-%d %H:%M:%S")
    return df


def test_reference_gives_the_hand_computed_values(frame):
    ref = reference_features(frame)
    assert list(ref.columns) == list(FEATURE_NAMES)
    assert not ref.isna().to_numpy().any()
    for (name, row), value in EXPECTED.items():
        assert ref.loc[row, name] == pytest.approx(value, abs=1e-12), (name, row)
    assert ref.TX_AMOUNT.tolist() == [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]


def test_reference_weekend_and_night_for_every_row(frame):
    ref = reference_features(frame)
    assert ref.TX_DURING_WEEKEND.tolist() == [0.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    assert ref.TX_DURING_NIGHT.tolist() == [0.0, 0.0, 1.0, 0.0, 0.0, 1.0]


def test_offline_builder_agrees_with_the_reference_on_the_frame(frame):
    ts = frame.TX_DATETIME.to_numpy(dtype="datetime64[s]").astype(np.int64).astype(np.float64)
    batch = TransactionBatch(
        frame.TRANSACTION_ID.astype(str).tolist(),
        ts,
        frame.CUSTOMER_ID.tolist(),
        frame.TERMINAL_ID.tolist(),
        frame.TX_AMOUNT.to_numpy(dtype=np.float64),
        frame.TX_FRAUD.to_numpy(dtype=np.int64),
    )
    built = build_features(batch)
    ref = reference_features(frame)[list(FEATURE_NAMES)].to_numpy()
    np.testing.assert_allclose(built, ref, rtol=0, atol=1e-12)
