"""Where the stages' outputs go: scores, forwards, dead letters, reroutes, drift, shadow records.

One librdkafka producer (:class:`~stream_app.outputs.publisher.OutputPublisher`) takes the
tables' changelog records and the shadow records, and the stages' outputs with at_least_once;
exactly_once puts the stages' outputs in transactions of their own
(:mod:`stream_app.outputs.kafka_transactions`). (A producer of their own for the stages' outputs
was measured at 2,500 tx/s: p99 latency 95-134 ms with it, 100-133 without; the checkpoint's
changelog burst does not hold the forwards up in the queue.)
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import orjson

from stream_app.io.deadletter import dead_letter_message
from stream_app.io.records import headers_of, position_of
from stream_app.monitoring.metrics import WorkerMetrics
from stream_app.outputs.kafka_transactions import TransactionalPublisher
from stream_app.outputs.publisher import OutputPublisher
from stream_app.pipeline.customer_stage import DeadLetter
from stream_app.pipeline.routing import Reroute
from stream_app.worker.crash import guard
from stream_app.worker.topics import WorkerTopics

log = logging.getLogger("stream_app.worker")


class Outputs:
    """The producer, the transactional one (exactly_once) and what the stages send through
    them (``sink``: the transactional one when there is one)."""

    def __init__(
        self,
        producer: OutputPublisher,
        transactional: TransactionalPublisher | None,
        topics: WorkerTopics,
        metrics: WorkerMetrics,
    ) -> None:
        self.producer = producer
        self.transactional = transactional
        self.sink: OutputPublisher = transactional if transactional is not None else producer
        self.topics = topics
        self.metrics = metrics

    async def start(self) -> None:
        """Start the transactions (exactly_once); a failure ends the process."""
        if self.transactional is not None:
            with guard("exactly-once outputs", fatal=True):
                await self.transactional.start()

    def send_dead_letters(self, dead: Sequence[DeadLetter]) -> None:
        """Log, count and send the dead letters of a batch to the DLQ."""
        first = dead[0]
        reasons = Counter(item.rejection.reason.value for item in dead)
        where = position_of(first.record)
        log.warning(
            "%d dead letter(s) %s; first from %s[%d]@%d: %s",
            len(dead),
            dict(reasons),
            where.topic,
            where.partition,
            where.offset,
            first.rejection.message,
        )
        self.metrics.dead(reasons)
        for item in dead:
            record = item.record
            key, value, headers = dead_letter_message(
                item.rejection, position_of(record), record.key, record.value, headers_of(record)
            )
            self.sink.send(self.topics.dlq, key, value, headers)

    def send_reroutes(self, reroutes: Sequence[Reroute]) -> None:
        """Send mis-keyed records on to their partitions (``STREAM_APP_MISROUTED_KEYS``)."""
        for r in reroutes:
            self.sink.send(
                r.topic, r.key, r.value, r.headers, partition=r.partition, timestamp=r.timestamp
            )

    def publish_drift(self, records: Sequence[dict[str, Any]], version: str) -> None:
        """Log, count and send a closed drift window's statistics."""
        alerts = [r for r in records if r["alert"]]
        window = records[0]["window"]
        log.info(
            "drift window %s .. %s (%d events): %d statistics, %d alert(s)%s",
            window["start"],
            window["end"],
            window["events"],
            len(records),
            len(alerts),
            ": " + ", ".join(f"{r['statistic']} {r['subject']} {r['value']:.3f}" for r in alerts)
            if alerts
            else "",
        )
        self.metrics.drift(records)
        key = version.encode()
        for record in records:
            self.sink.send(self.topics.drift, key, orjson.dumps(record))

    async def send_shadow(self, key: bytes, value: bytes) -> None:
        """Send a challenger's record (outside the transactions: the shadow is best effort)."""
        self.producer.send(self.topics.shadow, key, value)

    def backlog(self) -> tuple[int, float]:
        """Records not delivered yet, and the last delivery of a producer holding some (now:
        none held); for :class:`~stream_app.monitoring.liveness.Liveness`."""
        publishers = (
            [self.producer] if self.transactional is None else [self.producer, self.transactional]
        )
        pending = [p for p in publishers if p.pending()]
        return (
            sum(p.pending() for p in pending),
            min((p.last_delivery for p in pending), default=time.monotonic()),
        )

    def close(self) -> None:
        """At shutdown: abort or finish the transaction, flush the producer."""
        if self.transactional is not None:
            self.transactional.close()
        left = self.producer.close()
        if left:
            log.error("%d output record(s) undelivered at shutdown (shadow records)", left)
