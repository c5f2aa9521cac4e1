"""The batch engine: the stages' records, fetched by Faust's consumer, processed in micro-batches.

Faust owns the consumer group, the partition assignment, the tables, their changelogs,
standbys and recovery, and the offset commits. Inside it, the worker's consumer
(``stream_app.faust_ext.batch``) hands every fetched chunk of a stage's input partition to
:meth:`BatchEngine.enqueue` instead of turning each record into a Faust event: the stage decodes
the chunk at once and it waits in the partition's :class:`~stream_app.pipeline.buffers.
PartitionQueue`. Each stage runs one loop (:meth:`BatchEngine.run`) that takes its next
micro-batch in event-time order across its partitions (:func:`~stream_app.pipeline.buffers.take`)
and hands it to the stage's handler, which updates state, scores and queues the outputs. Nothing
in that path waits: outputs go to librdkafka, which delivers them in its own threads.

A **checkpoint** (:meth:`BatchEngine.checkpoint`) runs before every offset commit Faust makes
(its commit timer, a rebalance, a shutdown): each changed entity state is written once to its
table and changelog, the positions of what the stages have taken are read, and the engine waits
until every output and changelog record sent so far is delivered (at least once), or commits
them in one Kafka transaction with those positions (exactly once). Faust then commits the
positions.

Backpressure: a partition whose queue holds ``max_buffered`` records is left out of the next
fetch (:meth:`BatchEngine.full`); Faust's consumer asks the broker for the others.

A stage as the engine runs it is a :class:`~stream_app.pipeline.stage_runner.StageRunner`; what the
engine reports of where the stages stand is :class:`~stream_app.pipeline.engine_status.
EngineStatus`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from stream_app.pipeline.buffers import INF, MAX_LAG_WAIT_S, Batch, take
from stream_app.pipeline.engine_status import EngineStatus
from stream_app.pipeline.stage_runner import FetchView, StageInput, StageRunner

__all__ = ["BatchEngine", "FetchView", "StageInput", "StageRunner"]

log = logging.getLogger("stream_app.engine")


class BatchEngine(EngineStatus):
    """The stages' partition queues, their loops, and the checkpoint before each commit (what it
    reports of where they stand: :class:`~stream_app.pipeline.engine_status.EngineStatus`)."""

    def __init__(
        self,
        *,
        max_buffered: int = 5000,
        max_idle_s: float = 1.0,
        checkpoint: Callable[[], Any] | None = None,
        lock: asyncio.Lock | None = None,
    ) -> None:
        """``checkpoint``: the coroutine function that makes everything sent so far durable
        (see :meth:`checkpoint`). ``lock``: held by a stage while it handles a batch and by a
        checkpoint that must not see a batch half-sent (exactly once)."""
        self.max_buffered = max_buffered
        self.max_idle_s = max_idle_s
        self.stages: list[StageRunner] = []
        self.by_topic: dict[str, StageRunner] = {}
        self.view: FetchView | None = None
        self.lock = lock
        self._checkpoint = checkpoint
        self.space = asyncio.Event()
        self.space.set()
        self.stopping = False
        self.paused = False
        # Why the stages read nothing at all until the operator acts (None: they read); see
        # :meth:`halt`.
        self.halted: str | None = None
        self.reset_hooks: list[Callable[[], None]] = []
        self.commit_hooks: list[Callable[[dict[Any, int]], Any]] = []
        self.committed_positions: dict[Any, int] = {}
        # Since when a stage has taken records that no commit covers (None: all committed).
        self.uncommitted_since: float | None = None
        self.fetched: dict[Any, int] = {}  # tp -> fetch position when its last chunk came
        # tp -> when the fetch answer that brought its last chunk came (see _caught_up)
        self.chunk_answers: dict[Any, int] = {}
        self.generation = 0  # bumped by every reset (rebalance)
        # Input topics whose offsets must not jump: a chunk that starts past the offset expected
        # (the last one queued, or the committed one for a partition's first chunk) is noted in
        # ``gaps`` as (tp, expected, first offset read); the worker asks the broker whether the
        # records between were deleted (retention) or were only transaction markers.
        self.gap_topics: frozenset[str] = frozenset()
        self.gaps: list[tuple[Any, int, int]] = []
        # Stages whose inputs are held by another stage's low watermark (the scoring stage's
        # labels by the customer stage): woken when that stage moves, not only by their own
        # records (a stage whose queues are full fetches nothing and would sleep for 1 s).
        self.dependents: dict[int, list[StageRunner]] = {}
        # (partition, since when it was empty) of each wait that ran out, reported once.
        self._waived_reported: set[tuple[Any, float | None]] = set()

    # --- wiring -------------------------------------------------------------------------------

    def add_stage(self, runner: StageRunner) -> StageRunner:
        """Register a stage; its input topics are read through the engine from now on."""
        for stage_input in runner.inputs:
            if stage_input.topic in self.by_topic:
                raise ValueError(f"topic {stage_input.topic} is read by two stages")
            self.by_topic[stage_input.topic] = runner
            holder = stage_input.held_by
            if holder is not None:
                waiting = self.dependents.setdefault(id(holder), [])
                if runner not in waiting:
                    waiting.append(runner)
        self.stages.append(runner)
        return runner

    def bind(self, view: FetchView) -> None:
        """The consumer whose fetch positions and assignment the engine reads."""
        self.view = view

    @property
    def topics(self) -> frozenset[str]:
        """Every topic a stage reads."""
        return frozenset(self.by_topic)

    # --- the fetch loop's side ------------------------------------------------------------------

    def enqueue(self, tp: Any, records: list[Any]) -> None:
        """A fetched chunk of ``tp``: decoded by its stage and queued."""
        runner = self.by_topic[tp.topic]
        queue = runner.queue(tp)
        expected = queue.next_offset
        if expected is not None:
            # A record already buffered or taken (a fetch that overlapped a seek) goes no further.
            if records[0].offset < expected:
                records = [r for r in records if r.offset >= expected]
                if not records:
                    return
        elif tp.topic in self.gap_topics and self.view is not None:
            expected = self.view.committed(tp)
        if expected is not None and records[0].offset > expected and tp.topic in self.gap_topics:
            self.gaps.append((tp, expected, records[0].offset))
        if self.view is not None:
            answered = self.view.answered_at(tp)
            if answered is not None:
                self.chunk_answers[tp] = answered
        items, times = runner.decode(records)
        queue.add(records, items, times)
        runner.wakeup.set()
        self._wake_dependents(runner)

    def _wake_dependents(self, runner: StageRunner) -> None:
        """``runner``'s low watermark may have moved: the stages it holds look again."""
        for waiting in self.dependents.get(id(runner), ()):
            waiting.wakeup.set()

    def note_positions(self) -> None:
        """After a fetch: remember how far each stage partition has been handed over."""
        view = self.view
        if view is None:
            return
        by_topic = self.by_topic
        for tp in view.assignment():
            if tp.topic in by_topic:
                position, _ = view.fetch_state(tp)
                if position is not None:
                    self.fetched[tp] = position
        # A partition now read to its end, or whose end this fetch answered afresh, no longer
        # holds anything back: a stage with records waiting looks again (no record of its own
        # may come to wake it: an answer without records moves no queue).
        for runner in self.stages:
            if any(q.buffered for q in runner.queues.values()):
                runner.wakeup.set()

    def full(self) -> set[Any]:
        """Partitions whose queue is full (every stage partition while halted): leave them out
        of the next fetch."""
        if self.halted is not None and self.view is not None:
            self.space.clear()
            return {tp for tp in self.view.assignment() if tp.topic in self.by_topic}
        limit = self.max_buffered
        out = {
            tp for runner in self.stages for tp, q in runner.queues.items() if q.buffered >= limit
        }
        if out:
            self.space.clear()
        return out

    # --- the stages' side ----------------------------------------------------------------------

    def take(self, runner: StageRunner, now: float) -> Batch:
        """``runner``'s next micro-batch (empty when nothing may go yet)."""
        view = self.view
        if view is not None:
            topics = runner.ranks
            tps = [tp for tp in view.assignment() if tp.topic in topics]
            queues = [runner.queue(tp) for tp in tps]
            caught_up: list[bool | None] = [self._caught_up(tp) for tp in tps]
        else:
            tps = list(runner.queues)
            queues = list(runner.queues.values())
            caught_up = [True] * len(queues)
        if not queues:
            return Batch()
        hold = None
        if runner.held:
            lows: dict[str, float] = {}
            for topic, stage_input in runner.held.items():
                assert stage_input.held_by is not None
                low = self.low_watermark(stage_input.held_by, now)
                lows[topic] = low - stage_input.held_slack
            hold = [lows.get(tp.topic, INF) for tp in tps]
        batch = take(queues, caught_up, runner.batch_max, now, self.max_idle_s, hold)
        if batch.taken:
            for queue in batch.taken:
                if queue.buffered < self.max_buffered:
                    self.space.set()
            for tp, queue, done in zip(tps, queues, caught_up, strict=True):
                if queue.waived:
                    self._report_waived(runner, tp, queue, done, now)
        return batch

    def _report_waived(
        self, runner: StageRunner, tp: Any, queue: Any, caught_up: bool | None, now: float
    ) -> None:
        """A batch went on without ``tp`` (empty, and its wait ran out): counted in
        ``runner.enforced``, and logged once per wait (records it brings later may come after
        records of the other partitions with later event times)."""
        key = (tp, queue.empty_since)
        if key in self._waived_reported:
            return
        self._waived_reported.add(key)
        runner.enforced += 1
        waited = 0.0 if queue.empty_since is None else now - queue.empty_since
        why = (
            "no fetch has answered for it yet (its lag is unknown)"
            if caught_up is None
            else "it has more to read but nothing came"
        )
        log.warning(
            "Stage %s went on without %s[%d] after waiting %.1f s: %s. Records it brings later "
            "may be taken after records of its other inputs with later event times.",
            runner.name,
            tp.topic,
            tp.partition,
            waited,
            why,
        )

    def low_watermark(self, runner: StageRunner, now: float | None = None) -> float:
        """The lowest key ``runner`` may still take from its assigned partitions (INF: none).
        With ``now``, a partition ``runner`` itself no longer waits for does not count."""
        view = self.view
        if view is None:
            return min((q.low(True) for q in runner.queues.values()), default=INF)
        low = INF
        for tp in view.assignment():
            if tp.topic in runner.ranks:
                key = runner.queue(tp).low(self._caught_up(tp), now, self.max_idle_s)
                if key < low:
                    low = key
        return low

    def _idle_wait(self, runner: StageRunner, now: float) -> float:
        """How long a stage with nothing to take may sleep before looking again."""
        waits = [
            min(self.max_idle_s, MAX_LAG_WAIT_S) - (now - q.empty_since)
            for q in runner.queues.values()
            if q.empty_since is not None
        ]
        return max(0.005, min(min(waits, default=1.0), 1.0))

    async def run(self, runner: StageRunner, on_error: Callable[[BaseException], None]) -> None:
        """``runner``'s loop: take a micro-batch, handle it, again; until :meth:`stop`.
        ``on_error`` gets what escapes a batch (an output that fails for good, a bug)."""
        try:
            await self._run(runner)
        except BaseException as exc:
            on_error(exc)
            raise

    async def _run(self, runner: StageRunner) -> None:
        clock = time.monotonic
        lock = self.lock
        while not self.stopping:
            if self.paused or self.halted is not None:
                runner.wakeup.clear()
                await runner.wakeup.wait()
                continue
            now = clock()
            if lock is not None:
                # Taken and handled under the lock: a checkpoint holding it never sees positions
                # past a batch whose outputs are not sent yet (exactly once).
                async with lock:
                    now = clock()
                    batch = [] if self.paused else self.take(runner, now)
                    if batch:
                        started = clock()
                        runner.handle(batch)
            else:
                batch = self.take(runner, now)
                if batch:
                    started = clock()
                    runner.handle(batch)
            if not batch:
                # Held: records were there and the alignment kept them back; idle: none were.
                held = any(q.buffered for q in runner.queues.values())
                runner.wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(runner.wakeup.wait(), self._idle_wait(runner, now))
                waited = clock() - now
                if held:
                    runner.held_s += waited
                else:
                    runner.idle_s += waited
                continue
            runner.busy_s += clock() - started
            runner.batches += 1
            runner.records += len(batch)
            runner.last_progress = clock()
            if self.uncommitted_since is None:
                self.uncommitted_since = runner.last_progress
            self._wake_dependents(runner)
            await asyncio.sleep(0)

    # --- checkpoints and rebalances --------------------------------------------------------------

    async def checkpoint(self) -> dict[Any, int]:
        """Make everything the stages have done durable; the positions to commit."""
        if self._checkpoint is None:
            return self.positions()
        result: dict[Any, int] = await self._checkpoint()
        return result

    def pause(self) -> None:
        """The stage loops take no new batch until :meth:`resume` (a rebalance)."""
        self.paused = True

    def resume(self) -> None:
        """The stage loops go on (unless halted)."""
        self.paused = False
        for runner in self.stages:
            runner.wakeup.set()

    def halt(self, reason: str) -> None:
        """Read and process nothing more, whatever the assignment, until :meth:`unhalt`: the
        topics' layout no longer matches the state's (partition counts), and a record taken now
        could meet the wrong state or a changelog partition that does not exist."""
        self.halted = reason

    def unhalt(self) -> None:
        """Read and process again."""
        self.halted = None
        self.space.set()
        for runner in self.stages:
            runner.wakeup.set()

    def committed(self, offsets: dict[Any, int]) -> None:
        """Faust committed ``offsets`` (after a checkpoint): tell the commit hooks."""
        self.committed_positions.update(offsets)
        self.uncommitted_since = time.monotonic() if self.behind() else None
        for hook in self.commit_hooks:
            try:
                hook(offsets)
            except Exception:  # housekeeping (the purge): never worth stopping the worker
                log.exception("after-commit hook %r failed; going on", hook)

    def reset(self) -> None:
        """Drop every queued record and position, and run the reset hooks (the states' caches):
        after a checkpoint, when the partitions change. They are read again from their
        committed offsets once the rebalance is over."""
        for runner in self.stages:
            for queue in runner.queues.values():
                queue.clear()
            runner.queues.clear()
        self.fetched.clear()
        self.chunk_answers.clear()
        self._waived_reported.clear()
        self.committed_positions.clear()
        self.uncommitted_since = None
        for hook in self.reset_hooks:
            hook()
        self.generation += 1
        self.space.set()

    def stop(self) -> None:
        """Stop the stage loops after their current batch."""
        self.stopping = True
        for runner in self.stages:
            runner.wakeup.set()
