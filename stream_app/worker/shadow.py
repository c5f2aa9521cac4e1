"""The challenger in shadow: the task that runs its scorer, and restarts it when it dies."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from stream_app.monitoring.metrics import WorkerMetrics
from stream_app.worker.crash import guard
from stream_app.worker.live import LiveModels
from stream_app.worker.outputs import Outputs

log = logging.getLogger("stream_app.worker")


class ShadowRunner:
    """Runs the current challenger's scorer; after a swap, the next one. A challenger whose
    process dies does not stop the champion: it is reported (``/readyz`` detail,
    ``stream_app_stalled{what="challenger"}``) and started again after a backoff."""

    def __init__(self, live: LiveModels, outputs: Outputs, metrics: WorkerMetrics) -> None:
        self.live = live
        self.outputs = outputs
        self.metrics = metrics
        self.down: str | None = None
        """Why the challenger is not running now (None: it runs, or there is none)."""

    def install(self, app: Any) -> None:
        """The shadow task on the Faust ``app``."""

        @app.task
        async def shadow_task() -> None:
            await self.run()

    async def run(self) -> None:
        """Run the challenger's scorer, forever."""
        live, backoff = self.live, 1.0
        while True:
            scorer = live.shadow
            if scorer is None:
                await asyncio.sleep(0.5)
                continue
            started = time.monotonic()
            with guard("challenger", level=None) as failure:
                await scorer.run(self.outputs.send_shadow)
            exc = failure.exc
            if exc is None or scorer is not live.shadow:  # swapped meanwhile: the new one next
                continue
            self.down = f"its process failed ({type(exc).__name__}: {exc})"
            self.metrics.set_stalled({"challenger": True})  # now, not at the next progress check
            if time.monotonic() - started > 60.0:
                backoff = 1.0
            log.error(
                "challenger %s failed: %r; the champion goes on; restarting the challenger "
                "in %.0f s",
                scorer.challenger.version,
                exc,
                backoff,
                exc_info=exc,
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 60.0)
            async with live.lock:
                if live.shadow is scorer:
                    live.use_challenger(scorer.challenger)
            self.down = None
            self.metrics.set_stalled({"challenger": False})

    def state(self) -> tuple[int, float, str | None]:
        """Jobs queued, the last one done, why it is down; for
        :class:`~stream_app.monitoring.liveness.Liveness`."""
        scorer = self.live.shadow
        if scorer is None:
            return 0, time.monotonic(), None
        return scorer.queue.qsize(), scorer.last_done, self.down
