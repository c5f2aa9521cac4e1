"""state_size_stats: exact byte counts of entity states."""

import pytest

from stream_app.features.state import CustomerState, TerminalState
from stream_app.features.stats import StateSizeStats, state_size_stats


def test_empty_states_have_the_sizes_of_their_compact_json():
    # '{"t":[],"a":[],"i":[],"o":-1}' and '{"t":[],"f":[],"i":[],"o":-1,"p":{}}'
    assert state_size_stats([CustomerState().value]) == StateSizeStats(1, 29, 29)
    assert state_size_stats([TerminalState().value]) == StateSizeStats(1, 36, 36)


def test_count_total_mean_and_max_over_several_states():
    customer = CustomerState()
    customer.apply(1.0, 2.5, 0, 100.0, "e1")  # '{"t":[1.0],"a":[2.5],"i":["e1"],"o":0}' = 38 B
    terminal = TerminalState()
    terminal.apply(10.0, "e1", 3, 100.0)
    terminal.apply_label(20.0, "e9", 1)  # pending: '..."p":{"e9":20.0}}' = 55 bytes
    stats = state_size_stats([CustomerState().value, customer.value, terminal.value])
    assert stats == StateSizeStats(count=3, total_bytes=29 + 38 + 55, max_bytes=55)
    assert stats.mean_bytes == pytest.approx(122 / 3)
    assert stats.describe() == "n=3, mean=41 B, max=55 B, total=122 B"


def test_accepts_any_iterable_and_handles_none():
    stats = state_size_stats(v for v in [])
    assert stats == StateSizeStats(0, 0, 0)
    assert stats.mean_bytes == 0.0
    assert state_size_stats(iter([CustomerState().value] * 4)) == StateSizeStats(4, 116, 29)
