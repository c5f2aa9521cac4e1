"""Shadow scoring: a challenger scores every event off the champion's path.

The scoring agent hands each scored micro-batch to :class:`ShadowScorer` with ``offer`` (never
blocking: when ``max_pending`` batches already wait, the batch is skipped and counted, so a slow
challenger can cost the champion nothing). A background task takes the waiting batches in order
(merged into one, so a small batch does not pay a model call of its own), runs the challenger in
a process of its own (its CPU time and its Python work never hold the champion's interpreter
lock) and publishes one
``shadow_score`` record per event on ``scores.shadow``: the challenger's full envelope, the
champion's score and decision, whether the decisions agree and the score difference.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
import zlib
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from threadpoolctl import threadpool_limits

from stream_app.scoring.canary import SHADOW_ROUTE
from stream_app.scoring.envelope import ScoredEvent, build_envelopes
from stream_app.scoring.model import BatchScores, ScoringModel

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class ShadowJob:
    """One champion-scored micro-batch waiting for the challenger."""

    events: Sequence[ScoredEvent]
    X: FloatArray  # the challenger's columns, row-aligned with ``events``
    champion_version: str
    champion_score: FloatArray
    champion_decision: npt.NDArray[np.str_]
    canary_version: str | None = None  # the canary deciding for other customers meanwhile

    @classmethod
    def of(
        cls,
        events: Sequence[ScoredEvent],
        X: FloatArray,
        champion_version: str,
        champion: BatchScores,
        canary_version: str | None = None,
    ) -> ShadowJob:
        """A job from the champion's batch scores."""
        return cls(events, X, champion_version, champion.score, champion.decision, canary_version)

    @classmethod
    def merge(cls, jobs: Sequence[ShadowJob]) -> ShadowJob:
        """Consecutive jobs of one champion as one (one ``predict_proba`` for all)."""
        if len(jobs) == 1:
            return jobs[0]
        return cls(
            [event for job in jobs for event in job.events],
            np.vstack([job.X for job in jobs]),
            jobs[0].champion_version,
            np.concatenate([job.champion_score for job in jobs]),
            np.concatenate([job.champion_decision for job in jobs]),
            jobs[-1].canary_version,
        )


def in_sample(customer_id: str, share: float) -> bool:
    """Whether ``customer_id`` is in a sticky sample of ``share`` of all customers.

    The CRC-32 of the id, read as a fraction of 2**32, below ``share``: one customer is always in
    or always out at a given share, and raising the share only adds customers.

    >>> in_sample("42", 1.0), in_sample("42", 0.0)
    (True, False)
    """
    if share >= 1.0:
        return True
    return zlib.crc32(customer_id.encode()) < share * 4_294_967_296.0


def sample_rows(customer_ids: Sequence[str], share: float) -> list[int] | None:
    """The rows of a batch whose customers are in the sample; None when all are."""
    if share >= 1.0:
        return None
    return [i for i, c in enumerate(customer_ids) if in_sample(c, share)]


def shadow_records(
    envelopes: Sequence[dict[str, Any]],
    champion_version: str,
    champion_score: FloatArray,
    champion_decision: npt.NDArray[np.str_],
) -> list[dict[str, Any]]:
    """The ``shadow_score`` records for challenger ``envelopes`` (row-aligned with the
    champion's scores and decisions)."""
    scores = champion_score.tolist()
    decisions = champion_decision.tolist()
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
    unsampled: int = 0  # events of customers outside the shadow sample (STREAM_APP_SHADOW_SAMPLE)


Send = Callable[[bytes, bytes], Awaitable[Any]]


def score_job(
    challenger: ScoringModel, job: ShadowJob, emit_features: bool = False
) -> tuple[list[tuple[bytes, bytes]], int]:
    """Score one job with the challenger: ((key, value) pairs for ``scores.shadow``, agreed).

    Native thread pools (OpenMP in gradient boosting, BLAS) are held to one thread: their idle
    threads spin-wait, and on a small machine that spinning takes the champion's cores.
    """
    with threadpool_limits(limits=1):
        batch = challenger.score_batch(job.X)
    envelopes = build_envelopes(
        challenger,
        job.events,
        job.X,
        batch,
        emit_features,
        route=SHADOW_ROUTE,
        champion_version=job.champion_version,
        canary_version=job.canary_version,
    )
    records = shadow_records(
        envelopes, job.champion_version, job.champion_score, job.champion_decision
    )
    pairs = [
        (event.customer_id.encode(), orjson.dumps(record))
        for event, record in zip(job.events, records, strict=True)
    ]
    return pairs, sum(1 for r in records if r["agree"])


# --- the challenger's own process ----------------------------------------------------------------

_child: tuple[ScoringModel, bool] | None = None


