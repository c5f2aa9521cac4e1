"""Seek the input partitions to their committed offsets *before* Faust resumes them after recovery.

What Faust does wrong (faust-streaming 0.15.3, ``faust/tables/recovery.py``): when a table
recovery ends, ``Recovery.on_recovery_completed`` first resumes the stream partitions
(``consumer.resume_partitions``) and only then awaits ``consumer.perform_seek()``, which asks the
broker for the committed offsets and resets Faust's per-partition bookkeeping (``_read_offset``,
``_committed_offset``) and aiokafka's positions to them. ``_resume_streams`` (the path of an app
without tables) has the same order. The Fetcher has been running since the changelogs were read,
and two method-queue workers serve the consumer thread, so during that await a fetch already
hands the streams records of the just-resumed partitions, and the records of a fetch that was in
flight keep arriving after the seek. Seen in a worker after a kill -9 (``transactions.by-terminal``
partition 1, committed offset 24477): records 24477..24484 delivered before the seek returned, the
seek set ``_read_offset`` back to 24477, the next record of the old batch (24485) then looked like
a gap 24478..24485, which Faust counts as acknowledged: those offsets entered its acked list a
second time, and from then on ``Consumer._new_offset`` advanced the commit by ONE offset per commit
(24479, 24480, ... for the rest of that life) while the stream went on; 5.6 s later the re-fetch
from 24477 arrived and 1,772 records were dropped as already read. Depending on how the race
falls, a life scores records twice (the old batch finished before the seek reset
``_read_offset``), commits nearly nothing (so the next restart re-reads thousands of records), or
acknowledges records by a false gap before they are processed (a kill then loses them).
In faust-streaming's 2021 code both seek first (issue #216; PR #217 fixed ``_resume_streams``,
``on_recovery_completed`` already did); 0.15.3 resumes first in both.

What the workaround does: :class:`SeekFirstRecovery` overrides those two methods with Faust's own
steps in the fixed order: seek every assigned partition to its committed offset while the stream
partitions are still paused (a partition without a committed offset keeps the position aiokafka
gave it on assignment from ``consumer_auto_offset_reset``: no record of it has been handed out
yet), log the offsets the streams resume from, then resume them. Nothing else changes. Faust
uses it through its supported ``TableManager`` setting (:class:`SeekFirstTableManager`, which
only builds this Recovery).

Checked against faust-streaming 0.15.3 with aiokafka 0.14.0 (:data:`CHECKED_FAUST_VERSIONS`).
:func:`faust_problems` lists the Faust members the override relies on that are missing; the table
manager refuses to start (``RuntimeError``) when there is any. When Faust's two methods differ from
the source the override was made from (:data:`RECOVERY_SOURCE_SHA256`), it logs a warning and
still seeks first: compare them then, and drop this module once Faust seeks first again
(``tests/unit/test_faust_recovery.py`` fails when it does).
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
from collections.abc import Iterable, Mapping, Set
from typing import Any, cast

import faust
from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery
from faust.types import TP

log = logging.getLogger(__name__)

CHECKED_FAUST_VERSIONS = ("0.15.3",)
"""faust-streaming versions whose recovery code this override was compared with."""

RECOVERY_SOURCE_SHA256 = {
    "on_recovery_completed": "861bcb7bfde2b1f543cd0733f6d47a49e8ab39f50b886ee556dac9f7662af368",
    "_resume_streams": "e841a9bf6c727d0364de66d52c5fae513e0108d89be9202e9300821acd2e0c8b",
}
"""SHA-256 of the source (whitespace collapsed) of the ``Recovery`` methods overridden here, as
in faust-streaming 0.15.3."""

RECOVERY_MEMBERS = (
    "on_recovery_completed",
    "_resume_streams",
    "_wait",
    "_set_recovery_ended",
    "_is_changelog_tp",
    "actives_for_table",
    "standbys_for_table",
)
"""What :class:`SeekFirstRecovery` overrides or calls on Faust's ``Recovery``."""

CONSUMER_MEMBERS = ("perform_seek", "resume_partitions", "resume_flow", "assignment")
"""What it calls on Faust's consumer (``faust.transport.consumer.Consumer``)."""


def faust_problems(
    recovery: type = Recovery,
    consumer: type | None = None,
    manager: type = TableManager,
) -> list[str]:
    """The Faust members the workaround relies on that these classes lack (empty when fine)."""
    if consumer is None:
        from faust.transport.consumer import Consumer

        consumer = Consumer
    problems = [
        f"faust.tables.recovery.Recovery.{name}"
        for name in RECOVERY_MEMBERS
        if not hasattr(recovery, name) and name not in getattr(recovery, "__annotations__", {})
    ]
    problems += [
        f"faust.transport.consumer.Consumer.{name}"
        for name in CONSUMER_MEMBERS
        if not hasattr(consumer, name)
    ]
    if not hasattr(manager, "_recovery"):
        problems.append("faust.tables.manager.TableManager._recovery")
    return problems


def source_digest(function: Any) -> str:
    """SHA-256 of ``function``'s source with whitespace collapsed."""
    return hashlib.sha256(" ".join(inspect.getsource(function).split()).encode()).hexdigest()


