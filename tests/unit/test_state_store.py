"""StateStore: the keys a checkpoint takes, the states it writes, and the write that yields."""

from __future__ import annotations

import asyncio

import pytest

from stream_app.features.state import CustomerState, decode_state
from stream_app.pipeline.state_store import StateStore


def store_with(keys: list[str]) -> tuple[StateStore[CustomerState], dict[str, bytes]]:
    table: dict[str, bytes] = {}
    store: StateStore[CustomerState] = StateStore(CustomerState, table)
    for i, key in enumerate(keys):
        store.get(key, partition=i % 3)
        store.changed(key, i % 3)
    return store, table


def test_take_dirty_hands_over_the_changed_keys_once() -> None:
    store, table = store_with(["a", "b", "c"])
    store.changed("a", 0)  # changed twice: written once
    dirty = store.take_dirty()
    assert dirty == {"a": 0, "b": 1, "c": 2}
    assert store.dirty == {}
    assert store.take_dirty() == {}
    assert table == {}  # taking writes nothing
    assert store.write_out(dirty) == 3
    assert sorted(table) == ["a", "b", "c"]
    assert store.writes == 3


def test_write_out_writes_the_latest_state_not_the_one_at_take_time() -> None:
    store, table = store_with(["a"])
    dirty = store.take_dirty()
    state = store.get("a")
    state.n = 41  # changed after the take, before the write (a stage went on)
    store.changed("a", 0)
    store.write_out(dirty)
    assert decode_state(table["a"], CustomerState).n == 41
    assert store.take_dirty() == {"a": 0}  # and written again at the next checkpoint


def test_write_out_of_a_key_no_longer_cached_is_an_error_not_a_skip() -> None:
    store, _table = store_with(["a", "b"])
    dirty = store.take_dirty()
    store.clear()  # allowed: nothing is dirty any more
    with pytest.raises(RuntimeError, match="no longer cached"):
        store.write_out(dirty)


def test_clear_with_unwritten_changes_is_refused() -> None:
    store, _ = store_with(["a"])
    with pytest.raises(RuntimeError, match="flush first"):
        store.clear()


def test_write_out_yielding_lets_the_loop_run_between_chunks() -> None:
    keys = [f"k{i}" for i in range(10)]
    store, table = store_with(keys)
    turns: list[int] = []

    async def other() -> None:
        while True:
            turns.append(len(table))
            await asyncio.sleep(0)

    async def main() -> int:
        task = asyncio.create_task(other())
        await asyncio.sleep(0)
        written = await store.write_out_yielding(store.take_dirty(), chunk=4)
        task.cancel()
        return written

    assert asyncio.run(main()) == 10
    assert sorted(table) == sorted(keys)
    # The other task ran before the first chunk and after each of the chunks of 4, 4 and 2.
    assert turns[:4] == [0, 4, 8, 10]
