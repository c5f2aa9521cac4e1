"""The worker watching itself: progress, the co-partitioned topics' layout, deleted input.

* Progress (:class:`~stream_app.monitoring.liveness.Liveness`): a worker that stops making
  progress says so (log, ``stream_app_stalled``, ``/readyz``), then exits for its supervisor to
  restart it.
* Layout: the co-partitioned topics must keep ``STREAM_APP_PARTITIONS`` partitions
  (:mod:`stream_app.io.copartition`): a topic grown alone puts keys on partitions that hold other
  keys' state, or none. Checked before the first record and every ``partition_check_s``; on a
  mismatch the engine reads and processes nothing (not a stall: it waits for the operator).
* Retention: input that vanished before it was read is counted and logged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from stream_app.config import Settings
from stream_app.faust_ext.recovery import settled
from stream_app.io.copartition import mismatch_message, partition_mismatches
from stream_app.io.security import admin_client
from stream_app.monitoring.liveness import EXIT_STALLED, Liveness
from stream_app.monitoring.metrics import WorkerMetrics
from stream_app.pipeline.engine import BatchEngine
from stream_app.worker.crash import guard

log = logging.getLogger("stream_app.worker")

STALLS = ("customer stage", "scoring stage", "outputs", "checkpoints", "challenger")


def install_liveness(
    app: Any,
    settings: Settings,
    engine: BatchEngine,
    metrics: WorkerMetrics,
    outputs: Callable[[], tuple[int, float]],
    challenger: Callable[[], tuple[int, float, str | None]],
) -> Liveness:
    """Stalls to the metric and the log every 5 s; a scoring path stalled for good ends the
    process. The :class:`Liveness` returned is the ``/readyz`` check ``progress``."""
    liveness = Liveness(
        stages=lambda: [] if engine.halted is not None else engine.stages,  # see `partitions`
        waiting=engine.waiting,
        outputs=outputs,
        checkpoints=lambda: (
            engine.uncommitted_since is not None,
            engine.uncommitted_since or time.monotonic(),
        ),
        challenger=challenger,
        stall_s=settings.stall_timeout_s,
        exit_s=settings.stall_exit_s,
        commit_interval_s=app.conf.broker_commit_interval,
    )
    stall_logged: dict[str, float] = {}

    @app.timer(5.0)
    async def watch_progress() -> None:
        """Stalls to the metric and the log; a scoring path stalled for good ends the process."""
        if not settled(app):
            return
        stalls = liveness.stalls()
        metrics.set_stalled({name: any(s.what == name for s in stalls) for name in STALLS})
        now = time.monotonic()
        for stall in stalls:
            if now - stall_logged.get(stall.what, 0.0) >= 30.0:
                stall_logged[stall.what] = now
                log.warning("stalled: %s: %s", stall.what, stall.detail)
        fatal = liveness.must_exit(stalls)
        if fatal is not None:
            log.critical(
                "%s made no progress for %.0f s (%s); exiting with code %d so that the "
                "supervisor restarts the worker (it re-reads from the last commit)",
                fatal.what,
                fatal.for_s,
                fatal.detail,
                EXIT_STALLED,
            )
            logging.shutdown()
            os._exit(EXIT_STALLED)

    return liveness


class PartitionLayout:
    """Halts the engine while the co-partitioned topics disagree on partition counts."""

    def __init__(self, settings: Settings, engine: BatchEngine) -> None:
        self.settings = settings
        self.engine = engine
        self.admin = admin_client(settings) if settings.partition_check_s > 0 else None

    def install(self, app: Any) -> None:
        """The periodic check (none with ``partition_check_s`` 0)."""
        if self.admin is None:
            return

        @app.timer(self.settings.partition_check_s)
        async def watch_partitions() -> None:
            """Halt the engine while the co-partitioned topics disagree on partition counts."""
            await self.check()

    async def check(self) -> None:
        """Ask the broker for the topics' partition counts; halt or resume the engine."""
        if self.admin is None:
            return
        engine, settings = self.engine, self.settings
        # The broker away: the next round asks again.
        with guard("topic metadata", level=logging.DEBUG) as failure:
            metadata = await asyncio.to_thread(self.admin.list_topics, timeout=5)
        if failure.exc is not None:
            return
        counts = {name: len(t.partitions) for name, t in metadata.topics.items() if t.error is None}
        mismatches = partition_mismatches(settings, counts)
        if mismatches:
            reason = mismatch_message(settings, mismatches)
            if engine.halted != reason:
                log.error("%s", reason)
            engine.halt(reason)
        elif engine.halted is not None:
            log.info(
                "co-partitioned topics agree again (%d partitions): reading", settings.partitions
            )
            engine.unhalt()

    def readiness(self) -> dict[str, Any]:
        """The ``/readyz`` check ``partitions``."""
        halted = self.engine.halted
        return {
            "ok": halted is None,
            "detail": halted or f"co-partitioned topics have {self.settings.partitions} partitions",
        }


def install_retention_watch(
    app: Any, engine: BatchEngine, metrics: WorkerMetrics, topics: frozenset[str]
) -> None:
    """Count and log each range of input records of ``topics`` deleted before the worker read
    them.

    The engine notes every chunk of an input partition that starts past the offset expected (the
    last one read, or the committed one after an assignment); the broker's log start says whether
    the records between were deleted before the worker read them (retention, or a DeleteRecords)
    or were only transaction markers and aborted records of a producer.
    """
    engine.gap_topics = topics

    @app.timer(5.0)
    async def watch_retention() -> None:
        """Count and log each range of input records deleted before the worker read them."""
        if not engine.gaps:
            return
        gaps, engine.gaps = engine.gaps, []
        # The broker away: the next round asks again.
        with guard("log start offsets", level=logging.DEBUG) as failure:
            earliest = await app.consumer.earliest_offsets(*{tp for tp, _, _ in gaps})
        if failure.exc is not None:
            engine.gaps[:0] = gaps
            return
        for tp, expected, first in gaps:
            start = earliest.get(tp)
            if start is None or start <= expected:
                log.debug(
                    "%s[%d]: offsets %d..%d hold no record the worker can read (transaction "
                    "markers or aborted records)",
                    tp.topic,
                    tp.partition,
                    expected,
                    first - 1,
                )
                continue
            lost = min(start, first) - expected
            metrics.skipped(tp.topic, tp.partition, lost)
            log.error(
                "%s[%d]: records %d..%d were deleted before the worker read them (the log now "
                "starts at %d); %d record(s) never scored. Retention shorter than the worker's "
                "lag? (see README, Topics)",
                tp.topic,
                tp.partition,
                expected,
                expected + lost - 1,
                start,
                lost,
            )
