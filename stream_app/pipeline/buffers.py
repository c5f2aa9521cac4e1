"""Fetched records per input partition, and the event-time order a stage takes them in.

The worker's consumer hands every fetched chunk of a stage's partition to a
:class:`PartitionQueue`, already decoded, with an *alignment key* per record: the record's event
time (a transaction's ``event_time``, a forward's ``ts``, a label's ``label_time``: when it
became known), held to the running maximum of its partition so that the keys of one partition
never go down. A record without a time (a rejection) gets its predecessor's key: it goes through
in stream order.

:func:`take` then builds a stage's next micro-batch the way Kafka Streams picks records (its
``PartitionGroup``): across all the stage's partitions, the records with the smallest keys first,
and nothing past what a partition that still has unread records could hold. Each partition's
*frontier* is how far its records are known:

- a partition whose buffered records reach its end offset (nothing more to fetch) does not hold
  the others back;
- a partition with more to fetch holds them back to its last buffered key, or, when its buffer
  is empty, to the key of the last record the stage took from it: as Kafka Streams does with a
  partition it knows to have lag, the stage waits for the fetch (``max_lag_wait_s`` at most, a
  safety cap for a partition the broker never serves);
- a partition whose position or end is not known yet (no fetch answered for it) holds them back
  the same way for ``max_idle_s`` at most (Kafka Streams' ``max.task.idle.ms``).

One more bound, for the labels only (``hold``): they do not go past the *low watermark* of the
stage that forwards the transactions (the lowest key stage 1 may still take,
:meth:`PartitionQueue.low`): a label early for its transaction is harmless (it waits in the
terminal's state), but from a full topic the labels would otherwise run months ahead of the
transactions they belong to. A held label still bounds the others at its key: a forward at ``t``
waits for every label known by ``t``, held or not (without this, a forward from a stage-1
partition ahead of the others, or every forward stage 2 re-reads after a restart while stage 1
re-reads from further back, was scored without the labels of the last hour, or of the days
between the two stages' commits).

Records with keys below the lowest frontier are taken, merged by key; at equal keys, partitions
of a lower *rank* first (labels before transactions: a label known at ``t`` is used by a
transaction at ``t``), then in the order the partitions were registered, then in stream order.
Within one partition the order is always the stream's.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Generic, TypeVar

import numpy as np

T = TypeVar("T")

INF = math.inf
MAX_LAG_WAIT_S = 30.0
"""Longest wait for a partition known to have more to fetch while its buffer is empty."""


@dataclass(slots=True)
class Chunk:
    """Consecutive records of one partition with their decoded items and alignment keys."""

    records: list[Any]
    items: list[Any]
    keys: list[float]  # non-decreasing


def alignment_keys(times: Sequence[float | None], start: float) -> list[float]:
    """Running maximum of ``times`` from ``start`` (None: the previous key)."""
    keys: list[float] = []
    key = start
    for t in times:
        if t is not None and t > key:
            key = t
        keys.append(key)
    return keys


@dataclass(slots=True, eq=False)
class PartitionQueue(Generic[T]):
    """The buffered records of one input partition of a stage."""

    topic: str
    partition: int
    rank: int = 1  # tie-break at equal keys: lower first
    order: int = 0  # tie-break after rank: registration order
    chunks: deque[Chunk] = field(default_factory=deque)
    head: int = 0  # index of the next record in chunks[0]
    buffered: int = 0  # records in the buffer
    last_key: float = -INF  # key of the last record buffered
    taken_key: float = -INF  # key of the last record taken
    next_offset: int | None = None  # offset after the last record buffered
    taken_offset: int | None = None  # offset after the last record taken
    empty_since: float | None = None  # monotonic time the buffer became empty with more to read
    # Set by :meth:`frontier` when it stopped waiting for this empty partition (its wait ran out):
    # the stage may now take records this partition could still precede. The engine reports it.
    waived: bool = False

    def add(self, records: list[Any], items: list[Any], times: Sequence[float | None]) -> None:
        """Buffer a fetched chunk (``times``: each record's event time, or None)."""
        if not records:
            return
        keys = alignment_keys(times, self.last_key)
        self.chunks.append(Chunk(records, items, keys))
        self.buffered += len(records)
        self.last_key = keys[-1]
        self.next_offset = records[-1].offset + 1
        self.empty_since = None
        self.waived = False

    def frontier(
        self,
        caught_up: bool | None,
        now: float,
        max_idle_s: float,
        max_lag_wait_s: float = MAX_LAG_WAIT_S,
    ) -> float:
        """How far this partition's keys are known (see the module docstring). ``caught_up``:
        True (nothing more to fetch), False (more to fetch), None (not known yet)."""
        if caught_up:
            return INF
        if self.buffered:
            return self.last_key
        if self.empty_since is None:
            self.empty_since = now
        elif now - self.empty_since >= (max_idle_s if caught_up is None else max_lag_wait_s):
            self.waived = True
            return INF
        return self.taken_key

    def low(
        self,
        caught_up: bool | None,
        now: float | None = None,
        max_idle_s: float = 0.0,
        max_lag_wait_s: float = MAX_LAG_WAIT_S,
    ) -> float:
        """The lowest key this partition may still hand the stage: its next buffered record's,
        or (nothing buffered, more to fetch) the last taken; INF when it has nothing more. With
        ``now``, an empty partition stops counting when the stage itself stops waiting for it
        (:meth:`frontier`): a partition the broker never serves holds nothing back for good."""
        if self.buffered:
            return self.chunks[0].keys[self.head]
        if now is not None:
            return self.frontier(caught_up, now, max_idle_s, max_lag_wait_s)
        return INF if caught_up else self.taken_key

    def key_at(self, index: int) -> float:
        """The key of the ``index``-th buffered record (0: the next one)."""
        index += self.head
        for chunk in self.chunks:
            if index < len(chunk.keys):
                return chunk.keys[index]
            index -= len(chunk.keys)
        raise IndexError(index)

    def count_below(self, bound: float, inclusive: bool = False) -> int:
        """How many buffered records have keys below ``bound`` (at or below it with
        ``inclusive``): a prefix of the buffer."""
        if bound == INF:
            return self.buffered
        cut = bisect_right if inclusive else bisect_left
        n = 0
        head = self.head
        for chunk in self.chunks:
            keys = chunk.keys
            k = cut(keys, bound, head)
            n += k - head
            if k < len(keys):
                break
            head = 0
        return n

    def peek(self, n: int) -> tuple[list[Any], list[Any], list[float]]:
        """The next ``n`` records, their items and keys, left in the buffer."""
        records: list[Any] = []
        items: list[Any] = []
        keys: list[float] = []
        head = self.head
        for chunk in self.chunks:
            if n <= 0:
                break
            stop = min(head + n, len(chunk.records))
            records += chunk.records[head:stop]
            items += chunk.items[head:stop]
            keys += chunk.keys[head:stop]
            n -= stop - head
            head = 0
        return records, items, keys

    def drop(self, n: int) -> None:
        """Remove the next ``n`` records (taken by the stage)."""
        if n <= 0:
            return
        self.buffered -= n
        while n > 0:
            chunk = self.chunks[0]
            left = len(chunk.records) - self.head
            if n < left:
                self.head += n
                self.taken_key = chunk.keys[self.head - 1]
                self.taken_offset = chunk.records[self.head - 1].offset + 1
                return
            n -= left
            self.taken_key = chunk.keys[-1]
            self.taken_offset = chunk.records[-1].offset + 1
            self.chunks.popleft()
            self.head = 0

    def pop(self, n: int) -> tuple[list[Any], list[Any], list[float]]:
        """Remove and return the next ``n`` records, their items and keys."""
        out = self.peek(n)
        self.drop(len(out[0]))
        return out

    def clear(self) -> None:
        """Drop everything buffered and every position (partitions are re-read from their
        committed offsets after a rebalance)."""
        self.chunks.clear()
        self.head = self.buffered = 0
        self.last_key = self.taken_key = -INF
        self.next_offset = self.taken_offset = None
        self.empty_since = None
        self.waived = False


@dataclass(slots=True)
class Batch:
    """A stage's micro-batch: records, their decoded items, and the queue each came from."""

    records: list[Any] = field(default_factory=list)
    items: list[Any] = field(default_factory=list)
    taken: dict[PartitionQueue[Any], int] = field(default_factory=dict)  # queue -> records

    def __len__(self) -> int:
        return len(self.records)


def take(
    queues: Sequence[PartitionQueue[Any]],
    caught_up: Sequence[bool | None],
    limit: int,
    now: float,
    max_idle_s: float,
    hold: Sequence[float] | None = None,
    max_lag_wait_s: float = MAX_LAG_WAIT_S,
) -> Batch:
    """The next micro-batch (at most ``limit`` records) from ``queues`` (``caught_up[i]``:
    queue ``i`` has buffered everything up to its partition's end, True; has more, False; not
    known yet, None; ``hold[i]``: queue ``i``'s own records wait at or past this key, INF for
    none: the labels behind what stage 1 may still forward). Empty when nothing may go yet (a
    partition with more to read holds the others back)."""
    bound = INF
    first_limit = (0, 0)  # the (rank, order) of the first queue that sets the bound
    for i, (queue, done) in enumerate(zip(queues, caught_up, strict=True)):
        f = queue.frontier(done, now, max_idle_s, max_lag_wait_s)
        if hold is not None and hold[i] < f and queue.buffered:
            # Its records at or past the hold still come, at their keys: nothing of the other
            # queues passes the first of them (a forward at t waits for a label known at t).
            free = queue.count_below(hold[i])
            if free < queue.buffered:
                f = min(f, queue.key_at(free))
        if f < bound or (f == bound and (queue.rank, queue.order) < first_limit):
            bound = f
            first_limit = (queue.rank, queue.order)
    # Keys below the bound go; so do keys *at* it from the queues ordered no later than the first
    # queue that sets it: a record it has yet to hand over at that key comes after them (at equal
    # keys: rank, then registration order, then stream order). Without this, a partition whose
    # buffered keys all equal its last one (events read again after a crash, at new offsets,
    # behind the running maximum) would hold everything back, itself included.
    counts = []
    for i, q in enumerate(queues):
        if not q.buffered:
            continue
        held = INF if hold is None else hold[i]
        if held <= bound:
            counts.append((q, q.count_below(held)))
        else:
            counts.append((q, q.count_below(bound, inclusive=(q.rank, q.order) <= first_limit)))
    counts = [(q, n) for q, n in counts if n]
    batch = Batch()
    if not counts:
        return batch
    if len(counts) == 1:
        queue, n = counts[0]
        n = min(n, limit)
        records, items, _ = queue.pop(n)
        batch.records, batch.items, batch.taken[queue] = records, items, n
        return batch
    # Copy no more than about twice the batch: a queue with more eligible records than its share
    # is cut at its share, and nothing at or past the key where it was cut goes (the rest of it
    # may hold smaller keys of the other queues' ties).
    share = max(2 * limit // len(counts), 16)
    cut = INF
    for q, n in counts:
        if n > share:
            key = q.key_at(share - 1)
            if key < cut:
                cut = key
    if cut < bound:
        trimmed = [(q, q.count_below(cut)) for q, _ in counts]
        trimmed = [(q, n) for q, n in trimmed if n]
        if trimmed:
            counts = trimmed
        if len(counts) == 1:
            queue, n = counts[0]
            n = min(n, limit)
            records, items, _ = queue.pop(n)
            batch.records, batch.items, batch.taken[queue] = records, items, n
            return batch
    # Several partitions: merge by (key, rank, registration order), stable in stream order.
    parts = [(q, q.peek(n)) for q, n in counts]
    all_keys: list[float] = []
    all_records: list[Any] = []
    all_items: list[Any] = []
    for _, (part_records, part_items, part_keys) in parts:
        all_records += part_records
        all_items += part_items
        all_keys += part_keys
    sizes = [len(p[0]) for _, p in parts]
    ranks = np.repeat(np.array([q.rank * 65536 + q.order for q, _ in parts], np.int64), sizes)
    order = np.lexsort((ranks, np.array(all_keys, dtype=np.float64)))[:limit]
    if len(order) < len(all_records):  # the merge is stable: a prefix of each queue's is chosen
        chosen = np.zeros(len(all_records), dtype=bool)
        chosen[order] = True
        start = 0
        for (queue, _), size in zip(parts, sizes, strict=True):
            taken = int(chosen[start : start + size].sum())
            start += size
            if taken:
                queue.drop(taken)
                batch.taken[queue] = taken
    else:
        for (queue, _), size in zip(parts, sizes, strict=True):
            queue.drop(size)
            batch.taken[queue] = size
    picks = order.tolist()
    if len(picks) == 1:
        batch.records, batch.items = [all_records[picks[0]]], [all_items[picks[0]]]
    else:
        gather = itemgetter(*picks)
        batch.records, batch.items = list(gather(all_records)), list(gather(all_items))
    return batch
