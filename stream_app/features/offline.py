"""Features for a batch of transactions, computed by the same state classes the worker uses.

The builder walks the transactions in event-time order, exactly as the live worker would see
them: each label is applied at ``event_time + label_delay`` (before any transaction at that same
instant), each transaction updates its customer's and terminal's state, and the feature vector
is read from the state. Training (``stream-app train``) and broker-less replay call this; the live
worker calls the same ``CustomerState``/``TerminalState`` methods one event at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from stream_app.features.definitions import (
    DAY_S,
    FEATURE_NAMES,
    LABEL_DELAY_DAYS,
    event_feature_values,
)
from stream_app.features.state import CustomerState, Retention, TerminalState


@dataclass(frozen=True)
class TransactionBatch:
    """Column arrays of transactions sorted by event time (``ts`` in epoch seconds)."""

    event_id: Sequence[str]
    ts: npt.NDArray[np.float64]
    customer_id: Sequence[str]
    terminal_id: Sequence[str]
    amount: npt.NDArray[np.float64]
    label: npt.NDArray[np.int64] | None = None

    def __len__(self) -> int:
        return len(self.event_id)


def build_features(
    batch: TransactionBatch,
    names: Sequence[str] = FEATURE_NAMES,
    label_delay_days: float = LABEL_DELAY_DAYS,
    progress: bool = False,
) -> npt.NDArray[np.float64]:
    """The ``len(batch) x len(names)`` feature matrix, row i for transaction i.

    Labels (``batch.label``) become known ``label_delay_days`` after each transaction's time.
    """
    n = len(batch)
    if n and np.any(np.diff(batch.ts) < 0):
        raise ValueError("transactions must be sorted by event time")
    retention = Retention.for_lateness(0.0)
    customers: dict[str, CustomerState] = {}
    terminals: dict[str, TerminalState] = {}
    out = np.empty((n, len(names)), dtype=np.float64)
    columns = None if tuple(names) == FEATURE_NAMES else [FEATURE_NAMES.index(x) for x in names]
    delay = label_delay_days * DAY_S
    labels = batch.label
    ts_list = batch.ts.tolist()
    amounts = batch.amount.tolist()
    next_label = 0
    rows = range(n)
    if progress:
        from rich.progress import track

        rows = track(rows, description="Building features", total=n)  # type: ignore[assignment]
    for i in rows:
        t = ts_list[i]
        if labels is not None:
            while next_label < i and ts_list[next_label] + delay <= t:
                terminal = terminals[batch.terminal_id[next_label]]
                terminal.apply_label(
                    ts_list[next_label], batch.event_id[next_label], int(labels[next_label])
                )
                next_label += 1
        customer = customers.get(batch.customer_id[i]) or customers.setdefault(
            batch.customer_id[i], CustomerState()
        )
        terminal = terminals.get(batch.terminal_id[i]) or terminals.setdefault(
            batch.terminal_id[i], TerminalState()
        )
        customer.apply(t, amounts[i], -1, retention.customer_s)
        terminal.apply(t, batch.event_id[i], -1, retention.terminal_s)
        row = event_feature_values(amounts[i], t)
        row += customer.feature_values(t)
        row += terminal.feature_values(t)
        out[i] = row if columns is None else [row[c] for c in columns]
    return out
