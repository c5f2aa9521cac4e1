"""The engine's checkpoint before every offset commit, and what follows each commit.

A checkpoint writes each changed entity state once to its table and changelog and makes the
outputs durable: delivered (at least once) or committed with the input offsets in one Kafka
transaction (``processing_guarantee=exactly_once``). Any failure ends the process before the
commit (:func:`~stream_app.worker.crash.die`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from confluent_kafka import TopicPartition

from stream_app.config import Settings
from stream_app.outputs.purge import RepartitionPurger, confluent_version, delete_records_safe
from stream_app.pipeline.engine import BatchEngine
from stream_app.pipeline.floors import CommitFloors
from stream_app.pipeline.heap import HeapKeeper
from stream_app.worker.crash import guard
from stream_app.worker.outputs import Outputs
from stream_app.worker.tables import WorkerTables

log = logging.getLogger("stream_app.worker")


class Checkpoint:
    """The batch engine and the checkpoint it runs before each commit."""

    def __init__(
        self,
        settings: Settings,
        outputs: Outputs,
        tables: WorkerTables,
        floors: Sequence[CommitFloors],
    ) -> None:
        """``floors``: the stages' replay floors (:mod:`stream_app.pipeline.floors`): what each
        stage may evict follows its commits."""
        self.outputs = outputs
        self.tables = tables
        # Exactly once: the stages hold this lock while they handle a batch.
        self.lock = asyncio.Lock() if outputs.transactional is not None else None
        self.one_at_a_time = asyncio.Lock()  # a revoke's checkpoint waits for the periodic one
        self.heap = HeapKeeper()  # the collector kept off what was loaded at start-up
        self.last_committed: dict[Any, int] = {}
        self.engine = BatchEngine(
            max_buffered=settings.max_buffered,
            max_idle_s=settings.max_task_idle_s,
            checkpoint=self.run,
            lock=self.lock,
        )
        self.engine.reset_hooks += [store.clear for store in tables.stores]
        self.engine.reset_hooks.append(self.last_committed.clear)
        self.engine.reset_hooks += [floor.reset for floor in floors]
        self.engine.commit_hooks += [floor.committed for floor in floors]

    async def run(self) -> dict[Any, int]:
        """States to their tables and changelogs, outputs durable; the positions to commit."""
        with guard("checkpoint", fatal=True):
            if self.lock is None:
                return await self._at_least_once()
            return await self._exactly_once(self.lock)

    async def _at_least_once(self) -> dict[Any, int]:
        # The positions and the keys their events changed, taken together; the states are
        # written while the stages go on (StateStore.write_out_yielding), then everything sent
        # so far is delivered. One checkpoint at a time: a revoke's checkpoint running beside a
        # periodic one would be followed by the engine's reset, and the reset drops the cached
        # states the periodic one has still to write while its offsets are committed.
        producer, stores = self.outputs.producer, self.tables.stores
        async with self.one_at_a_time:
            positions = self.engine.positions()
            dirty = [store.take_dirty() for store in stores]
            for store, keys in zip(stores, dirty, strict=True):
                await store.write_out_yielding(keys)
            await producer.settle(producer.rotate())
            for writer in self.tables.writers:
                writer.persist()
            self.heap.after_checkpoint()
            return positions

    async def _exactly_once(self, lock: asyncio.Lock) -> dict[Any, int]:
        # The stages wait (the transaction must hold the outputs of the committed positions
        # only); the writes still let the fetches run between chunks.
        producer, transactional = self.outputs.producer, self.outputs.transactional
        assert transactional is not None
        async with lock:
            positions = self.engine.positions()
            for store in self.tables.stores:
                await store.write_out_yielding(store.take_dirty())
            await producer.settle(producer.rotate())
            for writer in self.tables.writers:
                writer.persist()
            changed = [
                TopicPartition(tp.topic, tp.partition, offset)
                for tp, offset in positions.items()
                if self.last_committed.get(tp) != offset
            ]
            await transactional.commit(changed)
            self.last_committed.clear()
            self.last_committed.update(positions)
            self.heap.after_checkpoint()
            return positions


def install_purge(app: Any, settings: Settings, engine: BatchEngine, by_terminal: str) -> None:
    """What the terminal stage has committed of the repartition topic is deleted (its records
    carry source timestamps, so it has no time-based retention: :mod:`stream_app.outputs.purge`).
    """
    if settings.repartition_purge_s <= 0:
        return
    if not delete_records_safe():
        log.warning(
            "confluent-kafka %s cannot delete records safely (its delete_records frees memory "
            "it does not own, confluent-kafka-python #2275): %s is not purged and grows until "
            "confluent-kafka is 2.16 or newer",
            confluent_version(),
            by_terminal,
        )
        return
    purger = RepartitionPurger(settings, by_terminal, settings.repartition_purge_s)
    engine.commit_hooks.append(purger.after_commit)

    @app.timer(settings.repartition_purge_s)
    async def purge_when_quiet() -> None:
        """What a commit left unpurged (it came within the interval of the previous purge, or
        its request was still out) is purged here, from every offset committed so far: once the
        stream goes quiet no commit would ask again."""
        purger.after_commit(dict(engine.committed_positions))
