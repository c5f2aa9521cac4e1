"""What FastDispatchConsumer commits: never past an event in flight, and on revoke.

Runs Faust's real consumer code (the installed ``faust.transport.consumer.Consumer`` methods and
the copies in ``stream_app/faust_ext/dispatch.py``) on a consumer of an app that is never started;
only the broker round trip (``_commit``) and the assignment are fakes. Each fix is shown next to
what the installed Faust does on the same state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from faust.transport.consumer import Consumer as FaustConsumer
from faust.types import TP
from faust.types.tuples import ConsumerMessage

from stream_app.faust_ext.dispatch import (
    FAUST_SOURCE_SHA256,
    FastDispatchApp,
    FastDispatchConsumer,
    changed_methods,
    in_flight_floor,
)

TP0, TP1 = TP("in", 0), TP("in", 1)


class Commits:
    """The broker side of commits: what was committed, in order, and what was in flight then."""

    def __init__(self) -> None:
        self.offsets: list[dict[TP, int]] = []
        self.in_flight_then: list[int | None] = []


def make_consumer(
    cls: type[FastDispatchConsumer] = FastDispatchConsumer,
    loop: asyncio.AbstractEventLoop | None = None,
) -> tuple[Any, Commits]:
    app = FastDispatchApp(
        f"commits-{cls.__name__}",
        broker="kafka://127.0.0.1:1",
        autodiscover=False,
        web_enabled=False,
        store="memory://",
        loop=loop,
    )
    app.transport.Consumer = cls
    if loop is not None:
        app.transport.loop = loop  # resolved lazily otherwise, from whatever loop is current
    consumer: Any = app.consumer
    assert type(consumer) is cls
    commits = Commits()

    async def commit(offsets: dict[TP, int]) -> bool:
        commits.offsets.append(dict(offsets))
        commits.in_flight_then.append(in_flight_floor(consumer._unacked_messages, TP0))
        return True

    async def flush() -> None:
        return None

    consumer._commit = commit
    consumer.assignment = lambda: {TP0, TP1}
    app.topics.acks_enabled_for = lambda topic: True  # type: ignore[method-assign]
    app.producer.flush = flush  # type: ignore[method-assign]
    return consumer, commits


def message(offset: int, tp: TP = TP0) -> ConsumerMessage:
    return ConsumerMessage(tp.topic, tp.partition, offset, 0.0, 0, None, b"k", b"v", None, tp=tp)


def take(consumer: Any, offsets: Iterable[int], tp: TP = TP0) -> list[ConsumerMessage]:
    """Messages a stream has taken (tracked as unacknowledged), as Stream.__aiter__ does. The
    consumer holds them weakly: the caller keeps them while they are in flight."""
    taken = []
    for offset in offsets:
        m = message(offset, tp)
        m.incref()
        m.tracked = True
        consumer._unacked_messages.add(m)
        taken.append(m)
    return taken


def ack(consumer: Any, messages: Iterable[ConsumerMessage]) -> None:
    for m in messages:
        m.ack(consumer)


# --- never past an event in flight (faust-streaming #606) ---------------------------------------


def test_installed_faust_commits_past_the_event_in_flight_at_the_committed_offset() -> None:
    """faust-streaming #606 as its PR #707 reproduces it. When this fails, the installed Faust
    no longer has the bug: compare its _new_offset with the copy in
    stream_app/faust_ext/dispatch.py."""
    consumer, _ = make_consumer()
    consumer._committed_offset[TP0] = 2585
    slow = take(consumer, [2585])
    ack(consumer, take(consumer, range(2586, 2590)))
    assert FaustConsumer._new_offset(consumer, TP0) == 2590  # past 2585, which is in flight
    assert not slow[0].acked


def test_installed_faust_commits_past_an_event_in_flight_before_the_first_commit() -> None:
    consumer, _ = make_consumer()
    slow = take(consumer, [0])
    ack(consumer, take(consumer, range(1, 4)))
    assert FaustConsumer._new_offset(consumer, TP0) == 4  # no committed offset: no guard at all
    assert not slow[0].acked


def test_the_commit_stops_at_the_event_in_flight_and_passes_it_once_acknowledged() -> None:
    consumer, _ = make_consumer()
    consumer._committed_offset[TP0] = 2585
    slow = take(consumer, [2585])
    ack(consumer, take(consumer, range(2586, 2590)))
    assert consumer._new_offset(TP0) is None
    assert consumer._acked[TP0] == [2586, 2587, 2588, 2589]  # kept for a later commit
    ack(consumer, slow)
    assert consumer._new_offset(TP0) == 2590
    assert consumer._acked[TP0] == []


def test_before_the_first_commit_the_run_is_cut_at_the_event_in_flight() -> None:
    consumer, _ = make_consumer()
    ack(consumer, take(consumer, range(0, 5)))
    slow = take(consumer, [5])
    ack(consumer, take(consumer, range(6, 30)))
    assert consumer._new_offset(TP0) == 5  # 0..4, not past 5
    consumer._committed_offset[TP0] = 5
    assert consumer._new_offset(TP0) is None
    ack(consumer, slow)
    assert consumer._new_offset(TP0) == 30


def test_events_in_flight_on_other_partitions_or_acknowledged_do_not_hold_the_commit() -> None:
    consumer, _ = make_consumer()
    other = take(consumer, [3], tp=TP1)
    ack(consumer, take(consumer, range(0, 10)))
    assert in_flight_floor(consumer._unacked_messages, TP0) is None
    assert in_flight_floor(consumer._unacked_messages, TP1) == 3
    assert consumer._new_offset(TP0) == 10
    assert not other[0].acked


def in_flight_after_a_gap(consumer: Any) -> list[ConsumerMessage]:
    """Records 100, 101, 105, 106 (102..104: transaction markers); 105 in flight while another
    actor acknowledged 106; the gap as Faust's fetch loop recorded it: 102..105."""
    consumer._committed_offset[TP0] = 100
    ack(consumer, take(consumer, [100, 101]))
    slow = take(consumer, [105])
    ack(consumer, take(consumer, [106]))
    consumer._gap[TP0].addi(102, 106)
    return slow


