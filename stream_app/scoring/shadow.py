"""Shadow scoring: a challenger scores every event off the champion's path.

The scoring agent hands each scored micro-batch to :class:`ShadowScorer` with ``offer`` (never
blocking: when ``max_pending`` batches already wait, the batch is skipped and counted, so a slow
challenger can cost the champion nothing). A background task takes the batches in order, runs
the challenger's ``predict_proba`` in a worker thread (scikit-learn releases the GIL in its
numeric kernels, so on two cores it runs beside the event loop) and publishes one
``shadow_score`` record per event on ``scores.shadow``: the challenger's full envelope, the
champion's score and decision, whether the decisions agree and the score difference.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from stream_app.scoring.envelope import ScoredEvent, build_envelopes
from stream_app.scoring.model import BatchScores, ScoringModel

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class ShadowJob:
    """One champion-scored micro-batch waiting for the challenger."""

    events: Sequence[ScoredEvent]
    X: FloatArray  # the challenger's columns, row-aligned with ``events``
    champion_version: str
    champion: BatchScores


def shadow_records(
    envelopes: Sequence[dict[str, Any]], champion_version: str, champion: BatchScores
) -> list[dict[str, Any]]:
    """The ``shadow_score`` records for challenger ``envelopes`` (row-aligned with ``champion``)."""
    scores = champion.score.tolist()
    decisions = champion.decision.tolist()
    return [
        {
            "challenger": envelope,
            "champion_version": champion_version,
            "champion_score": scores[i],
            "champion_decision": decisions[i],
            "agree": envelope["decision"] == decisions[i],
            "score_delta": envelope["score"] - scores[i],
        }
        for i, envelope in enumerate(envelopes)
    ]


@dataclass(slots=True)
class ShadowCounts:
    """What the shadow path did since start."""

    scored: int = 0
    agreed: int = 0
    skipped: int = 0  # events whose batch was dropped because the challenger lagged


Send = Callable[[bytes, bytes], Awaitable[Any]]


class ShadowScorer:
    """A bounded hand-off queue from the champion's path to the challenger."""

    def __init__(
        self, challenger: ScoringModel, max_pending: int = 64, emit_features: bool = False
    ) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be >= 1")
        self.challenger = challenger
        self.emit_features = emit_features
        self.queue: asyncio.Queue[ShadowJob] = asyncio.Queue(maxsize=max_pending)
        self.counts = ShadowCounts()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="shadow")

    def offer(self, job: ShadowJob) -> bool:
        """Queue ``job`` without waiting; False (and counted) when the queue is full."""
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            self.counts.skipped += len(job.events)
            return False
        return True

    def score(self, job: ShadowJob) -> list[tuple[bytes, bytes]]:
        """Score one job with the challenger: (key, value) pairs for ``scores.shadow``."""
        batch = self.challenger.score_batch(job.X)
        envelopes = build_envelopes(self.challenger, job.events, job.X, batch, self.emit_features)
        records = shadow_records(envelopes, job.champion_version, job.champion)
        self.counts.scored += len(records)
        self.counts.agreed += sum(1 for r in records if r["agree"])
        return [
            (event.customer_id.encode(), orjson.dumps(record))
            for event, record in zip(job.events, records, strict=True)
        ]

    async def run(self, send: Send) -> None:
        """Forever: take a job, score it in the worker thread, send its records in order."""
        loop = asyncio.get_running_loop()
        while True:
            job = await self.queue.get()
            try:
                pairs = await loop.run_in_executor(self._executor, self.score, job)
                for key, value in pairs:
                    await send(key, value)
            finally:
                self.queue.task_done()

    def close(self) -> None:
        """Stop the worker thread (pending jobs are dropped)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
