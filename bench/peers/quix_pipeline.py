"""The peer: stream_app's pipeline written with Quix Streams, for the benchmark.

Same input topics, same decoding and validation (``stream_app.io.codecs``), same feature
definitions and entity state (``stream_app.features``: one feature module), same champion
(loaded hash-verified by ``ScoringModel``) and the same envelope, on Quix's own machinery:

::

    transactions ─► decode ─► customer features (stateful, RocksDB + changelog)
        ─► group_by terminal_id (Quix repartition topic, murmur2 on the raw id like ours)
        ─► concat labels (keyed by terminal, co-partitioned) ─► terminal features + labels
           (stateful) ─► scoring ─► envelope ─► <out topic> keyed by customer_id

Scoring: Quix's dataframe steps see one message at a time, so the way it allows a batch is a
sink. ``--scoring batch`` (the default) uses a ``BatchingSink`` that Quix flushes at every
checkpoint (``--commit-interval``, 0.25 s): what accumulated per partition is scored with one
``predict_proba`` per 500 rows and produced before the offsets are committed.
``--scoring event`` calls ``predict_proba`` on a one-row matrix per event inside the dataframe
(about 10x slower: scikit-learn's per-call overhead dominates).

What it leaves out compared with the worker: no challenger in shadow, no drift statistics, no
dead-letter topic (rejected records are dropped and counted in the log), terminal eviction from
the terminal's newest event rather than the worker's event-time watermark. The benchmark's
throughput ratio therefore compares the worker's full pipeline with a lighter peer.

The step functions (:func:`customer_step`, :func:`terminal_step`) take any state with
``get(key, default)`` / ``set(key, value)``, so tests run them without Quix.

    python -m bench.peers.quix_pipeline --bootstrap HOST:PORT --prefix P. --group G \\
        --models DIR --champion VERSION --out P.peer.scores --state-dir DIR
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import orjson

from stream_app.features.definitions import event_features
from stream_app.features.state import CustomerState, Retention, TerminalState
from stream_app.io.codecs import Label, Transaction, decode_label, decode_transaction
from stream_app.io.deadletter import Rejection
from stream_app.scoring.envelope import ScoredEvent, build_envelopes
from stream_app.scoring.model import ScoringModel

log = logging.getLogger("bench.peer")

STATE_KEY = "s"
BATCH_MAX = 500  # rows per predict_proba in the sink, as the worker's STREAM_APP_BATCH_MAX
FORWARDED = ("event_id", "event_time", "ts", "customer_id", "terminal_id", "amount")
"""The transaction's fields the terminal stage needs (as the worker's forward record)."""
SCORED_EVENT = ("event_id", "customer_id", "terminal_id", "event_time", "arrived_ms")
"""The forwarded fields that make a ``ScoredEvent``, in its order."""


class StateLike(Protocol):
    """The part of Quix's ``State`` the steps use."""

    def get(self, key: Any, default: Any = None) -> Any: ...

    def set(self, key: Any, value: Any) -> None: ...


def customer_step(
    tx: Transaction,
    state: StateLike,
    offset: int,
    arrived_ms: float,
    retention: Retention,
    allowed_lateness_s: float,
) -> dict[str, Any] | None:
    """Update the customer's window with ``tx``; the record for the terminal stage, or None for
    a duplicate or too-late event (the worker dead-letters those)."""
    customer = CustomerState(state.get(STATE_KEY))
    if not customer.seen(offset):
        if customer.holds(tx.ts, tx.event_id):
            return None
        newest = customer.newest
        if newest is not None and tx.ts < newest - allowed_lateness_s:
            return None
        customer.apply(tx.ts, tx.amount, offset, retention.customer_s, tx.event_id)
        state.set(STATE_KEY, customer.value)
    features = event_features(tx.amount, tx.ts)
    features.update(customer.features(tx.ts))
    out = {name: getattr(tx, name) for name in FORWARDED}
    out["features"] = features
    out["arrived_ms"] = arrived_ms
    return out


