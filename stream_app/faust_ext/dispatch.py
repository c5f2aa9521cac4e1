"""Hand each fetched record to Faust's streams without four asyncio tasks per record.

What Faust does (faust-streaming 0.15.3, ``faust/transport/consumer.py``,
``Consumer._drain_messages``): for every record it fetches, it runs
``await self.wait_first(callback(message), self.suspend_flow.wait())`` so that a rebalance
(``suspend_flow`` set) can abandon a delivery that is blocked on a full stream buffer.
``mode.Service.wait_first`` wraps the delivery, the ``suspend_flow`` wait and the service's
``stopped`` and ``crashed`` waits in four tasks, runs ``asyncio.wait`` over them and cancels the
three losers. The delivery itself (``Conductor.on_message``) almost never blocks: it puts the
event in each subscribed stream's queue. Measured with ``cProfile`` on the two-stage worker
(40,000 records), that wrapping created 186,000 tasks, ran 499,000 loop callbacks and was the
largest single cost on the event loop's thread.

What :class:`FastDispatchConsumer` does: the same loop (copied from Faust, one call changed),
where each delivery first runs as a plain coroutine step. When it finishes without suspending
(the stream buffer had room), that is the whole delivery: no task, no wait. When it suspends, the
rest of it (:class:`Resumed`, the same coroutine continued, not restarted) goes through Faust's
``wait_first`` exactly as before, so a rebalance still abandons a blocked delivery. While the flow
is suspended or the consumer is stopping, every delivery takes Faust's path from the start.

:class:`FastDispatchApp` installs it for the aiokafka driver (the worker's default); other drivers
keep their consumer. Checked against faust-streaming 0.15.3 (:data:`CHECKED_FAUST_VERSIONS`): the
copy is used only while the installed Faust's ``_drain_messages`` has the source it was copied
from (:data:`DRAIN_MESSAGES_SHA256`); any other Faust gets its own loop back and a warning.

The same consumer never commits past an event in flight (faust-streaming issue #606; the idea
of its open PR #707). With an agent of several actors, one actor can acknowledge later offsets
while another still holds an earlier event. Faust's ``Consumer._new_offset`` commits the first run
of consecutive acked offsets; its only guard, "the run starts more than one offset past the
committed one", lets exactly one missing offset through (the one at the committed position, i.e.
the event in flight) and is skipped before a partition's first commit, so the commit passed the
slow event and a kill -9 lost it (``tests/faults/test_concurrent_actors_kill.py`` showed it on
0.15.3: committed 30 while offset 5 was in flight). The copy of ``_new_offset`` here cuts the run
at the lowest offset of that partition that a stream has taken and not yet acknowledged
(:func:`in_flight_floor`). Faust's guard stays: it is what lets a partition's commits cross a
transaction marker at the committed position. For the same reason the copied fetch loop records a
gap (offsets no record has: transaction markers, compaction) up to the offset *before* the record
it delivers; Faust's range includes that record, which counted it as acknowledged while it still
waited in a stream's queue.

It also commits on revoke. Faust's ``Consumer.on_partitions_revoked`` drops the acked offsets of
the revoked partitions first and only then runs the app's handler (stop the flow, clear the
streams' queues, wait for the events the streams took, committing as they are acknowledged), so
what a partition acknowledged since the last periodic commit is committed only if an event of it
was still in flight to close the run; otherwise its next owner processes it again. Here the
handler runs first, then the acknowledged offsets of the revoked partitions are committed
(:meth:`FastDispatchConsumer.commit_revoked`), then they are dropped. Only acknowledged offsets are
committed, never past an event in flight (the worker's agents acknowledge a micro-batch after its
outputs are delivered). A subclass that commits offsets otherwise (inside Kafka transactions) sets
:attr:`FastDispatchConsumer.commit_on_revoke` to False and gets Faust's own method back.

The copies of ``_new_offset`` and ``on_partitions_revoked`` are pinned too
(:data:`FAUST_SOURCE_SHA256`); when the installed Faust's differ from the source they were copied
from, the worker logs a warning and keeps them (dropping them would bring the lost events and the
duplicates back): compare them then.

The worker's own agents run one actor each on purpose: the windowed per-entity state must see a
key's records in order. The in-flight guard matters to any agent with ``concurrency`` above 1.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterable, Set
from typing import Any, ClassVar, cast

import faust
from faust.transport.consumer import (
    CONSUMER_FETCHING,
    CONSUMER_PARTITIONS_REVOKED,
)
from faust.transport.consumer import Consumer as BaseConsumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message
from faust.utils.functional import consecutive_numbers
from faust.utils.tracing import traced_from_parent_span
from mode import Service

log = logging.getLogger(__name__)

CHECKED_FAUST_VERSIONS = ("0.15.3",)
"""faust-streaming versions whose ``Consumer._drain_messages`` the copy below was compared with."""

DRAIN_MESSAGES_SHA256 = "30fba6e560f13bf79dd171ef4df3870592550143c652d6db5c2c305d38e08e6c"
"""SHA-256 of Faust's ``Consumer._drain_messages`` source (whitespace collapsed) that the copy
below was made from: a Faust whose loop differs must be re-read before this override is used."""

FAUST_SOURCE_SHA256 = {
    "_drain_messages": DRAIN_MESSAGES_SHA256,
    "_new_offset": "041e8dc30f2ebc0c78e8f00d33a34c1b0b706f25e9384625208c7003539857af",
    "on_partitions_revoked": "2550a9105d4c6b242bb3a6adab79595eea5369fdaac63b281e53308c7caf3caa",
}
"""SHA-256 of the source (whitespace collapsed) of each ``faust.transport.consumer.Consumer``
method copied below, as in faust-streaming 0.15.3."""


class Resumed:
    """The rest of a coroutine that has already run up to its first suspension.

    ``yielded`` is what that first step yielded (the future it waits for). Awaiting this yields
    it to the event loop and then drives the same coroutine on, passing results, exceptions and
    cancellation through, as ``await coroutine`` would have from the start.
    """

    __slots__ = ("coro", "yielded")

    def __init__(self, coro: Coroutine[Any, Any, Any], yielded: Any) -> None:
        self.coro = coro
        self.yielded = yielded

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, yielded = self.coro, self.yielded
        while True:
            try:
                sent = yield yielded
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:
                try:
                    yielded = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    yielded = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


async def deliver(
    consumer: Any,
    callback: Callable[[Any], Awaitable[Any]],
    message: Any,
) -> None:
    """Deliver ``message`` as Faust does, without its tasks when the delivery does not block."""
    if consumer.suspend_flow.is_set() or consumer.should_stop:
        await consumer.wait_first(callback(message), consumer.suspend_flow.wait())
        return
    coro = cast(Coroutine[Any, Any, Any], callback(message))
    try:
        yielded = coro.send(None)
    except StopIteration:
        return
    await consumer.wait_first(
        cast(Awaitable[Any], Resumed(coro, yielded)), consumer.suspend_flow.wait()
    )


def in_flight_floor(messages: Iterable[Message], tp: TP) -> int | None:
    """The lowest offset of ``tp`` among ``messages`` not acknowledged yet (None: there is none).

    ``messages`` is the consumer's ``_unacked_messages``: Faust adds a message when a stream takes
    its event from the queue, and the message is acknowledged when every stream is done with it
    (``take_events``: after the agent's batch). One stream's queue is first in, first out, and
    an agent's actors share it, so an event still queued comes after every event taken from its
    partition: no acknowledged offset lies beyond it.
    """
    return min((m.offset for m in messages if m.tp == tp and not m.acked), default=None)


def changed_methods(consumer: type = BaseConsumer) -> list[str]:
    """The copied Faust ``Consumer`` methods whose installed source differs from the pinned one."""
    return [
        name
        for name, digest in FAUST_SOURCE_SHA256.items()
        if source_digest(getattr(consumer, name)) != digest
    ]


class FastDispatchConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer with :func:`deliver` in its fetch loop, which never commits past
    an event in flight and commits the revoked partitions' acknowledged offsets on revoke."""

    commit_on_revoke: ClassVar[bool] = True
    """Commit the acknowledged offsets of revoked partitions before dropping them. A subclass
    that commits offsets itself (in Kafka transactions) sets this to False: it then gets Faust's
    own ``on_partitions_revoked``, which commits nothing of them."""

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover (the worker's)
        if not drain_copy_matches():
            await super()._drain_messages(fetcher)
            return
        # Copied from faust-streaming 0.15.3 ``Consumer._drain_messages`` (BSD-3-Clause);
        # the two changes are marked below.
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set

        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        flag_consumer_fetching = CONSUMER_FETCHING
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for

        yield_every = 100
        num_since_yield = 0
        sleep = asyncio.sleep

        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(flag_consumer_fetching)
                ait = getmany(timeout=1.0)
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0

                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            if gap > 1 and r_offset:
                                acks_enabled = acks_enabled_for(message.topic)
                                if acks_enabled:
                                    # Changed: was (r_offset + 1, offset), which counted this
                                    # record, not processed yet, as a gap (acknowledged).
                                    await self._add_gap(tp, r_offset + 1, offset - 1)
                            if commit_every is not None and self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                            # Changed: was
                            #   await self.wait_first(callback(message), self.suspend_flow.wait())
                            await deliver(self, callback, message)
                            set_read_offset(tp, offset)
                        else:
                            self.log.dev(
                                "DROPPED MESSAGE ROFF %r: k=%r v=%r",
                                offset,
                                message.key,
                                message.value,
                            )
                    unset_flag(flag_consumer_fetching)

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
            unset_flag(flag_consumer_fetching)

    def _new_offset(self, tp: TP) -> int | None:
        # Copied from faust-streaming 0.15.3 ``Consumer._new_offset`` (BSD-3-Clause); the one
        # change is marked below. Faust's comments are shortened.
        acked = self._acked[tp]
        if acked:
            max_offset = max(acked)
            gap_for_tp = self._gap[tp]
            if gap_for_tp:
                # add the gaps up to the highest acked offset to acked, chop them off the gaps
                candidates = gap_for_tp.overlap(0, max_offset)
                sorted_candidates = sorted(candidates, key=lambda x: x.begin)
                if sorted_candidates:
                    stuff_to_add: list[int] = []
                    for entry in sorted_candidates:
                        stuff_to_add.extend(range(entry.begin, entry.end))
                    new_max_offset = max(stuff_to_add[-1], max_offset + 1)
                    acked.extend(stuff_to_add)
                    gap_for_tp.chop(0, new_max_offset)
            acked.sort()
            # A run starting more than one offset past the committed one waits (the one offset
            # it lets through is what crosses a transaction marker at the committed position).
            committed_offset = self._committed_offset[tp]
            if committed_offset and min(acked) - committed_offset > 1:
                return None
            batch = next(consecutive_numbers(acked))
            # Changed: the run stops before the lowest offset still in flight (faust-streaming
            # #606: the guard above let the commit pass it, and a kill then lost it).
            floor = in_flight_floor(self._unacked_messages, tp)
            if floor is not None and batch[-1] >= floor:
                batch = batch[: max(floor - batch[0], 0)]
                if not batch:
                    return None
            acked[: len(batch)] = []
            self._acked_index[tp].difference_update(batch)
            return batch[-1] + 1
        return None

    async def on_partitions_revoked(self, revoked: Set[TP]) -> None:
        """Faust's, or with :attr:`commit_on_revoke`: commit the revoked partitions' acknowledged
        offsets once the app's handler has waited for the events in flight, then drop them."""
        if not self.commit_on_revoke or self.in_transaction:
            await super().on_partitions_revoked(revoked)
        else:
            await self._revoke_and_commit(revoked)

    @Service.transitions_to(CONSUMER_PARTITIONS_REVOKED)
    async def _revoke_and_commit(self, revoked: Set[TP]) -> None:
        # Faust 0.15.3's ``Consumer.on_partitions_revoked`` (BSD-3-Clause) with its two steps
        # swapped (it drops the partitions' bookkeeping, then runs the app's handler) and the
        # commit between them.
        span = cast(Any, self.app)._start_span_from_rebalancing("on_partitions_revoked")
        T = traced_from_parent_span(span)
        with span:
            if self._active_partitions is not None:
                self._active_partitions.difference_update(revoked)
            self._paused_partitions.difference_update(revoked)
            try:
                # The app's handler stops the flow, clears the streams' queues and waits for the
                # events the streams took (Consumer.wait_empty, committing as they are acked).
                await T(self._on_partitions_revoked, partitions=revoked)(revoked)
                await T(self.commit_revoked, partitions=revoked)(revoked)
            finally:
                for tp in revoked:
                    self._gap.pop(tp, None)
                    self._acked.pop(tp, None)
                    self._acked_index.pop(tp, None)
                    self._read_offset.pop(tp, None)
                    self._committed_offset.pop(tp, None)

    async def commit_revoked(self, revoked: Set[TP]) -> None:
        """Commit what is acknowledged of ``revoked`` (never past an event in flight).

        Called after the app's revoke handler, before the partitions' bookkeeping is dropped.
        Nothing when the app is stopping (the consumer closes; stopping commits).
        """
        if self.app.should_stop or not revoked:
            return
        # commit() only waits when a commit is under way, and that one may have read the acked
        # offsets before the handler's last acks: let it finish, then commit.
        for _ in range(3):
            if self._commit_fut is None:
                break
            await self.maybe_wait_for_commit_to_finish()
        await self.commit(cast(Any, revoked))


def source_digest(function: Any) -> str:
    """SHA-256 of ``function``'s source with whitespace collapsed."""
    return hashlib.sha256(" ".join(inspect.getsource(function).split()).encode()).hexdigest()


def drain_messages_digest() -> str:
    """SHA-256 of the installed Faust's ``Consumer._drain_messages`` (whitespace collapsed)."""
    return source_digest(BaseConsumer._drain_messages)


_drain_matches: bool | None = None


def drain_copy_matches() -> bool:
    """Whether the installed Faust's fetch loop is the one copied here (computed once)."""
    global _drain_matches
    if _drain_matches is None:
        _drain_matches = drain_messages_digest() == DRAIN_MESSAGES_SHA256
    return _drain_matches


class FastDispatchTransport(faust_aiokafka.Transport):
    """Faust's aiokafka transport, building :class:`FastDispatchConsumer`."""

    Consumer = FastDispatchConsumer


class FastDispatchApp(faust.App):
    """A Faust app whose aiokafka transport builds :class:`FastDispatchConsumer`."""

    transport_class: ClassVar[type[faust_aiokafka.Transport]] = FastDispatchTransport
    """What replaces Faust's aiokafka transport (a subclass app may name its own)."""

    def _new_transport(self) -> Any:
        transport = super()._new_transport()
        if type(transport) is faust_aiokafka.Transport:
            changed = changed_methods()
            if changed:
                log.warning(
                    "faust-streaming %s changed Consumer.%s (checked: %s); compare "
                    "stream_app/faust_ext/dispatch.py with it. Until then the worker uses Faust's "
                    "own record dispatch if _drain_messages changed, and keeps its copies of "
                    "_new_offset (never commits past an event in flight) and "
                    "on_partitions_revoked (commits the revoked partitions' acknowledged offsets)",
                    faust.__version__,
                    ", Consumer.".join(changed),
                    ", ".join(CHECKED_FAUST_VERSIONS),
                )
            return self.transport_class(self.conf.broker_consumer, self)
        return transport
