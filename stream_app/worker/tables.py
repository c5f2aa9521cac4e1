"""The worker's state: two changelogged Faust tables, ``customer-state`` and ``terminal-state``.

Table keys are JSON strings (Faust's default for tables); values are the states' bytes. Each
table is co-partitioned with its stage's inputs; the stages read and write it through a
:class:`~stream_app.pipeline.state_store.StateStore`, which writes each changed state once per
checkpoint (its changelog records go through the producer).
"""

from __future__ import annotations

from typing import Any

from stream_app.config import Settings
from stream_app.faust_ext.batch import BatchApp
from stream_app.faust_ext.tables import FaustTableWriter, bytes_table
from stream_app.features.state import CustomerState, TerminalState
from stream_app.outputs.publisher import OutputPublisher
from stream_app.pipeline.state_store import StateStore, TableKeys


class ChangelogDeliveries:
    """The producer's delivery listener with RocksDB: each table's writer keeps the changelog
    offsets delivered (the writers come after the producer, hence this listener)."""

    def __init__(self) -> None:
        self.writers: list[FaustTableWriter] = []

    def __call__(self, err: Any, msg: Any) -> None:
        for writer in self.writers:
            writer.on_delivery(err, msg)


class WorkerTables:
    """The two tables, their writers and the stages' stores over them."""

    def __init__(
        self,
        app: BatchApp,
        settings: Settings,
        producer: OutputPublisher,
        deliveries: ChangelogDeliveries,
    ) -> None:
        rocksdb = settings.store == "rocksdb"
        self.customer_table = bytes_table(app, "customer-state", settings.partitions)
        self.terminal_table = bytes_table(app, "terminal-state", settings.partitions)
        self.writers = [
            FaustTableWriter(self.customer_table, producer, persist_offsets=rocksdb),
            FaustTableWriter(self.terminal_table, producer, persist_offsets=rocksdb),
        ]
        deliveries.writers += self.writers
        self.customers: StateStore[CustomerState] = StateStore(CustomerState, self.writers[0])
        self.terminals: StateStore[TerminalState] = StateStore(TerminalState, self.writers[1])
        self.stores: tuple[StateStore[Any], ...] = (self.customers, self.terminals)

    def keys(self) -> dict[str, TableKeys]:
        """Each table's keys, by table name (the web views)."""
        return {
            "customer-state": TableKeys(self.customer_table, self.customers),
            "terminal-state": TableKeys(self.terminal_table, self.terminals),
        }
