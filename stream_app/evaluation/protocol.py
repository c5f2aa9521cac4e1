"""The handbook's evaluation protocol: train 7 days, skip a 7-day label delay, test 7 days.

Test days drop customers already known compromised: frauds in the training week, plus, for each
test day, frauds of the delay period up to that day minus the delay (exactly as the handbook's
``get_train_test_set``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from stream_app.features.definitions import DAY_S


@dataclass(frozen=True)
class Split:
    """Row indexes of the training and test sets, and each row's day number."""

    train: npt.NDArray[np.intp]
    test: npt.NDArray[np.intp]
    day: npt.NDArray[np.int64]


def day_numbers(ts: npt.NDArray[np.float64], origin: float) -> npt.NDArray[np.int64]:
    """Whole days since ``origin`` (epoch seconds) for each event time."""
    return np.floor((ts - origin) / DAY_S).astype(np.int64)


def train_test_split(
    ts: npt.NDArray[np.float64],
    customer: npt.ArrayLike,
    label: npt.ArrayLike,
    train_start: float,
    train_days: int = 7,
    delay_days: int = 7,
    test_days: int = 7,
) -> Split:
    """Indexes of the protocol's training week and its filtered test days."""
    cards = np.asarray(customer)
    labels = np.asarray(label)
    day = day_numbers(ts, train_start)
    train = np.flatnonzero((day >= 0) & (day < train_days))
    known = set(cards[train][labels[train] == 1].tolist())
    test_parts = []
    for d in range(test_days):
        delay_day = np.flatnonzero(day == train_days + d - 1)
        known |= set(cards[delay_day][labels[delay_day] == 1].tolist())
        today = np.flatnonzero(day == train_days + delay_days + d)
        keep = np.fromiter(
            (c not in known for c in cards[today].tolist()), dtype=bool, count=len(today)
        )
        test_parts.append(today[keep])
    test = np.concatenate(test_parts) if test_parts else np.array([], dtype=np.intp)
    return Split(train=train, test=test, day=day)
