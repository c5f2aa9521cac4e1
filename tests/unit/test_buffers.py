"""Partition queues and the event-time order a stage takes records in (stream_app.pipeline.buffers):
exact batches for hand-made partitions."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from stream_app.pipeline.buffers import PartitionQueue, alignment_keys, take

INF = math.inf


@dataclass(frozen=True)
class Rec:
    topic: str
    partition: int
    offset: int


def queue(topic: str, partition: int, times: list[float | None], rank: int = 1, start: int = 0):
    q: PartitionQueue = PartitionQueue(topic, partition, rank=rank, order=partition)
    fill(q, times, start)
    return q


def fill(q: PartitionQueue, times: list[float | None], start: int | None = None) -> None:
    first = q.next_offset if start is None and q.next_offset is not None else (start or 0)
    records = [Rec(q.topic, q.partition, first + i) for i in range(len(times))]
    q.add(records, [f"{q.topic}{q.partition}@{r.offset}" for r in records], times)


def test_alignment_keys_are_the_running_maximum_and_carry_gaps():
    assert alignment_keys([3.0, 1.0, None, 5.0, 4.0], 2.0) == [3.0, 3.0, 3.0, 5.0, 5.0]
    assert alignment_keys([None, None], -INF) == [-INF, -INF]


def test_one_partition_goes_in_stream_order_up_to_the_limit():
    q = queue("t", 0, [5.0, 1.0, 7.0, 7.0])
    batch = take([q], [True], limit=3, now=0.0, max_idle_s=1.0)
    assert batch.items == ["t0@0", "t0@1", "t0@2"]
    assert batch.taken == {q: 3}
    assert (q.buffered, q.taken_offset, q.taken_key) == (1, 3, 7.0)
    assert take([q], [True], 10, 0.0, 1.0).items == ["t0@3"]
    assert q.buffered == 0 and q.taken_offset == 4


def test_partitions_merge_by_event_time_with_rank_then_registration_order_at_ties():
    labels = queue("labels", 0, [1.0, 3.0, 3.0], rank=0)
    a = queue("by", 0, [2.0, 3.0, 4.0])
    b = queue("by", 1, [1.0, 3.0])
    batch = take([a, b, labels], [True, True, True], limit=100, now=0.0, max_idle_s=1.0)
    assert batch.items == [
        "labels0@0",  # 1.0, rank 0 first
        "by1@0",  # 1.0
        "by0@0",  # 2.0
        "labels0@1",  # 3.0: labels first,
        "labels0@2",
        "by0@1",  # then partition 0 before partition 1,
        "by1@1",
        "by0@2",  # 4.0
    ]
    assert batch.taken == {a: 3, b: 2, labels: 3}


def test_a_partition_with_more_to_fetch_holds_the_others_back_to_its_last_key():
    ahead = queue("t", 0, [1.0, 2.0, 5.0, 9.0])
    behind = queue("t", 1, [1.5, 3.0])
    # partition 1 has more to fetch (not caught up): nothing past its last key (3.0) goes; at
    # 3.0, its own records and those of partitions ordered before it (their ties come first)
    batch = take([ahead, behind], [True, False], limit=100, now=0.0, max_idle_s=1.0)
    assert batch.items == ["t0@0", "t1@0", "t0@1", "t1@1"]
    assert (ahead.buffered, behind.buffered) == (2, 0)
    assert not take([ahead, behind], [True, False], limit=100, now=0.0, max_idle_s=1.0)
    # once it has caught up, everything goes
    batch = take([ahead, behind], [True, True], limit=100, now=0.0, max_idle_s=1.0)
    assert batch.items == ["t0@2", "t0@3"]


def test_a_partition_whose_keys_all_equal_its_last_is_not_stuck():
    """Events read again after a crash sit behind the running maximum: their keys all equal the
    partition's last one, which is also its frontier while it has more to fetch."""
    flat = queue("by", 0, [10.0, 5.0, 6.0, 7.0])  # keys 10, 10, 10, 10
    later = queue("by", 1, [11.0, 12.0])
    batch = take([flat, later], [False, False], limit=100, now=0.0, max_idle_s=1.0)
    assert batch.items == ["by0@0", "by0@1", "by0@2", "by0@3"]
    # a partition ordered after the one that sets the bound keeps its ties for later
    first = queue("by", 0, [4.0])
    second = queue("by", 1, [3.0, 4.0])
    batch = take([first, second], [False, True], limit=100, now=0.0, max_idle_s=1.0)
    assert batch.items == ["by1@0", "by0@0"]  # by1@1 at 4.0 waits for partition 0's next


def test_an_empty_partition_with_more_to_fetch_waits_for_it_up_to_the_cap():
    busy = queue("t", 0, [10.0, 20.0])
    empty = queue("t", 1, [5.0])
    assert take([empty], [True], 10, 0.0, 1.0).items == ["t1@0"]  # empty now, taken key 5.0
    # empty with more to read: hold the others back to 5.0, past max_idle_s
    assert take([busy, empty], [True, False], 10, now=100.0, max_idle_s=1.0).items == []
    assert empty.empty_since == 100.0
    assert take([busy, empty], [True, False], 10, now=120.0, max_idle_s=1.0).items == []
    # until the safety cap for a partition the broker never serves
    got = take([busy, empty], [True, False], 10, now=130.0, max_idle_s=1.0, max_lag_wait_s=30.0)
    assert got.items == ["t0@0", "t0@1"]
    fill(empty, [15.0])
    assert empty.empty_since is None  # data again: it counts again


