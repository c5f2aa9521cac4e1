"""The window features of an entity state's samples: the distinct windows of each entity's
features, the sums over them, and where a sample sits.

Window sums run left to right over the window's samples (``sum`` of a slice), exactly as the
offline builder's, so features are equal bit for bit, not within a tolerance.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stream_app.features.definitions import Aggregate, Entity, window_features


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """One distinct ``(t - delay - window, t - delay]`` window and the features read from it."""

    window_s: float
    delay_s: float
    # (feature index in the entity's feature list, aggregate) for each feature of this window
    reads: tuple[tuple[int, Aggregate], ...]


def window_specs(entity: Entity) -> tuple[WindowSpec, ...]:
    """The distinct windows of ``entity``'s features (a count and a mean over one window share
    one count and one sum), in feature order of first use."""
    specs: dict[tuple[float, float], list[tuple[int, Aggregate]]] = {}
    for index, feature in enumerate(window_features(entity)):
        key = (feature.window_days * 86_400.0, feature.delay_days * 86_400.0)
        specs.setdefault(key, []).append((index, feature.aggregate))
    return tuple(WindowSpec(w, d, tuple(reads)) for (w, d), reads in specs.items())


CUSTOMER_FEATURES: tuple[str, ...] = tuple(f.name for f in window_features(Entity.CUSTOMER))
TERMINAL_FEATURES: tuple[str, ...] = tuple(f.name for f in window_features(Entity.TERMINAL))
CUSTOMER_WINDOWS = window_specs(Entity.CUSTOMER)
TERMINAL_WINDOWS = window_specs(Entity.TERMINAL)


def window_values(
    times: array[float],
    values: Any,
    ts: float,
    specs: tuple[WindowSpec, ...],
    n_features: int,
    stop: int | None = None,
    skip: Callable[[int], bool] | None = None,
) -> list[float]:
    """The window features of an event at ``ts`` over ``times``/``values``, in feature order.

    ``stop``: only samples before this index count. ``skip``: samples (indices) left out.
    """
    out = [0.0] * n_features
    n = len(times)
    newest = times[-1] if n else 0.0
    last_end = None
    hi = 0
    for spec in specs:
        end = ts - spec.delay_s
        if end != last_end:  # windows of one delay share their end
            hi = n if n and end >= newest else bisect_right(times, end)
            if stop is not None and hi > stop:
                hi = stop
            last_end = end
        lo = bisect_right(times, end - spec.window_s, 0, hi) if hi else 0
        if skip is None:
            count = hi - lo
            total = sum(values[lo:hi]) if count else 0.0
        else:
            kept = [j for j in range(lo, hi) if not skip(j)]
            count = len(kept)
            total = sum(values[j] for j in kept) if count else 0.0
        for index, aggregate in spec.reads:
            if aggregate is Aggregate.COUNT:
                out[index] = float(count)
            else:  # MEAN (amounts) and RISK (fraud flags): both total / count
                out[index] = total / count if count else 0.0
    return out


def holds_sample(times: array[float], ids: list[str | None], ts: float, event_id: str) -> bool:
    """Whether ``event_id`` is among the samples at time ``ts`` (``times`` sorted, ``ids``
    aligned)."""
    if not times or ts > times[-1]:  # the usual case: an event newer than all held
        return False
    return sample_position(times, ids, ts, event_id) >= 0


def sample_position(times: array[float], ids: list[str | None], ts: float, event_id: str) -> int:
    """The index of sample ``event_id`` at ``ts`` (-1 when it is not held)."""
    index = bisect_left(times, ts)
    n = len(times)
    while index < n and times[index] == ts:
        if ids[index] == event_id:
            return index
        index += 1
    return -1
