"""Replay floors: how far back in event time a stage may still be handed records again.

After a crash or a rebalance, a stage re-reads each input partition from its last *committed*
offset, and the state it recovers may be far ahead of that offset: a checkpoint writes the states
before the offsets are committed (a kill in between), and the stages go on while it writes. A
record read again must be scored with the features it had the first time, so the state may not
have evicted the samples its windows reach back to. Evicting from the state's newest sample is
wrong whenever the state is ahead of the committed position by more than the allowed lateness:
on a backlog, one commit interval covers days of event time (13,000 transactions/s x 2.8 s of the
kill -9 test were 19 days), and the re-read events' 30-day windows lost their oldest samples.

A stage therefore evicts relative to a *floor* per input partition: a value known at each offset
it took (stage 1: the running maximum event time of the partition's records; stage 2: the least
floor its source partitions had announced) taken at the last offset that was committed. Every
record after the committed offset comes at or after that floor (less the allowed lateness, which
the retention includes), so nothing such a record needs is evicted. Before a partition's first
commit in this process the floor is -inf: the state evicts nothing until then.

:class:`CommitFloors` keeps, per (topic, partition), the values marked at the end of each batch
and promotes the last one at or below each committed offset. Marks never outlive a commit that
passes them, so it holds a few per partition (the batches since the last commit).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

INF = float("inf")


class CommitFloors:
    """Per input partition: values marked at offsets taken, and the one at the last commit."""

    def __init__(self) -> None:
        self._marks: dict[tuple[str, int], deque[tuple[int, float]]] = {}
        self._committed: dict[tuple[str, int], float] = {}
        self._running: dict[tuple[str, int], float] = {}

    def advance(self, topic: str, partition: int, offset_end: int, newest: float) -> None:
        """The records of ``topic[partition]`` before ``offset_end`` were taken, the newest of
        this batch at ``newest``: mark the running maximum (since the reset)."""
        key = (topic, partition)
        running = self._running.get(key, -INF)
        if newest > running:
            running = self._running[key] = newest
        self.mark(topic, partition, offset_end, running)

    def mark(self, topic: str, partition: int, offset_end: int, value: float) -> None:
        """The records of ``topic[partition]`` before ``offset_end`` were taken with ``value``
        (their running maximum event time, or the floor they carried)."""
        key = (topic, partition)
        marks = self._marks.get(key)
        if marks is None:
            marks = self._marks[key] = deque()
        if marks and marks[-1][1] == value:
            marks[-1] = (offset_end, value)  # same value: move the mark on
        else:
            marks.append((offset_end, value))

    def committed(self, offsets: Mapping[Any, int]) -> None:
        """Offsets were committed (``tp`` with ``.topic`` and ``.partition`` -> offset): the
        last value marked at or below each becomes that partition's floor."""
        for tp, offset in offsets.items():
            key = (tp.topic, tp.partition)
            marks = self._marks.get(key)
            if not marks:
                continue
            value = None
            while marks and marks[0][0] <= offset:
                value = marks.popleft()[1]
            if value is not None:
                self._committed[key] = value

    def floor(self, topic: str, partition: int) -> float:
        """The floor of ``topic[partition]`` (-inf before its first commit)."""
        return self._committed.get((topic, partition), -INF)

    def active(self, topic: str, partition: int) -> bool:
        """Whether anything of ``topic[partition]`` was taken or committed since the reset."""
        key = (topic, partition)
        return key in self._committed or bool(self._marks.get(key))

    def partition_floor(self, partition: int) -> float:
        """The least floor of ``partition`` over the topics with records taken from it since the
        reset (-inf when none has, or one has no commit yet)."""
        low = INF
        for key in self._marks.keys() | self._committed.keys():
            if key[1] == partition and self.active(*key):
                value = self._committed.get(key, -INF)
                if value < low:
                    low = value
        return -INF if low == INF else low

    def reset(self) -> None:
        """Forget everything (the partitions changed: each is read again from its commit)."""
        self._marks.clear()
        self._committed.clear()
        self._running.clear()
