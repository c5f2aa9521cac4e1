"""Handbook metrics and protocol split, on hand-made data with exact expected values."""

import numpy as np
import pytest

from stream_app.evaluation.metrics import card_precision_top_k, quality
from stream_app.evaluation.protocol import train_test_split

DAY = 86_400.0


def test_card_precision_top_k_by_hand():
    # Day 0: cards a (max score .9, fraud), b (.8, genuine), c (.1, fraud) -> top-2 = a, b -> 1/2
    # Day 1: a is removed (found on day 0); b (.95, fraud), c (.2) -> top-2 = b, c -> 2/2... c
    #        is genuine that day -> 1/2
    day = [0, 0, 0, 0, 1, 1, 1]
    card = ["a", "a", "b", "c", "a", "b", "c"]
    score = [0.9, 0.3, 0.8, 0.1, 0.99, 0.95, 0.2]
    label = [0, 1, 0, 1, 1, 1, 0]
    mean, per_day = card_precision_top_k(day, card, score, label, k=2)
    assert per_day == [0.5, 0.5]
    assert mean == 0.5


def test_quality_matches_sklearn_and_counts():
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = np.array([0, 0, 1, 1, 0, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9])
    q = quality(y, s, np.zeros(6), ["a", "b", "c", "d", "e", "f"], k=2)
    assert q["auc_roc"] == roc_auc_score(y, s) == pytest.approx(8 / 9)
    assert q["average_precision"] == average_precision_score(y, s)
    assert q["card_precision_at_2"] == 1.0
    assert (q["n"], q["frauds"]) == (6, 3)


def test_protocol_split_removes_known_compromised_cards():
    # Days relative to training start: train 0-6, delay 7-13, test 14-20.
    days = np.array([0, 3, 8, 13, 14, 14, 15, 15, 20, 21, -1])
    cards = np.array(["a", "b", "c", "d", "a", "x", "c", "d", "d", "y", "z"])
    labels = np.array([1, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0])
    ts = days * DAY + 10.0
    split = train_test_split(ts, cards, labels, train_start=0.0)
    assert split.train.tolist() == [0, 1]
    # day 14 (test day 0): known = {a} + frauds of day 6 -> drop a, keep x
    # day 15 (test day 1): known += frauds of day 7 (none) -> keep c (c's fraud day 8)
    # day 20 (test day 6): known += frauds of day 12 (none) -> keep d (d's fraud is day 13)
    assert split.test.tolist() == [5, 6, 7, 8]
