"""The live entity states of one table, and their checkpoint.

A stage reads and updates an entity's state through :class:`StateStore`: a dict of decoded
state objects in front of the table. The first read of a key decodes the table's value (bytes,
or a JSON state written by earlier code); later reads are a dict lookup. A key the stage changed
is marked dirty with its partition, and :meth:`StateStore.flush` writes each dirty key's latest
state once, at the checkpoint that precedes an offset commit, through a :class:`TableWriter`
(the worker's writes the table's store and sends the changelog record, see
``stream_app.faust_ext.tables``). Between checkpoints a key may change a thousand times and be
written once.

The cache is dropped whenever the worker's partitions change (:meth:`StateStore.clear`, after a
checkpoint), so a key is always read from the table Faust recovered, never from a copy of a
partition the worker no longer owns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, MutableMapping
from typing import Any, Generic, Protocol, TypeVar

from stream_app.features.state import CustomerState, TerminalState, decode_state

S = TypeVar("S", CustomerState, TerminalState)


class TableWriter(Protocol):
    """Where a table's values come from and go to."""

    def read(self, key: str, partition: int) -> bytes | dict[str, Any] | None:
        """The table's value for ``key`` (in table partition ``partition``; None when absent)."""

    def write(self, key: str, partition: int, value: bytes) -> None:
        """Store ``value`` for ``key`` (in table partition ``partition``) and log it."""


class MappingWriter:
    """A :class:`TableWriter` over a plain mapping (tests, tools, the offline paths)."""

    def __init__(self, table: MutableMapping[str, Any]) -> None:
        self.table = table

    def read(self, key: str, partition: int) -> bytes | dict[str, Any] | None:
        """The mapping's value."""
        return self.table.get(key)

    def write(self, key: str, partition: int, value: bytes) -> None:
        """Set the mapping's value."""
        self.table[key] = value


class StateStore(Generic[S]):
    """Decoded states of one table, the keys changed since the last flush, and their flush."""

    def __init__(self, kind: type[S], writer: TableWriter | MutableMapping[str, Any]) -> None:
        self.kind: type[S] = kind
        self.writer: TableWriter = (
            writer  # type: ignore[assignment]
            if hasattr(writer, "write") and hasattr(writer, "read")
            else MappingWriter(writer)  # type: ignore[arg-type]
        )
        self.cache: dict[str, S] = {}
        self.dirty: dict[str, int] = {}  # key -> table partition
        self.loads = 0  # keys read from the table since start
        self.writes = 0  # states written since start

    def get(self, key: str, partition: int = 0) -> S:
        """``key``'s state (a new one when the table has none); ``partition``: the table
        partition that holds it."""
        state = self.cache.get(key)
        if state is None:
            raw = self.writer.read(key, partition)
            self.loads += 1
            state = self.kind() if raw is None else decode_state(raw, self.kind)  # type: ignore[assignment]
            self.cache[key] = state  # type: ignore[assignment]
        return state  # type: ignore[return-value]

    def changed(self, key: str, partition: int) -> None:
        """Mark ``key`` (in table ``partition``) to be written at the next :meth:`flush`."""
        self.dirty[key] = partition

    def flush(self) -> int:
        """Write the latest state of every key changed since the last flush; how many."""
        return self.write_out(self.take_dirty())

    def take_dirty(self) -> dict[str, int]:
        """The keys changed since the last flush (key -> partition); from now on none is."""
        dirty, self.dirty = self.dirty, {}
        return dirty

    def write_out(self, dirty: dict[str, int]) -> int:
        """Write the latest state of each key of ``dirty`` (from :meth:`take_dirty`); how many."""
        cache, write = self.cache, self.writer.write
        written = 0
        for key, partition in dirty.items():
            state = cache.get(key)
            if state is None:
                raise RuntimeError(
                    f"state {key!r} changed but no longer cached: the cache was cleared before "
                    "the checkpoint wrote it (a checkpoint must finish before a reset)"
                )
            write(key, partition, state.encode())
            written += 1
        self.writes += written
        return written

    async def write_out_yielding(self, dirty: dict[str, int], chunk: int = 256) -> int:
        """:meth:`write_out`, handing the event loop over every ``chunk`` keys.

        A checkpoint writes every key changed since the last one: 11,000 at 2,500 tx/s, 140 ms
        in one piece, during which nothing else of the worker ran (its fetches stopped too).
        A state written here may already hold later events than the checkpoint's positions,
        when the stages go on meanwhile: harmless, a replayed event is recognised in its state
        (``stream_app.features.state``), and its key is dirty again for the next checkpoint.
        """
        items = list(dirty.items())
        written = 0
        for start in range(0, len(items), chunk):
            written += self.write_out(dict(items[start : start + chunk]))
            await asyncio.sleep(0)
        return written

    def clear(self) -> None:
        """Forget every decoded state (after a flush: nothing is lost)."""
        if self.dirty:
            raise RuntimeError("StateStore.clear() with unflushed changes: flush first")
        self.cache.clear()

    def __len__(self) -> int:
        return len(self.cache)

    def count_keys(self, stored: Iterable[str]) -> int:
        """Keys of the table: ``stored`` (what the table's store holds) and the ones decoded here
        that are not written yet."""
        if not self.cache:
            return sum(1 for _ in stored)
        return len(set(stored).union(self.cache))


class TableKeys:
    """``len()`` of a table as the worker holds it: its store and the states not written yet
    (``stream_app_table_keys``; the store alone lags a checkpoint behind)."""

    def __init__(self, table: Any, states: StateStore[Any]) -> None:
        self.table = table
        self.states = states

    def __len__(self) -> int:
        return self.states.count_keys(self.table.keys())