def changed_methods(recovery: type = Recovery) -> list[str]:
    """The overridden ``Recovery`` methods whose source is not the one they were copied from."""
    return [
        name
        for name, digest in RECOVERY_SOURCE_SHA256.items()
        if source_digest(getattr(recovery, name)) != digest
    ]


def stream_partitions(assignment: Iterable[TP], changelog_topics: Set[str]) -> set[TP]:
    """The assigned partitions the streams read: every one that is not a table changelog."""
    return {tp for tp in assignment if tp.topic not in changelog_topics}


def describe_offsets(offsets: Mapping[TP, int | None], partitions: Iterable[TP]) -> str:
    """``topic [p]=offset ...`` per topic of ``partitions`` (``none``: nothing committed)."""
    by_topic: dict[str, list[str]] = {}
    for tp in sorted(partitions):
        offset = offsets.get(tp)
        by_topic.setdefault(tp.topic, []).append(
            f"[{tp.partition}]={'none' if offset is None else offset}"
        )
    return "; ".join(
        f"{topic} none" if all(p.endswith("=none") for p in parts) else f"{topic} {' '.join(parts)}"
        for topic, parts in by_topic.items()
    )


class SeekFirstRecovery(Recovery):
    """Faust's Recovery, resuming the stream partitions only after they were seeked."""

    async def _seek_then_resume(self, assignment: Set[TP]) -> None:
        """Seek (streams still paused), resume the stream partitions, then the flow."""
        app = self.app
        consumer = app.consumer
        streams = stream_partitions(assignment, self.tables.changelog_topics)
        if assignment:
            self.log.info("Seek stream partitions to committed offsets (before resuming them).")
            await self._wait(consumer.perform_seek(), timeout=app.conf.broker_request_timeout)
            committed = getattr(consumer, "_committed_offset", {})
            self.log.info(
                "Streams resume at committed offsets: %s", describe_offsets(committed, streams)
            )
        consumer.resume_partitions(streams)
        self.completed.set()
        self.log.info("Resuming flow...")
        app.flow_control.resume()
        consumer.resume_flow()
        # finally make sure the fetcher is running.
        await cast(Any, app)._fetcher.maybe_start()

    async def _resume_streams(self, generation_id: int = 0) -> None:
        """Faust's ``_resume_streams`` (an app without tables) with the seek first."""
        app = self.app
        await app.on_rebalance_complete.send()
        assignment = app.consumer.assignment()
        if app.consumer_generation_id != generation_id:
            self.log.warning("Recovery rebalancing again")
            return
        if not assignment:
            self.log.info("Resuming streams with empty assignment")
        await self._seek_then_resume(assignment)
        self.tables.on_actives_ready()
        self.tables.on_standbys_ready()
        app.on_rebalance_end()
        self.log.info("Worker ready")

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        """Faust's ``on_recovery_completed`` with the seek before the resume."""
        app = self.app
        self.log.info("Restore complete!")
        await app.on_rebalance_complete.send()
        self._set_recovery_ended()
        # This needs to happen if all goes well
        callbacks = [
            asyncio.ensure_future(
                table.on_recovery_completed(
                    self.actives_for_table[table], self.standbys_for_table[table]
                )
            )
            for table in self.tables.values()
        ]
        if callbacks:
            await asyncio.wait(callbacks)
        assignment = app.consumer.assignment()
        if app.consumer_generation_id != generation_id:
            self.log.warning(
                f"Recovery rebalancing again app id {app.consumer_generation_id} "
                f"param {generation_id}"
            )
            return
        await self._seek_then_resume(assignment)
        self.tables.on_actives_ready()
        if not app.assignor.assigned_standbys():
            self.tables.on_standbys_ready()
        app.on_rebalance_end()
        self.log.info("Worker ready")


class SeekFirstTableManager(TableManager):
    """Faust's TableManager with :class:`SeekFirstRecovery` (``TableManager`` app setting)."""

    @property
    def recovery(self) -> Recovery:
        """Recovery service used by this table manager (seeks before it resumes)."""
        if self._recovery is None:
            problems = faust_problems()
            if problems:
                raise RuntimeError(
                    "stream_app.faust_ext.recovery: this Faust lacks what the recovery-order "
                    f"workaround relies on ({', '.join(problems)}); faust-streaming "
                    f"{faust.__version__} is installed, the workaround was checked against "
                    f"{', '.join(CHECKED_FAUST_VERSIONS)}"
                )
            changed = changed_methods()
            if changed:
                log.warning(
                    "faust-streaming %s: Recovery.%s differ(s) from the 0.15.3 source that "
                    "stream_app/faust_ext/recovery.py overrides; compare them, and drop the "
                    "workaround if Faust now seeks the stream partitions before resuming them",
                    faust.__version__,
                    ", Recovery.".join(changed),
                )
            self._recovery = SeekFirstRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery


def settled(app: faust.App) -> bool:
    """Whether the worker is past its first recovery and not in a rebalance or a recovery now
    (progress is only expected then)."""
    recovery = getattr(app.tables, "recovery", None)
    completed = recovery is not None and recovery.completed.is_set()
    return completed and not getattr(app, "rebalancing", False) and not app.in_recovery
