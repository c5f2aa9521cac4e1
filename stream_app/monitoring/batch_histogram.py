"""A Prometheus histogram fed a whole batch of observations at once (:class:`BatchHistogram`),
and the end-to-end latencies of a batch (:func:`latencies_from_ms`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString


class BatchHistogram(Collector):
    """A label-less Prometheus histogram fed a whole array of observations at once.

    Same exposition as :class:`prometheus_client.Histogram` (``_bucket{le}``, ``_count``,
    ``_sum``; no ``_created``), but :meth:`observe_many` costs one numpy pass per batch rather than
    one locked Python call per value. Bucket upper bounds are inclusive (``value <= le``), as in
    Prometheus.
    """

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        bounds = np.asarray(sorted(float(b) for b in buckets), dtype=np.float64)
        if bounds.size == 0 or not np.all(np.isfinite(bounds)):
            raise ValueError("buckets must be finite and non-empty (+Inf is added)")
        self.name = name
        self.documentation = documentation
        self.bounds = bounds
        self._counts = np.zeros(bounds.size + 1, dtype=np.int64)  # last slot: above every bound
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe_many(self, values: npt.ArrayLike) -> None:
        """Add every value of ``values`` (seconds); NaNs are dropped."""
        arr = np.asarray(values, dtype=np.float64).ravel()
        if arr.size == 0:
            return
        arr = arr[~np.isnan(arr)]
        index = np.searchsorted(self.bounds, arr, side="left")
        counts = np.bincount(index, minlength=self._counts.size)
        total = float(arr.sum())
        with self._lock:
            self._counts += counts
            self._sum += total

    def observe(self, value: float) -> None:
        """Add one value."""
        self.observe_many([value])

    def snapshot(self) -> tuple[list[int], float]:
        """Cumulative counts per bucket (the last is +Inf, i.e. the total) and the sum."""
        with self._lock:
            cumulative = np.cumsum(self._counts).tolist()
            return [int(c) for c in cumulative], self._sum

    def _family(self) -> HistogramMetricFamily:
        cumulative, total = self.snapshot()
        labels = [*(_le(b) for b in self.bounds.tolist()), "+Inf"]
        return HistogramMetricFamily(
            self.name,
            self.documentation,
            buckets=list(zip(labels, cumulative, strict=True)),
            sum_value=total,
        )

    def collect(self) -> Iterator[Metric]:
        """The histogram family: ``_bucket{le}``, ``_count``, ``_sum``."""
        yield self._family()

    def describe(self) -> Iterator[Metric]:
        """Name and type only (lets the registry detect duplicate names)."""
        yield HistogramMetricFamily(self.name, self.documentation)


def _le(bound: float) -> str:
    """The ``le`` label text prometheus_client uses for a bound (``0.005``, ``1.0``, ``30.0``)."""
    return floatToGoString(bound)


def latencies_from_ms(arrived_ms: Iterable[float], now_s: float | None = None) -> npt.NDArray[Any]:
    """Seconds from each Kafka timestamp (ms) to ``now_s`` (default: now); unknown (<= 0) dropped,
    negative clock skew clipped to 0."""
    arr = np.fromiter(arrived_ms, dtype=np.float64)
    arr = arr[arr > 0]
    now = time.time() if now_s is None else now_s
    return np.maximum(now - arr / 1000.0, 0.0)  # type: ignore[no-any-return]
