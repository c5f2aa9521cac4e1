"""The benchmark's arithmetic (bench/measure.py), with values worked out by hand."""

import pytest

from bench.measure import (
    backlog_slope,
    due_times,
    judge_phase,
    latency_summary,
    median,
    median_of_runs,
    percentile,
    ratio,
    throughput,
)


def test_percentile_interpolates_between_closest_ranks():
    values = [15.0, 20.0, 35.0, 40.0, 50.0]
    # rank = q/100 * (n - 1): 0, 1, 2, 3, 4 for q = 0, 25, 50, 75, 100
    assert percentile(values, 0) == 15.0
    assert percentile(values, 25) == 20.0
    assert percentile(values, 50) == 35.0
    assert percentile(values, 100) == 50.0
    # q = 40: rank 1.6 -> 20 + 0.6 * (35 - 20) = 29
    assert percentile(values, 40) == pytest.approx(29.0, abs=1e-12)
    # q = 95: rank 3.8 -> 40 + 0.8 * 10 = 48
    assert percentile(values, 95) == pytest.approx(48.0, abs=1e-12)


def test_percentile_sorts_and_handles_one_value():
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_latency_summary_skips_the_ramp_up_and_reports_ms():
    # 10 latencies; the first tenth (one: the 9 s outlier) is left out.
    latencies = [9.0, 0.010, 0.020, 0.030, 0.040, 0.050, 0.060, 0.070, 0.080, 0.090]
    out = latency_summary(latencies)
    assert out["samples"] == 9.0
    assert out["p50_ms"] == pytest.approx(50.0)  # rank 4 of 0.010..0.090
    assert out["p95_ms"] == pytest.approx(86.0)  # rank 7.6: 80 + 0.6 * 10
    assert out["p99_ms"] == pytest.approx(89.2)  # rank 7.92: 80 + 0.92 * 10
    assert out["max_ms"] == pytest.approx(90.0)


def test_due_times_are_open_loop():
    assert due_times(100.0, 4.0, 5) == [100.0, 100.25, 100.5, 100.75, 101.0]
    assert due_times(0.0, 1000.0, 3) == [0.0, 0.001, 0.002]
    with pytest.raises(ValueError):
        due_times(0.0, 0.0, 3)


def test_throughput():
    assert throughput(1000, 10.0, 12.0) == 500.0
    assert throughput(1000, 10.0, 10.0) == 0.0


def test_backlog_slope_is_least_squares():
    assert backlog_slope([(0.0, 0.0), (1.0, 100.0), (2.0, 200.0)]) == 100.0
    # (0,0), (1,1), (2,5): mean t 1, mean b 2; sum (t-1)(b-2) = 2 + 0 + 3 = 5; var 2 -> 2.5
    assert backlog_slope([(0.0, 0.0), (1.0, 1.0), (2.0, 5.0)]) == 2.5
    assert backlog_slope([(1.0, 5.0)]) == 0.0
    assert backlog_slope([(1.0, 5.0), (1.0, 9.0)]) == 0.0


def test_judge_phase_kept_up_when_the_backlog_is_flat_and_drained():
    samples = [(t / 2, 10.0 + (t % 2)) for t in range(20)]  # wobbles between 10 and 11
    verdict = judge_phase(samples, rate=1000.0, drained=True)
    assert verdict.sustained
    assert verdict.final_backlog == 11.0


def test_judge_phase_reports_backlog_growth():
    # 5,000 offered, 700 scored: the backlog grows 4,300 per second.
    samples = [(t * 0.5, 4300.0 * t * 0.5) for t in range(21)]
    verdict = judge_phase(samples, rate=5000.0, drained=True)
    assert not verdict.sustained
    assert verdict.backlog_growth_per_s == pytest.approx(4300.0)
    assert verdict.final_backlog == 43000.0
    assert "4,300" in verdict.reason


def test_judge_phase_only_looks_at_the_second_half():
    # A start-up burst in the first half, flat afterwards.
    samples = [(0.0, 0.0), (1.0, 900.0), (2.0, 1000.0), (3.0, 1000.0), (4.0, 1000.0)]
    assert judge_phase(samples, rate=1000.0, drained=True).sustained


def test_judge_phase_needs_every_event_scored():
    verdict = judge_phase([(0.0, 0.0), (1.0, 0.0)], rate=100.0, drained=False)
    assert not verdict.sustained
    assert judge_phase([], rate=100.0, drained=True).reason == "no samples"


def test_median_and_ratio():
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5
    with pytest.raises(ValueError):
        median([])
    assert ratio(600.0, 1200.0) == 0.5
    assert ratio(None, 2.0) is None
    assert ratio(1.0, 0.0) is None


def test_median_of_runs_nests_and_skips_missing():
    runs = [
        {"ours": {"tx_per_s": 700.0, "ok": True}, "peer": None, "name": "a"},
        {"ours": {"tx_per_s": 900.0, "ok": True}, "peer": None, "name": "b"},
        {"ours": {"tx_per_s": 800.0, "ok": False}, "peer": None, "name": "c"},
    ]
    assert median_of_runs(runs) == {"ours": {"tx_per_s": 800.0, "ok": 1.0}}
    assert median_of_runs([]) == {}
