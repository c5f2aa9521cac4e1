"""``stream-app features`` writes the offline feature rows of a handbook-format CSV."""

import pandas as pd
from typer.testing import CliRunner

from stream_app.cli.main import app
from stream_app.features.definitions import FEATURE_NAMES

HEADER = (
    "TRANSACTION_ID,TX_DATETIME,CUSTOMER_ID,TERMINAL_ID,TX_AMOUNT,TX_TIME_SECONDS,"
    "TX_TIME_DAYS,TX_FRAUD,TX_FRAUD_SCENARIO\n"
)
CSV = (
    HEADER
    + """0,2018-04-01 00:00:31,596,3156,57.16,31,0,0,0
1,2018-04-01 12:00:00,596,3156,20.00,43200,0,1,1
2,2018-04-07 08:00:00,4961,3156,10.00,547200,6,0,0
3,2018-04-09 08:00:00,596,3156,30.00,720000,8,0,0
"""
)


def test_features_export(tmp_path):
    src = tmp_path / "tx.csv"
    src.write_text(CSV)
    out = tmp_path / "f.parquet"
    result = CliRunner().invoke(app, ["features", "--csv", str(src), "--out", str(out)])
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    assert list(frame.columns) == [
        "event_id",
        "event_time",
        "customer_id",
        "terminal_id",
        *FEATURE_NAMES,
        "label",
    ]
    assert frame.event_id.tolist() == ["0", "1", "2", "3"]
    last = frame.iloc[3]
    assert last.CUSTOMER_ID_NB_TX_30DAY_WINDOW == 3.0
    assert last.CUSTOMER_ID_AVG_AMOUNT_30DAY_WINDOW == (57.16 + 20.0 + 30.0) / 3
    assert last.CUSTOMER_ID_NB_TX_7DAY_WINDOW == 1.0  # (04-02 08:00, 04-09 08:00]
    # Terminal window for 04-09 08:00 with 7-day delay: (04-01 08:00, 04-02 08:00] over 1 day
    assert last.TERMINAL_ID_NB_TX_1DAY_WINDOW == 1.0  # the 04-01 12:00 transaction
    assert last.TERMINAL_ID_RISK_1DAY_WINDOW == 1.0  # labelled fraud, known on 04-08 12:00
    assert frame.label.tolist() == [0, 1, 0, 0]
