"""Fetched records handed to the worker's batch engine a partition's chunk at a time.

What Faust does (faust-streaming 0.15.3, ``faust/transport/consumer.py``): its fetch loop
(``Consumer._drain_messages``) turns every fetched record into a ``ConsumerMessage``, hands it to
the conductor, which wraps it in an ``Event`` and puts it in each subscribed stream's queue; the
agent's stream iterates events one by one, and every event is acknowledged on its own. That is
40-50 µs of bookkeeping per record on the event loop's thread, for each of the three records a
scored transaction passes through (measured: README, Performance).

What :class:`BatchConsumer` does instead, for the topics the engine reads
(``stream_app.pipeline.engine.BatchEngine.topics``): the same loop fetches, and each fetched
partition's records go to :meth:`BatchEngine.enqueue` as one list (aiokafka's records as they
are). Records of any other topic (the tables' changelogs during recovery, standbys) take Faust's
path unchanged. Faust still owns everything else:

- the consumer group, assignment, pausing and seeking (recovery, ``faust_ext.recovery``);
- the commit: Faust's commit timer, a rebalance and a shutdown all call ``commit()``;
  :meth:`BatchConsumer.force_commit` first runs the engine's checkpoint (state to the tables and
  their changelogs, outputs delivered or committed in a transaction), then commits the
  positions the checkpoint returned through Faust's own ``_commit_offsets``;
- a rebalance: :meth:`BatchConsumer.on_partitions_revoked` stops the flow, pauses the stage
  loops, commits through the checkpoint, resets the engine's queues (the partitions are read
  again from the committed offsets once the rebalance is over), then runs Faust's revoke; a stop
  (:meth:`BatchApp.on_stop`) ends the stage loops before Faust's final commit;
- back-pressure: a partition whose engine queue is full is left out of the fetch
  (:meth:`BatchConsumer._fetch`).

:meth:`BatchConsumer.fetch_state` reads aiokafka's per-partition fetch position and end offset,
which the engine's event-time alignment needs (is there more to fetch of this partition?), and
:meth:`BatchConsumer.answered_at` when the fetch answer that set that end came (is the end newer
than the records fetched of the other partitions?).

Checked against faust-streaming 0.15.3 and aiokafka 0.14.0 (``stream_app.faust_ext.VERSIONS``);
the copied fetch loop is pinned by the SHA-256 of Faust's source it came from
(``stream_app.faust_ext.dispatch.DRAIN_MESSAGES_SHA256``) and the aiokafka internals it reads are
checked at start (:func:`aiokafka_problems`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Set
from typing import Any, ClassVar, cast

from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from mode import Service

from stream_app.faust_ext.dispatch import (
    DRAIN_MESSAGES_SHA256,
    FastDispatchApp,
    FastDispatchConsumer,
    deliver,
    source_digest,
)
from stream_app.pipeline.engine import BatchEngine

log = logging.getLogger(__name__)

FAUST_SOURCE_SHA256 = {
    "_drain_messages": DRAIN_MESSAGES_SHA256,
    "_wait_next_records": "1f67795402ab6d82f2f21a839661796459e7106927b5468cb89a8326c238b8cb",
    "force_commit": "c78fef197a17e212fe0c9cdf90a381265839cc5b12d9fb35b1bad27eba535d41",
    "getmany": "1b41be7cf1f1a173d04ebaefd0b9418d5eb0fa7e5b88427466aad16f88a40e56",
}
"""SHA-256 (whitespace collapsed) of each ``faust.transport.consumer.Consumer`` method that
:class:`BatchConsumer` copies or rewrites, as in faust-streaming 0.15.3 (``getmany``: the
per-record filters the copied loop repeats)."""


def changed_methods() -> list[str]:
    """The Faust methods :class:`BatchConsumer` was made from whose installed source differs."""
    from faust.transport.consumer import Consumer

    return [
        name
        for name, digest in FAUST_SOURCE_SHA256.items()
        if source_digest(getattr(Consumer, name)) != digest
    ]


def aiokafka_problems() -> list[str]:
    """The aiokafka internals :meth:`BatchConsumer.fetch_state` reads that this aiokafka lacks."""
    from aiokafka.consumer.subscription_state import Assignment, TopicPartitionState

    problems = [
        f"TopicPartitionState.{name}"
        for name in ("has_valid_position", "position")
        if not hasattr(TopicPartitionState, name)
    ]
    assigned = ("highwater", "lso", "_position", "timestamp")
    problems += [
        f"TopicPartitionState.{name}"
        for name in assigned
        if name not in TopicPartitionState.__init__.__code__.co_names
    ]
    if not hasattr(Assignment, "state_value"):
        problems.append("Assignment.state_value")
    from aiokafka import AIOKafkaConsumer

    if "_fetch_max_wait_ms" not in AIOKafkaConsumer.__init__.__code__.co_names:
        problems.append("AIOKafkaConsumer._fetch_max_wait_ms")
    return problems


class BatchConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's aiokafka consumer thread, its worker consumer's ``fetch_max_wait_ms`` the app's
    :attr:`BatchApp.fetch_max_wait_ms` instead of Faust's fixed 1500.

    Why it matters (aiokafka 0.14 ``Fetcher._get_actions_per_node``): one fetch per broker is in
    flight at a time, and a partition whose fetched records are not handed over yet is left out
    of the next fetch once they are 100 ms old. While the worker's event loop is busy (a
    checkpoint writing its states), that fetch can name only partitions with nothing new (Faust's
    ``__assignor-__leader``): the broker holds it for the whole wait, and every other partition's
    next fetch waits behind it. Measured at 2,500 tx/s: a 1.5 s stop after every third
    checkpoint or so (README, Performance).
    """

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads the attribute when start() builds its Fetcher, after this returns.
        consumer._fetch_max_wait_ms = cast(Any, self.app).fetch_max_wait_ms
        return consumer


