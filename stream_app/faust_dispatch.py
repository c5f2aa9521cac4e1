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
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, cast

import faust
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.consumer import Consumer as BaseConsumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode import Service

log = logging.getLogger(__name__)

CHECKED_FAUST_VERSIONS = ("0.15.3",)
"""faust-streaming versions whose ``Consumer._drain_messages`` the copy below was compared with."""

DRAIN_MESSAGES_SHA256 = "30fba6e560f13bf79dd171ef4df3870592550143c652d6db5c2c305d38e08e6c"
"""SHA-256 of Faust's ``Consumer._drain_messages`` source (whitespace collapsed) that the copy
below was made from: a Faust whose loop differs must be re-read before this override is used."""


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


class FastDispatchConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer with :func:`deliver` in its fetch loop."""

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover (the worker's)
        # Copied from faust-streaming 0.15.3 ``Consumer._drain_messages`` (BSD-3-Clause);
        # the only change is marked below.
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
                                    await self._add_gap(tp, r_offset + 1, offset)
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


def drain_messages_digest() -> str:
    """SHA-256 of the installed Faust's ``Consumer._drain_messages`` (whitespace collapsed)."""
    source = inspect.getsource(BaseConsumer._drain_messages)
    return hashlib.sha256(" ".join(source.split()).encode()).hexdigest()


class FastDispatchTransport(faust_aiokafka.Transport):
    """Faust's aiokafka transport, building :class:`FastDispatchConsumer`."""

    Consumer = FastDispatchConsumer


class FastDispatchApp(faust.App):
    """A Faust app whose aiokafka transport builds :class:`FastDispatchConsumer`."""

    def _new_transport(self) -> Any:
        transport = super()._new_transport()
        if type(transport) is faust_aiokafka.Transport:
            if drain_messages_digest() == DRAIN_MESSAGES_SHA256:
                return FastDispatchTransport(self.conf.broker_consumer, self)
            else:
                log.warning(
                    "faust-streaming %s changed Consumer._drain_messages (checked: %s); the "
                    "worker uses Faust's own record dispatch until stream_app/faust_dispatch.py "
                    "is compared with it again",
                    faust.__version__,
                    ", ".join(CHECKED_FAUST_VERSIONS),
                )
        return transport