def test_a_partition_not_fetched_yet_waits_max_idle_s():
    busy = queue("t", 0, [10.0, 20.0])
    unknown = PartitionQueue("t", 1)
    assert take([busy, unknown], [True, None], 10, now=0.0, max_idle_s=1.0).items == []
    assert take([busy, unknown], [True, None], 10, now=0.9, max_idle_s=1.0).items == []
    assert take([busy, unknown], [True, None], 10, now=1.0, max_idle_s=1.0).items == [
        "t0@0",
        "t0@1",
    ]


def test_held_records_wait_below_their_hold_and_the_others_wait_for_them():
    labels = queue("labels", 0, [5.0, 8.0, 12.0], rank=0)
    by_terminal = queue("by", 0, [9.0, 12.0, 13.0])
    # labels may not pass 9.0 (what the forwarding stage may still write); a forward at 12 or 13
    # must not pass the label known at 12 (it counts in their windows): they wait for it
    batch = take([labels, by_terminal], [True, True], 10, 0.0, 1.0, hold=[9.0, INF])
    assert batch.items == ["labels0@0", "labels0@1", "by0@0"]
    assert take([labels, by_terminal], [True, True], 10, 0.0, 1.0, hold=[9.0, INF]).items == []
    # a hold exactly at a label's key holds it (and what comes at or after it)
    assert take([labels, by_terminal], [True, True], 10, 0.0, 1.0, hold=[12.0, INF]).items == []
    # the hold lifts: the label first, then the forwards at and after its key
    assert take([labels, by_terminal], [True, True], 10, 0.0, 1.0, hold=[12.5, INF]).items == [
        "labels0@2",
        "by0@1",
        "by0@2",
    ]


def test_a_held_queue_with_nothing_buffered_holds_nothing_else():
    labels = queue("labels", 0, [5.0], rank=0)
    by_terminal = queue("by", 0, [4.0, 9.0, 13.0])
    # the label at 5 waits, and so does every forward from 5 on
    assert take([labels, by_terminal], [True, True], 10, 0.0, 1.0, hold=[4.5, INF]).items == [
        "by0@0"
    ]
    assert take([labels, by_terminal], [True, True], 10, 0.0, 1.0, hold=[6.0, INF]).items == [
        "labels0@0",
        "by0@1",
        "by0@2",
    ]
    # nothing buffered (and nothing more to fetch): a hold holds nothing
    more = queue("by", 1, [20.0])
    assert take([labels, more], [True, True], 10, 0.0, 1.0, hold=[4.0, INF]).items == ["by1@0"]


def test_a_caught_up_empty_partition_holds_nothing_back():
    busy = queue("t", 0, [10.0, 20.0])
    idle = PartitionQueue("t", 1)
    assert take([busy, idle], [True, True], 10, 0.0, 1.0).items == ["t0@0", "t0@1"]


def test_the_limit_takes_a_prefix_of_each_partition_and_leaves_the_rest_queued():
    a = queue("t", 0, [1.0, 3.0, 5.0, 7.0])
    b = queue("t", 1, [2.0, 4.0, 6.0])
    batch = take([a, b], [True, True], limit=4, now=0.0, max_idle_s=1.0)
    assert batch.items == ["t0@0", "t1@0", "t0@1", "t1@1"]
    assert batch.taken == {a: 2, b: 2}
    assert (a.taken_offset, b.taken_offset) == (2, 2)
    assert take([a, b], [True, True], 10, 0.0, 1.0).items == ["t0@2", "t1@2", "t0@3"]


def test_chunks_are_crossed_in_order_and_keys_carry_over():
    q = queue("t", 0, [1.0, 4.0])
    fill(q, [2.0, 6.0])  # 2.0 is late: its key is 4.0, it stays after 4.0
    other = queue("t", 1, [3.0, 5.0])
    batch = take([q, other], [True, True], 10, 0.0, 1.0)
    assert batch.items == ["t0@0", "t1@0", "t0@1", "t0@2", "t1@1", "t0@3"]
    assert [r.offset for r in batch.records] == [0, 0, 1, 2, 1, 3]


def test_clear_forgets_records_and_positions():
    q = queue("t", 0, [1.0, 2.0])
    take([q], [True], 1, 0.0, 1.0)
    q.clear()
    assert (q.buffered, q.taken_offset, q.next_offset, q.taken_key) == (0, None, None, -INF)
    assert not take([q], [True], 10, 0.0, 1.0)


@pytest.mark.parametrize("limit", [1, 2, 3, 5, 8, 100])
def test_any_limit_yields_the_same_merged_order(limit):
    def fresh():
        return [
            queue("t", 0, [1.0, 2.0, 2.0, 8.0, 9.0]),
            queue("t", 1, [2.0, 3.0, 7.0]),
            queue("labels", 2, [2.0, 7.5], rank=0),
        ]

    whole = take(fresh(), [True] * 3, 100, 0.0, 1.0).items
    queues, got = fresh(), []
    while batch := take(queues, [True] * 3, limit, 0.0, 1.0):
        got += batch.items
    assert got == whole


@pytest.mark.parametrize("limit", [1, 7, 30, 50, 1000])
def test_cutting_long_queues_keeps_the_merged_order(limit):
    """Queues much longer than a batch's share are cut; ties across queues at the cut still go
    in (rank, registration, stream) order."""
    import random

    def fresh():
        rng = random.Random(4)
        out = []
        for p in range(4):
            t, times = 0.0, []
            for _ in range(120):
                t += rng.choice([0.0, 0.0, 1.0, 2.0])
                times.append(t)
            out.append(queue("labels" if p == 3 else "t", p, times, rank=0 if p == 3 else 1))
        return out

    whole = take(fresh(), [True] * 4, 10_000, 0.0, 1.0).items
    assert len(whole) == 480
    queues, got = fresh(), []
    while batch := take(queues, [True] * 4, limit, 0.0, 1.0):
        assert len(batch) <= limit
        got += batch.items
    assert got == whole