class BatchConsumer(FastDispatchConsumer):
    """Faust's aiokafka consumer feeding the worker's :class:`BatchEngine` (module docstring)."""

    read_committed: ClassVar[bool] = False

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return BatchConsumerThread(self, loop=self.loop, beacon=self.beacon)

    @property
    def engine(self) -> BatchEngine | None:
        """The app's engine (None: Faust's per-record path for everything)."""
        return cast(Any, self.app).engine

    # --- what the engine reads ------------------------------------------------------------------

    def fetch_state(self, tp: Any) -> tuple[int | None, int | None]:
        """``tp``'s fetch position and end offset (the last stable offset when this consumer
        reads committed records), from aiokafka's subscription state; (None, None) when the
        partition is not assigned or the consumer not started."""
        consumer = self._thread._consumer
        if consumer is None:
            return None, None
        assignment = consumer._subscription.subscription
        assignment = assignment.assignment if assignment is not None else None
        if assignment is None:
            return None, None
        state = assignment.state_value(tp)
        if state is None:
            return None, None
        position = state.position if state.has_valid_position else None
        end = state.lso if self.read_committed and state.lso is not None else state.highwater
        return position, end

    def answered_at(self, tp: Any) -> int | None:
        """When the last fetch answer for ``tp`` came (epoch ms; aiokafka's
        ``last_poll_timestamp``); None when none has, or ``tp`` is not assigned."""
        consumer = self._thread._consumer
        if consumer is None:
            return None
        assignment = consumer._subscription.subscription
        assignment = assignment.assignment if assignment is not None else None
        if assignment is None:
            return None
        state = assignment.state_value(tp)
        answered: int | None = state.timestamp if state is not None else None
        return answered

    def committed(self, tp: Any) -> int | None:
        """``tp``'s committed offset as Faust keeps it (read from the broker at assignment by
        ``perform_seek``, then updated by every commit); None when the group has none."""
        offset: int | None = self._committed_offset.get(tp)
        return offset

    # --- fetching --------------------------------------------------------------------------------

    async def _fetch(self, engine: BatchEngine, timeout: float) -> tuple[Any, set[TP]]:
        """One fetch: Faust's ``_wait_next_records`` with full engine partitions left out."""
        if not self.flow_active:
            await self.wait(self.can_resume_flow)  # type: ignore[arg-type]
        try:
            self.not_waiting_next_records.set()
            active = set(self._get_active_partitions())
            full = engine.full()
            if full:
                active -= full
            if not active:
                # Nothing to fetch now: wait for a stage to make room (or a rebalance).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(engine.space.wait(), 0.1)
                return {}, active
            return await self._getmany(active_partitions=active, timeout=timeout), active
        finally:
            self.not_waiting_next_records.set()

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover (the worker's)
        engine = self.engine
        if engine is None:
            await super()._drain_messages(fetcher)
            return
        # Faust 0.15.3's ``Consumer._drain_messages`` (BSD-3-Clause) with its per-record
        # delivery kept for the topics the engine does not read; see the module docstring.
        callback = self.callback
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        engine_topics = engine.topics
        to_message = self._to_message
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(CONSUMER_FETCHING)
                records, active = await self._fetch(engine, 1.0)
                # The generation after the fetch, as Faust's getmany reads it: what aiokafka
                # returned matches its positions now (a seek in between discards a stale fetch),
                # so dropping it is safe only if a rebalance (whose recovery seeks every partition
                # back to its committed offset) begins while it is handed over. Read before the
                # fetch, a fetch that began before a rebalance and returned after its seek was
                # dropped with aiokafka's position already past it: those records were lost.
                generation = self.app.consumer_generation_id
                if records and not self.should_stop and self.flow_active:
                    for tp, batch in records.items():
                        if not self.flow_active or self.app.consumer_generation_id != generation:
                            break  # a rebalance began: what was fetched is read again later
                        if tp not in active and tp not in self._buffered_partitions:
                            continue
                        if tp.topic in engine_topics:
                            engine.enqueue(tp, batch)
                            continue
                        for record in batch:
                            message = to_message(tp, record)
                            offset = message.offset
                            r_offset = get_read_offset(tp)
                            if r_offset is None or offset >= r_offset:
                                gap = offset - (r_offset or 0)
                                if gap > 1 and r_offset and acks_enabled_for(message.topic):
                                    await self._add_gap(tp, r_offset + 1, offset - 1)
                                if commit_every is not None and self._n_acked >= commit_every:
                                    self._n_acked = 0
                                    await self.commit()
                                await deliver(self, callback, message)
                                set_read_offset(tp, offset)
                    engine.note_positions()
                elif not records:
                    engine.note_positions()
                unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(CONSUMER_FETCHING)

    # --- commits ----------------------------------------------------------------------------------

    async def force_commit(self, topics: Any = None, start_new_transaction: bool = True) -> bool:
        """Checkpoint the engine, then commit its positions (and any Faust-acknowledged offsets of
        other topics) through Faust's ``_commit_offsets``."""
        engine = self.engine
        if engine is None:
            return await super().force_commit(topics, start_new_transaction)
        sensor_state = self.app.sensors.on_commit_initiated(self)
        positions = await engine.checkpoint()
        offsets: dict[TP, int] = {}
        for tp, offset in positions.items():
            if topics is not None and tp not in topics and tp.topic not in topics:
                continue
            if self._should_commit(tp, offset):
                offsets[tp] = offset
        for tp in self._filter_tps_with_pending_acks(topics):
            acked = self._new_offset(tp)
            if acked is not None and self._should_commit(tp, acked):
                offsets[tp] = acked
        did_commit = False
        if offsets:
            did_commit = await self._commit_offsets(
                offsets, start_new_transaction=start_new_transaction
            )
            if did_commit:
                engine.committed(offsets)
        self.app.sensors.on_commit_completed(self, sensor_state)
        return did_commit

    async def on_partitions_revoked(self, revoked: Set[TP]) -> None:
        """Stop the flow, commit what the stages have done, drop the engine's queues and its
        states' cache, then Faust's revoke."""
        engine = self.engine
        if engine is not None and not self.app.should_stop:
            self.stop_flow()
            engine.pause()
            try:
                await self.commit()
                engine.reset()
            finally:
                engine.resume()
        await super().on_partitions_revoked(revoked)


class BatchTransport(faust_aiokafka.Transport):
    """Faust's aiokafka transport, building :class:`BatchConsumer`."""

    Consumer = BatchConsumer


class BatchApp(FastDispatchApp):
    """A Faust app whose consumer feeds a :class:`BatchEngine` (set :attr:`engine` before the
    app starts; None keeps Faust's per-record path)."""

    transport_class: ClassVar[type[faust_aiokafka.Transport]] = BatchTransport
    engine: BatchEngine | None = None
    fetch_max_wait_ms: int = 100  # see BatchConsumerThread

    async def on_stop(self) -> None:
        """Stop the stage loops first; Faust's stop then commits through the checkpoint
        (``Consumer.wait_empty`` ends with a commit). (Not in ``wait_empty``: Faust calls that on
        every revoke too.)"""
        if self.engine is not None:
            self.engine.stop()
        await super().on_stop()

    def _new_transport(self) -> Any:
        transport = super()._new_transport()
        problems = aiokafka_problems()
        if problems:
            raise RuntimeError(
                "stream_app.faust_ext.batch reads aiokafka internals this aiokafka lacks: "
                + ", ".join(problems)
                + " (see stream_app/faust_ext/UPSTREAM.md)"
            )
        changed = changed_methods()
        if changed:
            log.warning(
                "faust-streaming changed Consumer.%s since 0.15.3; compare "
                "stream_app/faust_ext/batch.py with it (see UPSTREAM.md)",
                ", Consumer.".join(changed),
            )
        return transport

    def register_engine(self, engine: BatchEngine, partitions: int) -> None:
        """Subscribe the app to the engine's topics (Faust subscribes to the topics its
        conductor knows: agents add theirs, the engine's are added here)."""
        self.engine = engine
        for name in sorted(engine.topics):
            self.topics.add(self.topic(name, partitions=partitions))
