"""state_size_stats: exact byte counts of entity states."""

import pytest

from stream_app.features.state import CustomerState, TerminalState
from stream_app.features.stats import StateSizeStats, state_size_stats


def test_empty_states_are_their_headers():
    # customer: b"SC", version, flags, n, next number, tail length = 2+1+1+4+4+4 bytes;
    # terminal: the same without the next number = 12 bytes
    assert state_size_stats([CustomerState()]) == StateSizeStats(1, 16, 16)
    assert state_size_stats([TerminalState()]) == StateSizeStats(1, 12, 12)


def test_count_total_mean_and_max_over_several_states():
    customer = CustomerState()
    customer.apply(1.0, 2.5, 0, 100.0, "e1")  # 16 + t 8 + a 8 + q0 4 + '{"o":{"0":0}}' 13 + e1 2
    terminal = TerminalState()
    terminal.apply(10.0, "e1", 3, 100.0)
    terminal.apply_label(20.0, "e9", 1)  # 12 + t 8 + f 1 + '{"o":{"0":3},"p":{"e9":20.0}}' 29 + 2
    stats = state_size_stats([CustomerState(), customer, terminal])
    assert stats == StateSizeStats(count=3, total_bytes=16 + 51 + 52, max_bytes=52)
    assert stats.mean_bytes == pytest.approx(119 / 3)
    assert stats.describe() == "n=3, mean=40 B, max=52 B, total=119 B"


def test_bytes_and_json_states_of_earlier_code_are_measured_as_they_are():
    customer = CustomerState()
    customer.apply(1.0, 2.5, 0, 100.0, "e1")
    legacy = {"t": [1.0], "a": [2.5], "i": ["e1"], "o": 0}  # '{"t":[1.0],...,"o":0}' = 38 B
    assert state_size_stats([customer.encode(), legacy]) == StateSizeStats(2, 51 + 38, 51)


def test_accepts_any_iterable_and_handles_none():
    stats = state_size_stats(v for v in [])
    assert stats == StateSizeStats(0, 0, 0)
    assert stats.mean_bytes == 0.0
    assert state_size_stats(iter([CustomerState()] * 4)) == StateSizeStats(4, 64, 16)
