"""Checkpoint writes into a Faust table: its store, and its changelog through librdkafka.

The stages keep their entity states decoded between checkpoints
(:class:`stream_app.pipeline.state_store.StateStore`); at each checkpoint every changed key's
latest state goes through :class:`FaustTableWriter`, which does what Faust's
``Table.__setitem__`` does, with the changelog record sent by the worker's
:class:`~stream_app.outputs.publisher.OutputPublisher` instead of Faust's producer:

- the value goes into the table's store (``table.data``) for the record's partition: a RocksDB
  store picks the partition's database from Faust's *current event*, so the write runs with a
  stand-in event (:class:`PartitionEvent`) that names the partition (Faust's ``_current_event``
  context variable, read by ``faust.stores.rocksdb.Store._set``);
- the changelog record is the one Faust would send: same topic, the table partition, the key
  serialized by the table's own key codec (JSON for the stages' string keys), the value as its
  bytes (the tables' value serializer is ``raw``), so Faust's recovery and standbys read it as
  their own;
- with a store that remembers how far it has read its changelog (RocksDB), the offsets of
  delivered changelog records are persisted once the checkpoint's records are delivered, as
  Faust does on each send, so a restart reads only the changelog's tail.

What Faust's ``on_key_set`` also does and this does not: key expiry (the stages' tables have
none) and the monitor's per-table ``on_set`` sensor (the worker's Prometheus metrics count table
keys themselves).
"""

from __future__ import annotations

import weakref
from typing import Any

import orjson
from faust.streams import _current_event
from faust.types import TP

from stream_app.outputs.publisher import OutputPublisher


def bytes_table(app: Any, name: str, partitions: int) -> Any:
    """A Faust table whose values are bytes, as they are (the stages' encoded states).

    Faust derives a table's serializers from its key and value types: ``value_type=bytes`` makes
    the value serializer ``raw`` for the table, its store and its changelog topic (which the
    table manager builds as soon as the table is registered); keys stay JSON strings.
    """
    table = app.Table(name, default=None, partitions=partitions, value_type=bytes)
    if table.value_serializer != "raw" or table.changelog_topic.value_serializer != "raw":
        raise RuntimeError(f"table {name}: Faust did not make its values raw bytes")
    return table


class _PartitionMessage:
    __slots__ = ("partition", "topic")

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition


class PartitionEvent:
    """Just enough of a Faust event for a store to know the partition: ``event.message``."""

    __slots__ = ("__weakref__", "message")

    def __init__(self, topic: str, partition: int) -> None:
        self.message = _PartitionMessage(topic, partition)


class FaustTableWriter:
    """A ``TableWriter`` (``stream_app.pipeline.state_store``) for one Faust table."""

    def __init__(self, table: Any, outputs: OutputPublisher, persist_offsets: bool) -> None:
        self.table = table
        self.outputs = outputs
        self.persist_offsets = persist_offsets
        self.store = table.data
        self.name = table.name
        self._topic: str | None = None
        self._events: dict[int, PartitionEvent] = {}
        self._key_json = table.key_serializer in (None, "json")
        # partition -> the newest delivered changelog offset not yet persisted
        self._delivered: dict[int, int] = {}

    @property
    def topic(self) -> str:
        """The table's changelog topic."""
        if self._topic is None:
            self._topic = self.table.changelog_topic.get_topic_name()
        return self._topic

    def _event(self, partition: int) -> PartitionEvent:
        event = self._events.get(partition)
        if event is None:
            event = self._events[partition] = PartitionEvent(self.topic, partition)
        return event

    def read(self, key: str, partition: int) -> bytes | None:
        """The store's value for ``key`` (looked up in ``partition``'s database)."""
        token = _current_event.set(weakref.ref(self._event(partition)))  # type: ignore[arg-type]
        try:
            value: Any = self.store.get(key)
        finally:
            _current_event.reset(token)
        return value  # type: ignore[no-any-return]

    def write(self, key: str, partition: int, value: bytes) -> None:
        """Store ``value`` for ``key`` in ``partition`` and queue its changelog record."""
        token = _current_event.set(weakref.ref(self._event(partition)))  # type: ignore[arg-type]
        try:
            self.store[key] = value
        finally:
            _current_event.reset(token)
        if self._key_json:
            key_bytes = orjson.dumps(key)
        else:
            key_bytes, _ = self.table.changelog_topic.prepare_key(key, self.table.key_serializer)
        self.outputs.send(self.topic, key_bytes, value, partition=partition)

    def on_delivery(self, err: Any, msg: Any) -> None:
        """A delivery report of the shared publisher: note this table's changelog offsets."""
        if err is None and msg.topic() == self._topic:
            offset = msg.offset()
            partition = msg.partition()
            if offset > self._delivered.get(partition, -1):
                self._delivered[partition] = offset

    def persist(self) -> None:
        """Record the delivered changelog offsets in a store that keeps them (RocksDB)."""
        if not self.persist_offsets or not self._delivered:
            return
        delivered, self._delivered = self._delivered, {}
        for partition, offset in delivered.items():
            self.store.set_persisted_offset(TP(self.topic, partition), offset)