def test_a_gap_is_crossed_but_not_a_record_in_flight_that_faust_s_range_counted() -> None:
    consumer, _ = make_consumer()
    slow = in_flight_after_a_gap(consumer)
    assert consumer._new_offset(TP0) == 105  # the markers, not the record in flight
    ack(consumer, slow)
    consumer._committed_offset[TP0] = 105
    # 105 sits in acked twice (from the gap and its ack): 107 comes one commit later
    assert [consumer._new_offset(TP0), consumer._new_offset(TP0)] == [106, 107]


def test_installed_faust_commits_a_record_in_flight_that_its_gap_range_counted() -> None:
    consumer, _ = make_consumer()
    slow = in_flight_after_a_gap(consumer)
    assert FaustConsumer._new_offset(consumer, TP0) == 107
    assert not slow[0].acked


def test_the_copied_fetch_loop_records_a_gap_without_the_record_it_delivers() -> None:
    async def drain(method: Any) -> list[tuple[int, int]]:
        consumer, _ = make_consumer()
        delivered: list[int] = []
        fetcher = type("Fetcher", (), {"_stopped": asyncio.Event()})()

        async def callback(m: ConsumerMessage) -> None:
            delivered.append(m.offset)

        async def getmany(timeout: float) -> Any:
            for offset in (10, 13):  # 11 and 12 hold no record (transaction markers)
                yield TP0, message(offset)
            fetcher._stopped.set()

        consumer.callback = callback
        consumer.getmany = getmany
        consumer._read_offset[TP0] = 9
        await method(consumer, fetcher)
        assert delivered == [10, 13]
        return sorted((i.begin, i.end) for i in consumer._gap[TP0])

    assert asyncio.run(drain(FastDispatchConsumer._drain_messages)) == [(11, 13)]
    assert asyncio.run(drain(FaustConsumer._drain_messages)) == [(11, 14)]  # 13 counted as done


# --- commit on revoke ----------------------------------------------------------------------------


def revoking(
    cls: type[FastDispatchConsumer] = FastDispatchConsumer,
) -> tuple[Any, Commits, Any]:
    """A consumer on a loop of its own, and ``revoke(partitions, while_waiting=None)``: revoke
    through the app's real handler (stop the flow, clear the queues, ``wait_empty`` ...);
    ``while_waiting`` runs 50 ms in, while the handler waits for the events in flight."""
    loop = asyncio.new_event_loop()
    consumer, commits = make_consumer(cls, loop)

    def revoke(revoked: set[TP], while_waiting: Any = None) -> None:
        if while_waiting is not None:
            loop.call_later(0.05, while_waiting)
        try:
            loop.run_until_complete(consumer.on_partitions_revoked(revoked))
        finally:
            loop.close()

    return consumer, commits, revoke


class FaustOrder(FastDispatchConsumer):
    commit_on_revoke = False


def test_installed_faust_commits_nothing_acknowledged_of_a_revoked_partition() -> None:
    # Also what a subclass gets with commit_on_revoke = False (the exactly-once mode's).
    assert FastDispatchConsumer.commit_on_revoke and not FaustOrder.commit_on_revoke
    consumer, commits, revoke = revoking(FaustOrder)
    ack(consumer, take(consumer, range(0, 10)))
    revoke({TP0})
    assert commits.offsets == []  # the next owner processes 0..9 again
    assert TP0 not in consumer._acked


def test_the_acknowledged_offsets_of_revoked_partitions_are_committed_then_dropped() -> None:
    consumer, commits, revoke = revoking()
    ack(consumer, take(consumer, range(0, 10)))
    ack(consumer, take(consumer, range(0, 4), tp=TP1))
    revoke({TP0})
    assert commits.offsets[-1][TP0] == 10
    for name in ("_acked", "_acked_index", "_gap", "_read_offset", "_committed_offset"):
        assert TP0 not in getattr(consumer, name), name


def test_a_batch_in_flight_at_the_revoke_is_committed_only_once_acknowledged() -> None:
    consumer, commits, revoke = revoking()
    ack(consumer, take(consumer, range(0, 10)))
    batch = take(consumer, range(10, 20))  # an agent's micro-batch, outputs not delivered yet
    revoke({TP0}, while_waiting=lambda: ack(consumer, batch))
    committed = [c[TP0] for c in commits.offsets if TP0 in c]
    assert committed[-1] == 20
    for offset, floor in zip(committed, commits.in_flight_then, strict=True):
        assert floor is None or offset <= floor, (offset, floor)  # never past the batch


# --- the pinned sources --------------------------------------------------------------------------


def test_the_installed_faust_has_the_methods_the_copies_were_made_from() -> None:
    # A Faust upgrade that changes one fails here (the worker logs a warning) until the copies
    # in stream_app/faust_ext/dispatch.py are compared with it again.
    assert changed_methods() == []
    assert set(FAUST_SOURCE_SHA256) == {"_drain_messages", "_new_offset", "on_partitions_revoked"}


def test_a_changed_faust_method_is_reported() -> None:
    class Changed(FaustConsumer):
        def _new_offset(self, tp: TP) -> int | None:
            return None

    assert changed_methods(Changed) == ["_new_offset"]