def terminal_step(
    value: dict[str, Any] | Label,
    state: StateLike,
    offset: int,
    retention: Retention,
    columns: Sequence[str],
) -> tuple[dict[str, Any], list[float]] | None:
    """Apply a label (returns None) or a forwarded transaction: its full feature row in
    ``columns`` order, with the forwarded record."""
    terminal = TerminalState(state.get(STATE_KEY))
    if isinstance(value, Label):
        terminal.apply_label(value.ts, value.event_id, value.label)
        state.set(STATE_KEY, terminal.value)
        return None
    ts = value["ts"]
    if terminal.apply(ts, value["event_id"], offset, retention.terminal_s):
        state.set(STATE_KEY, terminal.value)
    features: dict[str, float] = value["features"]
    features.update(terminal.features(ts))
    return value, [features[name] for name in columns]


def score_rows(
    model: ScoringModel,
    items: Sequence[tuple[dict[str, Any], list[float]]],
    emit_features: bool = False,
) -> list[dict[str, Any]]:
    """The champion's envelopes for ``(forwarded record, feature row)`` pairs: one
    ``predict_proba`` over all of them."""
    X = np.asarray([row for _, row in items], dtype=np.float64)
    scores = model.score_batch(X)
    events = [ScoredEvent(*(fwd[name] for name in SCORED_EVENT)) for fwd, _ in items]
    return build_envelopes(model, events, X, scores, emit_features)


def scoring_sink(args: argparse.Namespace, model: ScoringModel) -> Any:
    """A Quix ``BatchingSink`` that scores what accumulated since the last checkpoint, per
    partition, ``BATCH_MAX`` rows per ``predict_proba``, and produces the envelopes (delivered
    before Quix commits the offsets: at-least-once, like the worker)."""
    from confluent_kafka import Producer
    from quixstreams.sinks import BatchingSink, SinkBatch

    class ScoringSink(BatchingSink):
        def __init__(self) -> None:
            super().__init__()
            self.producer = Producer(
                {
                    "bootstrap.servers": args.bootstrap,
                    "linger.ms": 5,
                    "partitioner": "murmur2_random",
                }
            )

        def write(self, batch: SinkBatch) -> None:
            for chunk in batch.iter_chunks(BATCH_MAX):
                for envelope in score_rows(
                    model, [item.value for item in chunk], args.emit_features
                ):
                    self.producer.produce(
                        args.out, key=envelope["customer_id"], value=orjson.dumps(envelope)
                    )
                self.producer.poll(0)
            if self.producer.flush(60):
                raise RuntimeError("scores still undelivered after 60 s")

    return ScoringSink()


class Dropped:
    """Counts what the peer drops (bad input, duplicates, too late), logged now and then."""

    def __init__(self) -> None:
        self.count = 0
        self.logged = time.monotonic()

    def add(self, what: str) -> None:
        self.count += 1
        if time.monotonic() - self.logged > 10:
            log.warning("dropped %d record(s) so far (latest: %s)", self.count, what)
            self.logged = time.monotonic()


