"""An independent batch computation of the handbook features with pandas rolling windows.

Written from the dataset README's definitions, separately from stream_app.features, to check it:
customer windows are ``rolling('{w}D')`` over the customer's rows (current one included);
terminal windows are ``rolling('{d+w}D') - rolling('{d}D')`` over the terminal's rows, as in
the handbook's ``get_count_risk_rolling_window``.
"""

import numpy as np
import pandas as pd


def reference_features(df: pd.DataFrame, delay: int = 7, windows=(1, 7, 30)) -> pd.DataFrame:
    """df columns: TRANSACTION_ID, TX_DATETIME (datetime64), CUSTOMER_ID, TERMINAL_ID, TX_AMOUNT,
    TX_FRAUD; sorted by time. Returns the 15 features indexed like df."""
    out = pd.DataFrame(index=df.index)
    out["TX_AMOUNT"] = df.TX_AMOUNT.astype(float)
    out["TX_DURING_WEEKEND"] = (df.TX_DATETIME.dt.day_of_week >= 5).astype(float)
    out["TX_DURING_NIGHT"] = (df.TX_DATETIME.dt.hour <= 6).astype(float)
    for _name, group in df.groupby("CUSTOMER_ID", sort=False):
        g = group.set_index("TX_DATETIME")
        for w in windows:
            count = g.TX_AMOUNT.rolling(f"{w}D").count().to_numpy()
            total = g.TX_AMOUNT.rolling(f"{w}D").sum().to_numpy()
            out.loc[group.index, f"CUSTOMER_ID_NB_TX_{w}DAY_WINDOW"] = count
            out.loc[group.index, f"CUSTOMER_ID_AVG_AMOUNT_{w}DAY_WINDOW"] = total / count
    for _name, group in df.groupby("TERMINAL_ID", sort=False):
        g = group.set_index("TX_DATETIME")
        fraud_delay = g.TX_FRAUD.rolling(f"{delay}D").sum().to_numpy()
        tx_delay = g.TX_FRAUD.rolling(f"{delay}D").count().to_numpy()
        for w in windows:
            fraud_all = g.TX_FRAUD.rolling(f"{delay + w}D").sum().to_numpy()
            tx_all = g.TX_FRAUD.rolling(f"{delay + w}D").count().to_numpy()
            n = tx_all - tx_delay
            risk = np.divide(fraud_all - fraud_delay, n, out=np.zeros_like(n), where=n > 0)
            out.loc[group.index, f"TERMINAL_ID_NB_TX_{w}DAY_WINDOW"] = n
            out.loc[group.index, f"TERMINAL_ID_RISK_{w}DAY_WINDOW"] = risk
    return out
