"""What the worker did, counted: the stats line in the log and the shadow's metrics."""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

from stream_app.monitoring.metrics import WorkerMetrics
from stream_app.pipeline.engine import BatchEngine
from stream_app.worker.live import LiveModels

log = logging.getLogger("stream_app.worker")


class WorkerStats:
    """Counters since the last summary line."""

    FIELDS = (
        "consumed",
        "scored",
        "dead_letters",
        "replayed",
        "labels_applied",
        "labels_unmatched",
    )

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.since = time.monotonic()

    def add(self, **counts: int) -> None:
        """Add to the counters."""
        self.counts.update(counts)

    def summary(self) -> str | None:
        """One line with the counts and rates since the previous call; None when idle."""
        now = time.monotonic()
        elapsed = max(now - self.since, 1e-9)
        counts, self.counts, self.since = self.counts, Counter(), now
        if not any(counts.values()):
            return None
        parts = [f"{name.replace('_', ' ')} {counts[name]:,}" for name in self.FIELDS]
        return (
            f"last {elapsed:.0f} s: "
            + ", ".join(parts)
            + f" ({counts['scored'] / elapsed:,.0f} scored/s)"
        )


class ShadowTally:
    """The shadow's outcomes since the previous look of one reader (the log, the metrics)."""

    def __init__(self, live: LiveModels) -> None:
        self.live = live
        self.seen = [0, 0, 0, 0]

    def since(self) -> tuple[int, int, int, int]:
        """(scored, agreed, skipped, unsampled) since the previous call."""
        c = self.live.shadow_counts
        now = [c.scored, c.agreed, c.skipped, c.unsampled]
        seen = self.seen
        delta = (now[0] - seen[0], now[1] - seen[1], now[2] - seen[2], now[3] - seen[3])
        self.seen = now
        return delta


def install_stats(
    app: Any,
    interval_s: float,
    stats: WorkerStats,
    live: LiveModels,
    engine: BatchEngine,
    metrics: WorkerMetrics,
) -> None:
    """The stats line every ``interval_s``; the shadow's outcomes to the metrics every
    second."""
    logged = ShadowTally(live)  # at the previous stats line
    exported = ShadowTally(live)  # at the previous metrics sync
    batches_logged = {runner.name: (0, 0) for runner in engine.stages}

    @app.timer(1.0)
    async def export_shadow() -> None:
        scored, agreed, skipped, unsampled = exported.since()
        metrics.shadow_outcomes(agreed, scored - agreed, skipped, unsampled)

    @app.timer(interval_s)
    async def log_stats() -> None:
        line = stats.summary()
        scored, agreed, skipped, unsampled = logged.since()
        if line and (scored or skipped or unsampled):
            challenger_now = live.challenger
            line += (
                f"; shadow {challenger_now.version if challenger_now else '(none now)'}: scored "
                f"{scored:,}, agree {agreed / scored if scored else 0:.1%}, skipped {skipped:,}"
                + (f", unsampled {unsampled:,}" if unsampled else "")
            )
        if line:
            sizes = []
            for runner in engine.stages:
                batches, records = batches_logged[runner.name]
                n = runner.batches - batches
                if n:
                    sizes.append(f"{runner.name} {(runner.records - records) / n:,.0f}")
                batches_logged[runner.name] = (runner.batches, runner.records)
            if sizes:
                line += "; records per batch: " + ", ".join(sizes)
            log.info("%s · champion %s", line, live.champion.version)
