"""The benchmark's arithmetic, kept free of Kafka so it can be tested with exact values.

* :func:`percentile` — linear interpolation between closest ranks (numpy's default method), so a
  reader can check a figure by hand.
* :func:`due_times` — an open-loop send schedule: event ``i`` of a phase at ``rate`` events/s is
  due at ``start + i / rate`` whatever happened before, so a slow consumer cannot slow the
  offered load down (no coordinated omission).
* :func:`throughput` — events over the span from the first to the last output record.
* :func:`backlog_slope` and :func:`judge_phase` — whether a worker kept up with an offered rate:
  the backlog (offered minus scored) must not grow.
* :func:`median` / :func:`ratio` / :func:`median_of_runs` — what ``--repeat K`` reports.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values``, linear between closest ranks.

    Rank ``r = q / 100 * (n - 1)`` on the sorted values; between the two neighbouring values the
    result is interpolated linearly. Raises ``ValueError`` on no values or ``q`` outside 0..100.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"q must be within 0..100, got {q}")
    ordered = sorted(values)
    rank = q / 100.0 * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_summary(latencies_s: Sequence[float], skip_share: float = 0.1) -> dict[str, float]:
    """p50/p95/p99/max in milliseconds over ``latencies_s`` (seconds, in send order), leaving
    out the first ``skip_share`` of them (the phase's ramp-up)."""
    kept = list(latencies_s[int(len(latencies_s) * skip_share) :])
    if not kept:
        raise ValueError("no latencies left to summarize")
    return {
        "p50_ms": percentile(kept, 50) * 1000.0,
        "p95_ms": percentile(kept, 95) * 1000.0,
        "p99_ms": percentile(kept, 99) * 1000.0,
        "max_ms": max(kept) * 1000.0,
        "samples": float(len(kept)),
    }


def due_times(start: float, rate: float, count: int) -> list[float]:
    """When each of ``count`` events is due at ``rate`` events/s from ``start`` (open loop)."""
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    return [start + i / rate for i in range(count)]


def throughput(events: int, first_s: float, last_s: float) -> float:
    """Events per second over ``first_s .. last_s`` (0.0 when the span is empty)."""
    span = last_s - first_s
    return events / span if span > 0 else 0.0


def backlog_slope(samples: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope (events/s) of ``(time, backlog)`` samples; 0.0 for fewer than two
    distinct times."""
    if len(samples) < 2:
        return 0.0
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_b = sum(b for _, b in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    if var == 0:
        return 0.0
    return sum((t - mean_t) * (b - mean_b) for t, b in samples) / var


@dataclass(frozen=True)
class PhaseVerdict:
    """Whether a worker kept up with an offered rate, and by how much it fell behind."""

    sustained: bool
    backlog_growth_per_s: float  # slope over the second half of the phase
    final_backlog: float
    reason: str


def judge_phase(
    samples: Sequence[tuple[float, float]],
    rate: float,
    drained: bool,
    tolerance: float = 0.05,
) -> PhaseVerdict:
    """Judge a phase from its ``(seconds since start, backlog)`` samples.

    Sustained when the backlog did not grow by more than ``tolerance`` x ``rate`` per second over
    the second half of the phase (the first half absorbs start-up), and every event of the phase
    was scored in the end (``drained``).
    """
    if not samples:
        return PhaseVerdict(False, 0.0, 0.0, "no samples")
    end = samples[-1][0]
    second_half = [s for s in samples if s[0] >= end / 2]
    slope = backlog_slope(second_half)
    final = samples[-1][1]
    if slope > tolerance * rate:
        return PhaseVerdict(
            False,
            slope,
            final,
            f"backlog grew {slope:,.0f} events/s (> {tolerance:.0%} of the offered rate)",
        )
    if not drained:
        return PhaseVerdict(False, slope, final, "not every event was scored after the phase")
    return PhaseVerdict(True, slope, final, "kept up")


def median(values: Iterable[float]) -> float:
    """The median (mean of the two middle values for an even count)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("median of no values")
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]
    return (ordered[mid - 1] + ordered[mid]) / 2.0


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or None when either is missing or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def median_of_runs(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per key, the median over ``runs`` of the numeric values (nested mappings recursively;
    booleans count as 0 and 1, so a flag's median says whether most runs had it); keys with no
    number in any run are left out, None values skipped."""
    if not runs:
        return {}
    out: dict[str, Any] = {}
    for key in runs[0]:
        values = [run.get(key) for run in runs]
        if all(isinstance(v, Mapping) for v in values):
            out[key] = median_of_runs([v for v in values if isinstance(v, Mapping)])
            continue
        numbers = [float(v) for v in values if isinstance(v, int | float)]
        if numbers:
            out[key] = median(numbers)
    return out