def _child_init(version_dir: str, emit_features: bool, nice: int = 0) -> None:
    """Load the challenger in the shadow process, hash-verified again, at CPU priority ``nice``
    (higher: lower priority). A lower priority than the champion's keeps the challenger on the
    CPU the champion leaves idle: under full load it then skips batches (counted), instead of
    taking a core from the scoring path."""
    global _child
    if nice:
        os.nice(nice)
    _child = (ScoringModel.load(Path(version_dir)), emit_features)


def _child_score(job: ShadowJob) -> tuple[list[tuple[bytes, bytes]], int]:
    assert _child is not None, "the shadow process was not initialised"
    return score_job(_child[0], job, _child[1])


def _child_ready() -> str:
    assert _child is not None
    return _child[0].version


class ShadowScorer:
    """A bounded hand-off queue from the champion's path to the challenger.

    With ``version_dir`` (the challenger's registry directory) the challenger runs in a process
    of its own, so neither its CPU time nor its Python work (explanations, envelopes) holds the
    champion's interpreter lock; without it, in a thread of this process.
    """

    def __init__(
        self,
        challenger: ScoringModel,
        max_pending: int = 64,
        emit_features: bool = False,
        version_dir: Path | None = None,
        counts: ShadowCounts | None = None,
        nice: int = 0,
    ) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be >= 1")
        self.challenger = challenger
        self.emit_features = emit_features
        # None is the wake-up that ``close`` leaves for ``run``.
        self.queue: asyncio.Queue[ShadowJob | None] = asyncio.Queue(maxsize=max_pending + 1)
        self.max_pending = max_pending
        self.closed = False
        self.counts = counts if counts is not None else ShadowCounts()  # shared across swaps
        self.last_done = time.monotonic()  # when a job last finished (liveness)
        self.in_process = version_dir is None
        self._executor: Executor
        if version_dir is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="shadow")
        else:
            self._executor = ProcessPoolExecutor(
                1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_child_init,
                initargs=(str(version_dir), emit_features, nice),
            )

    def offer(self, job: ShadowJob) -> bool:
        """Queue ``job`` without waiting; False (and counted) when the queue is full."""
        if self.closed or self.queue.qsize() >= self.max_pending:
            self.counts.skipped += len(job.events)
            return False
        self.queue.put_nowait(job)
        return True

    def score(self, job: ShadowJob) -> list[tuple[bytes, bytes]]:
        """Score one job here and now (counted): (key, value) pairs for ``scores.shadow``."""
        pairs, agreed = score_job(self.challenger, job, self.emit_features)
        self._count(len(pairs), agreed)
        return pairs

    def _count(self, scored: int, agreed: int) -> None:
        self.last_done = time.monotonic()
        self.counts.scored += scored
        self.counts.agreed += agreed

    async def run(self, send: Send, max_rows: int = 5000) -> None:
        """Until :meth:`close`: take the queued jobs (up to ``max_rows`` events) as one batch,
        score it in the challenger's process (or thread), send its records in order. Merging
        matters at low rates, where the champion's micro-batches are small and a model's
        per-call cost would dominate."""
        loop = asyncio.get_running_loop()
        if not self.in_process:
            await loop.run_in_executor(self._executor, _child_ready)  # start it now, not later
        while not self.closed:
            first = await self.queue.get()
            if first is None or self.closed:
                return
            jobs = [first]
            rows = len(first.events)
            while rows < max_rows and not self.queue.empty():
                job = self.queue.get_nowait()
                if job is None:
                    self.closed = True
                    break
                jobs.append(job)
                rows += len(job.events)
            try:
                job = ShadowJob.merge(jobs)
                try:
                    if self.in_process:
                        pairs, agreed = await loop.run_in_executor(
                            self._executor, score_job, self.challenger, job, self.emit_features
                        )
                    else:
                        pairs, agreed = await loop.run_in_executor(
                            self._executor, _child_score, job
                        )
                except Exception:
                    if self.closed:  # replaced while scoring: its pool is gone, so is the batch
                        self.counts.skipped += len(job.events)
                        return
                    raise
                if self.closed:
                    self.counts.skipped += len(job.events)
                    return
                self._count(len(pairs), agreed)
                for key, value in pairs:
                    await send(key, value)
            finally:
                for _ in jobs:
                    self.queue.task_done()

    def close(self) -> int:
        """Stop: pending jobs are dropped (counted as skipped, and returned), :meth:`run` returns
        and the challenger's thread or process ends."""
        dropped = 0
        self.closed = True
        while not self.queue.empty():
            job = self.queue.get_nowait()
            if job is not None:
                dropped += len(job.events)
            self.queue.task_done()
        self.counts.skipped += dropped
        self.queue.put_nowait(None)
        self._executor.shutdown(wait=False, cancel_futures=True)
        return dropped