def build_app(args: argparse.Namespace) -> Any:
    """The Quix application and its dataframe (imported here: quixstreams is optional)."""
    from quixstreams import Application, message_context

    from stream_app.scoring.registry import resolve_version

    model = ScoringModel.load(resolve_version(args.models, args.champion))
    columns = tuple(model.features)
    retention = Retention.for_lateness(args.allowed_lateness_s)
    dropped = Dropped()
    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        commit_interval=args.commit_interval,
        # Quix's aligned (buffered) consumer waits this long to fill a batch of 10,000: its
        # default of 1 s adds a second per hop at a low rate. 0.02 s = the worker's batch wait.
        consumer_poll_timeout=args.poll_timeout,
        state_dir=args.state_dir,
        loglevel="WARNING",
        producer_extra_config={"linger.ms": 5},
    )
    transactions = app.topic(
        f"{args.prefix}transactions", key_deserializer="str", value_deserializer="bytes"
    )
    labels = app.topic(f"{args.prefix}labels", key_deserializer="str", value_deserializer="bytes")
    scores = app.topic(args.out, key_serializer="str", value_serializer="json")  # --scoring event

    def decoder(decode: Callable[[bytes, int], Any]) -> Callable[[bytes], Any]:
        """The project's codec as a Quix step: the decoded record, or None (counted)."""

        def step(raw: bytes) -> Any:
            decoded = decode(raw, args.max_message_bytes)
            if isinstance(decoded, Rejection):
                dropped.add(decoded.reason.value)
                return None
            return decoded

        return step

    def customer(
        tx: Transaction, key: str, timestamp: int, headers: Any, state: StateLike
    ) -> dict[str, Any] | None:
        if key != tx.customer_id:
            dropped.add("key_mismatch")
            return None
        out = customer_step(
            tx,
            state,
            message_context().offset,
            float(timestamp),
            retention,
            args.allowed_lateness_s,
        )
        if out is None:
            dropped.add("duplicate or too late")
        return out

    def terminal(
        value: dict[str, Any] | Label, key: str, timestamp: int, headers: Any, state: StateLike
    ) -> tuple[dict[str, Any], list[float]] | None:
        return terminal_step(value, state, message_context().offset, retention, columns)

    sdf = app.dataframe(transactions)
    sdf = sdf.apply(decoder(decode_transaction)).filter(lambda tx: tx is not None)
    sdf = sdf.apply(customer, stateful=True, metadata=True).filter(lambda v: v is not None)
    # Keys as plain strings: murmur2 of the same bytes as the labels' keys, so a terminal's
    # transactions and labels meet in one partition (and one state key).
    by_terminal = sdf.group_by("terminal_id", key_serializer="str", key_deserializer="str")
    label_sdf = app.dataframe(labels).apply(decoder(decode_label))
    label_sdf = label_sdf.filter(lambda label: label is not None)
    merged = by_terminal.concat(label_sdf)
    merged = merged.apply(terminal, stateful=True, metadata=True).filter(lambda v: v is not None)
    if args.scoring == "batch":
        merged.sink(scoring_sink(args, model))
    else:
        scored = merged.apply(lambda item: score_rows(model, [item], args.emit_features)[0])
        scored.to_topic(scores, key=lambda envelope: envelope["customer_id"])
    return app


def main(argv: Sequence[str] | None = None) -> None:
    """Run the peer until SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--prefix", default="")
    parser.add_argument("--group", required=True)
    parser.add_argument("--models", required=True)
    parser.add_argument("--champion", default=None)
    parser.add_argument("--out", required=True)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--allowed-lateness-s", type=float, default=3600.0)
    parser.add_argument("--max-message-bytes", type=int, default=64 * 1024)
    parser.add_argument(
        "--emit-features", action="store_true", help="Put the feature vector in every envelope."
    )
    parser.add_argument(
        "--scoring",
        choices=("batch", "event"),
        default="batch",
        help="batch: a sink scores what accumulated at each checkpoint (--commit-interval), "
        "BATCH_MAX rows per predict_proba; event: one predict_proba per event in the dataframe.",
    )
    parser.add_argument(
        "--poll-timeout",
        type=float,
        default=0.02,
        help="Quix's consumer_poll_timeout (seconds; its default is 1.0).",
    )
    parser.add_argument(
        "--commit-interval",
        type=float,
        default=0.25,
        help="Seconds between Quix checkpoints (state flush, sink flush, offset commit).",
    )
    args = parser.parse_args(argv)
    from pathlib import Path

    from threadpoolctl import threadpool_limits

    args.models = Path(args.models)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    with threadpool_limits(limits=1):
        app = build_app(args)
        log.info("peer ready: group %s, scores to %s", args.group, args.out)
        app.run()


if __name__ == "__main__":
    main()
