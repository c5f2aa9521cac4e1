"""bench/scale_soak.py: the soak's slope and RSS reading."""

from __future__ import annotations

import os

import pytest

from bench.scale_soak import rss_mb, slope


def test_slope_is_the_least_squares_fit() -> None:
    assert slope([0.0, 1.0, 2.0, 3.0], [5.0, 7.0, 9.0, 11.0]) == 2.0
    # y = 1, 2, 2, 4 over x = 0..3: mean x 1.5, mean y 2.25, sxy 4.5, sxx 5 -> 0.9
    assert slope([0.0, 1.0, 2.0, 3.0], [1.0, 2.0, 2.0, 4.0]) == pytest.approx(0.9, abs=1e-12)
    assert slope([1.0, 1.0], [3.0, 4.0]) == 0.0  # no spread in x
    assert slope([2.0], [3.0]) == 0.0


def test_rss_of_this_process_is_plausible() -> None:
    mb = rss_mb(os.getpid())
    assert 10 < mb < 4096
