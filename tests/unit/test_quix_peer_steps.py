"""The Quix peer's step functions compute the worker's features (no quixstreams needed).

The benchmark's peer (bench/peers/quix_pipeline.py) keeps its own state in Quix's store, one JSON
value per entity. Here its customer and terminal steps run over a simulated stream in the order
the live topics carry it (labels 7 days after their transaction), with a state that serializes
every value as Quix does, and the forwarded record going through JSON as Quix's repartition
topic does; the feature rows must equal the offline builder's (the worker's own feature code),
exactly. The same check against a running Quix app on the broker is in
tests/integration/test_quix_peer.py (skipped without quixstreams).
"""

from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson

from bench.peers.quix_pipeline import customer_step, terminal_step
from stream_app.features.definitions import FEATURE_NAMES
from stream_app.features.offline import build_features
from stream_app.features.state import Retention
from stream_app.io.codecs import Label, Transaction, decode_label, decode_transaction
from stream_app.sources.schedule import TRANSACTIONS, batch_from_events, schedule
from stream_app.sources.simulator import simulate


class SerializingState:
    """Quix-like state for one key: values are stored as JSON bytes and decoded on get."""

    def __init__(self, store: dict[str, bytes]) -> None:
        self.store = store

    def get(self, key: Any, default: Any = None) -> Any:
        raw = self.store.get(key)
        return default if raw is None else orjson.loads(raw)

    def set(self, key: Any, value: Any) -> None:
        self.store[key] = orjson.dumps(value)


def peer_rows(events: list) -> dict[str, list[float]]:
    retention = Retention.for_lateness(3600.0)
    customers: dict[str, dict[str, bytes]] = {}
    terminals: dict[str, dict[str, bytes]] = {}
    rows: dict[str, list[float]] = {}
    offsets: dict[str, int] = {}  # per customer (transactions) and per terminal (by terminal)
    for record in schedule(iter(events), labels=True):
        if record.topic == TRANSACTIONS:
            tx = decode_transaction(record.value)
            assert isinstance(tx, Transaction)
            offset = offsets[tx.customer_id] = offsets.get(tx.customer_id, -1) + 1
            fwd = customer_step(
                tx,
                SerializingState(customers.setdefault(tx.customer_id, {})),
                offset,
                0.0,
                retention,
                3600.0,
            )
            assert fwd is not None
            fwd = orjson.loads(orjson.dumps(fwd))  # the repartition topic's JSON
            at_terminal = offsets["t" + tx.terminal_id] = offsets.get("t" + tx.terminal_id, -1) + 1
            out = terminal_step(
                fwd,
                SerializingState(terminals.setdefault(tx.terminal_id, {})),
                at_terminal,
                retention,
                FEATURE_NAMES,
            )
            assert out is not None
            rows[tx.event_id] = out[1]
        else:
            label = decode_label(record.value, now=datetime(2026, 12, 31, tzinfo=UTC).timestamp())
            assert isinstance(label, Label)
            state = SerializingState(terminals.setdefault(label.terminal_id, {}))
            assert terminal_step(label, state, -1, retention, FEATURE_NAMES) is None
    return rows


def test_peer_steps_equal_the_offline_features():
    events = list(
        simulate(
            n_customers=60,
            n_terminals=80,
            days=30,
            seed=11,
            start=datetime(2026, 1, 1, tzinfo=UTC),
        )
    )
    batch = batch_from_events(events)
    expected = build_features(batch)
    rows = peer_rows(events)
    got = np.asarray([rows[event_id] for event_id in batch.event_id])
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    # The sample exercises every feature: delayed labels reach the risk windows.
    risk = [j for j, name in enumerate(FEATURE_NAMES) if "_RISK_" in name]
    assert (expected[:, risk] > 0).any(axis=0).all()
