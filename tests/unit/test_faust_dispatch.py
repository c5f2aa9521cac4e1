"""The fast record dispatch: same deliveries as Faust's wait_first path, without its tasks."""

from __future__ import annotations

import asyncio
from typing import Any

import faust
import pytest

from stream_app.faust_ext.dispatch import (
    DRAIN_MESSAGES_SHA256,
    FastDispatchApp,
    FastDispatchConsumer,
    Resumed,
    deliver,
    drain_messages_digest,
)


class FakeConsumer:
    """What :func:`deliver` uses of Faust's consumer; counts the wait_first calls."""

    def __init__(self) -> None:
        self.suspend_flow = asyncio.Event()
        self.should_stop = False
        self.wait_first_calls = 0

    async def wait_first(self, *coros: Any) -> list[Any]:
        """Like mode's: run all as tasks, return when the first finishes, cancel the rest."""
        self.wait_first_calls += 1
        tasks = [asyncio.ensure_future(c) for c in coros]
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        return [t.result() for t in done]


def test_a_delivery_that_does_not_block_runs_inline_without_wait_first() -> None:
    delivered: list[str] = []

    async def on_message(message: str) -> None:
        delivered.append(message)

    async def main() -> int:
        consumer = FakeConsumer()
        for message in ("a", "b", "c"):
            await deliver(consumer, on_message, message)
        return consumer.wait_first_calls

    assert asyncio.run(main()) == 0
    assert delivered == ["a", "b", "c"]


def test_a_blocked_delivery_is_continued_not_restarted_through_wait_first() -> None:
    steps: list[str] = []

    async def main() -> tuple[int, list[str]]:
        consumer = FakeConsumer()
        room = asyncio.get_running_loop().create_future()

        async def on_message(message: str) -> None:
            steps.append(f"start {message}")
            got = await room  # a full stream buffer
            steps.append(f"put {message} after {got}")

        loop = asyncio.get_running_loop()
        loop.call_later(0.01, room.set_result, "room")
        await deliver(consumer, on_message, "a")
        return consumer.wait_first_calls, steps

    calls, steps = asyncio.run(main())
    assert calls == 1
    assert steps == ["start a", "put a after room"]  # started once, resumed with the result


def test_a_rebalance_abandons_a_blocked_delivery_as_faust_does() -> None:
    async def main() -> tuple[list[str], bool]:
        consumer = FakeConsumer()
        steps: list[str] = []
        never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def on_message(message: str) -> None:
            steps.append("start")
            try:
                await never
            except asyncio.CancelledError:
                steps.append("cancelled")
                raise

        asyncio.get_running_loop().call_later(0.01, consumer.suspend_flow.set)
        await deliver(consumer, on_message, "a")  # returns when the flow is suspended
        await asyncio.sleep(0)
        return steps, never.cancelled()

    steps, _ = asyncio.run(main())
    assert steps == ["start", "cancelled"]


def test_while_the_flow_is_suspended_every_delivery_takes_faust_s_path() -> None:
    async def main() -> tuple[int, list[str]]:
        consumer = FakeConsumer()
        consumer.suspend_flow.set()
        delivered: list[str] = []

        async def on_message(message: str) -> None:
            delivered.append(message)

        await deliver(consumer, on_message, "a")
        return consumer.wait_first_calls, delivered

    calls, delivered = asyncio.run(main())
    assert calls == 1
    # Faust's wait_first: the suspend wait is already done, the delivery task may not have run
    assert delivered in ([], ["a"])


def test_resumed_passes_exceptions_and_the_return_value_through() -> None:
    async def main() -> tuple[Any, str]:
        loop = asyncio.get_running_loop()
        first, second = loop.create_future(), loop.create_future()

        async def work() -> str:
            try:
                await first
            except KeyError as exc:
                value = await second
                return f"{exc.args[0]} then {value}"
            return "no error"

        coro = work()
        yielded = coro.send(None)
        loop.call_soon(first.set_exception, KeyError("boom"))
        loop.call_later(0.01, second.set_result, "ok")
        result = await Resumed(coro, yielded)
        return yielded is first, result

    is_first, result = asyncio.run(main())
    assert is_first
    assert result == "boom then ok"


def test_a_synchronous_error_propagates_like_wait_first_s() -> None:
    async def on_message(message: str) -> None:
        raise ValueError(f"bad {message}")

    async def main() -> None:
        await deliver(FakeConsumer(), on_message, "a")

    with pytest.raises(ValueError, match="bad a"):
        asyncio.run(main())


def test_the_installed_faust_has_the_loop_the_copy_was_made_from() -> None:
    # A Faust upgrade that changes Consumer._drain_messages fails here (and the worker falls
    # back to Faust's own dispatch with a warning) until the copy is compared again.
    assert drain_messages_digest() == DRAIN_MESSAGES_SHA256


def test_the_app_builds_the_fast_consumer_for_the_aiokafka_driver() -> None:
    app = FastDispatchApp("t", broker="kafka://localhost:9092", autodiscover=False)
    assert app.transport.Consumer is FastDispatchConsumer
    other = FastDispatchApp("t2", broker="confluent://localhost:9092", autodiscover=False)
    assert other.transport.Consumer is not FastDispatchConsumer
    assert isinstance(app, faust.App)
