"""The offline builder (shared state classes) equals an independent pandas computation."""

from datetime import UTC, datetime

import numpy as np
import pandas as pd

from stream_app.features.definitions import FEATURE_NAMES
from stream_app.features.offline import build_features
from stream_app.sources.schedule import batch_from_events
from stream_app.sources.simulator import simulate
from tests.reference_features import reference_features


def test_offline_features_equal_pandas_reference():
    events = list(
        simulate(
            n_customers=60, n_terminals=80, days=50, seed=11, start=datetime(2018, 4, 1, tzinfo=UTC)
        )
    )
    batch = batch_from_events(events)
    assert len(batch) > 3000 and batch.label.sum() > 10
    X = build_features(batch)
    df = pd.DataFrame(
        {
            "TRANSACTION_ID": batch.event_id,
            "TX_DATETIME": pd.to_datetime(batch.ts, unit="s"),
            "CUSTOMER_ID": batch.customer_id,
            "TERMINAL_ID": batch.terminal_id,
            "TX_AMOUNT": batch.amount,
            "TX_FRAUD": batch.label,
        }
    )
    ref = reference_features(df)[list(FEATURE_NAMES)].to_numpy()
    diff = np.abs(X - ref)
    worst = {name: float(diff[:, j].max()) for j, name in enumerate(FEATURE_NAMES)}
    assert all(v <= 1e-9 for v in worst.values()), worst
