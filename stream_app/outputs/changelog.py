"""Table writes whose changelog records go through the worker's librdkafka producer.

``table[key] = value`` on a Faust table stores the value and sends a changelog record through
Faust's own producer: a ``FutureMessage``, a task and an aiokafka produce request path per key,
which was the largest remaining share of the worker's profile once the outputs had moved to
librdkafka (:mod:`stream_app.outputs.publisher`). :class:`ChangelogWriter` does what
``Table.__setitem__`` does for the stages' tables, with the changelog record sent by the
:class:`~stream_app.outputs.publisher.OutputPublisher`:

- the value goes into the table's store (``table.data``) inside the record's event, so a RocksDB
  store puts it in that partition's database;
- the changelog record is the one Faust would send: same topic, the source record's partition
  (the tables are co-partitioned with their input topics), key and value serialized by the
  table's own codecs, so Faust's recovery and standbys read it as their own;
- with a store that remembers how far it has read its changelog (RocksDB), the offsets of
  delivered changelog records are persisted after the batch is delivered, as Faust does on each
  send in at-least-once mode, so a restart reads only the changelog's tail.

What Faust's ``on_key_set`` also does and this does not: key expiry (the stages' tables have
none) and the monitor's per-table ``on_set`` sensor (the worker's Prometheus metrics count table
keys themselves). The agents call :meth:`ChangelogWriter.persist` after
:meth:`OutputPublisher.delivered`, before the batch is acknowledged.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, MutableMapping
from typing import Any

from faust.streams import _current_event
from faust.types import TP

from stream_app.outputs.publisher import OutputPublisher
from stream_app.pipeline.customer_stage import InputRecord


class ChangelogWriter:
    """A ``StateWriter`` for Faust tables (see :mod:`stream_app.pipeline.customer_stage`)."""

    def __init__(self, outputs: OutputPublisher, persist_offsets: bool) -> None:
        self.outputs = outputs
        self.persist_offsets = persist_offsets
        # (table name, partition) → the newest delivered changelog offset not yet persisted
        self._delivered: dict[tuple[str, int], int] = {}
        self._stores: dict[str, Any] = {}
        self._topics: dict[str, str] = {}
        self._callbacks: dict[tuple[str, int], Callable[[Any, Any], None]] = {}

    def __call__(
        self, table: MutableMapping[str, Any], key: str, value: Any, record: InputRecord
    ) -> None:
        """Store ``value`` under ``key`` and queue its changelog record."""
        faust_table: Any = table
        partition = record.position.partition
        token = _current_event.set(weakref.ref(record.handle))
        try:
            faust_table.data[key] = value
        finally:
            _current_event.reset(token)
        changelog = faust_table.changelog_topic
        key_bytes, _ = changelog.prepare_key(key, faust_table.key_serializer)
        value_bytes, _ = changelog.prepare_value(value, faust_table.value_serializer)
        name = faust_table.name
        topic = self._topics.get(name)
        if topic is None:
            topic = self._topics[name] = changelog.get_topic_name()
            self._stores[name] = faust_table.data
        self.outputs.send(
            topic,
            key_bytes,
            value_bytes,
            partition=partition,
            on_delivery=self._callback(name, partition) if self.persist_offsets else None,
        )

    def _callback(self, name: str, partition: int) -> Callable[[Any, Any], None]:
        callback = self._callbacks.get((name, partition))
        if callback is None:
            where = (name, partition)

            def callback(err: Any, msg: Any) -> None:
                if err is None:
                    offset = msg.offset()
                    if offset > self._delivered.get(where, -1):
                        self._delivered[where] = offset
                else:
                    self.outputs.on_delivery(err, msg)

            self._callbacks[where] = callback
        return callback

    def persist(self) -> None:
        """Record the delivered changelog offsets in the stores that keep them (RocksDB)."""
        if not self._delivered:
            return
        delivered, self._delivered = self._delivered, {}
        for (name, partition), offset in delivered.items():
            self._stores[name].set_persisted_offset(TP(self._topics[name], partition), offset)
