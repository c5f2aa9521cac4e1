"""The Faust application: topology and I/O. The logic lives in ``stream_app.pipeline``.

::

    transactions ──(key customer_id)──► customer stage ──► transactions.by-terminal
        │  bad / mis-keyed / too late                     (key terminal_id)
        ▼                                                        │
    transactions.dlq ◄── bad labels ── labels (key terminal_id) ─┤
                                                                 ▼
                                   scoring stage: terminal windows + labels,
                                   one predict_proba per micro-batch ──► scores
                                          │                  │
                          challenger (thread, never          drift windows ──► drift
                          blocks the champion) ──► scores.shadow

Both stages read raw bytes (no Faust Record decoding) and micro-batch with ``take_events``.
State lives in two changelogged tables, ``customer-state`` and ``terminal-state``, each
co-partitioned with its stage's input topics. Everything the stages write (outputs and changelog
records) goes through one librdkafka producer and is delivered before the batch is acknowledged
(``stream_app.outputs``). With ``processing_guarantee=exactly_once`` each stage's outputs and
input offsets commit in one Kafka transaction per micro-batch instead
(``stream_app.outputs.transactions``, ``stream_app.faust_exactly_once``).

Prometheus metrics (``stream_app.monitoring.metrics``) are updated once per micro-batch and served
with ``/healthz`` and ``/readyz`` on the Faust web port (``stream_app.monitoring.health``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import faust
import orjson

from stream_app.config import Settings
from stream_app.exceptions import ModelIntegrityError
from stream_app.faust_dispatch import FastDispatchApp
from stream_app.faust_exactly_once import ExactlyOnceApp
from stream_app.features.state import Retention
from stream_app.io.deadletter import SourcePosition, dead_letter_message
from stream_app.io.security import faust_credentials
from stream_app.logs import log_scores, score_log
from stream_app.monitoring.health import install_views
from stream_app.monitoring.metrics import WorkerMetrics, latencies_from_ms
from stream_app.outputs.changelog import ChangelogWriter
from stream_app.outputs.publisher import OutputPublisher
from stream_app.outputs.transactions import AtLeastOnceSink, BatchSink, TransactionalSink
from stream_app.pipeline.customer_stage import CustomerStage, DeadLetter, InputRecord
from stream_app.pipeline.scoring_stage import ScoringStage
from stream_app.scoring.live import LiveModels
from stream_app.scoring.model import ScoringModel
from stream_app.scoring.serving import Role, ServingWatcher
from stream_app.scoring.shadow import ShadowJob

log = logging.getLogger("stream_app.worker")

TRANSACTIONS = "transactions"
BY_TERMINAL = "transactions.by-terminal"
LABELS = "labels"
SCORES = "scores"
SHADOW = "scores.shadow"
DRIFT = "drift"
DLQ = "transactions.dlq"


def _headers(raw: Any) -> list[tuple[str, bytes | None]]:
    if not raw:
        return []
    items: Iterable[Any] = raw.items() if hasattr(raw, "items") else raw
    return [(str(k), v) for k, v in items]


def to_record(event: Any) -> InputRecord:
    """The stage view of a Faust event (raw key and value bytes, position, headers)."""
    msg = event.message
    return InputRecord(
        key=msg.key,
        value=msg.value,
        position=SourcePosition(
            msg.topic,
            msg.partition,
            msg.offset,
            int(msg.timestamp * 1000) if msg.timestamp else None,
        ),
        headers=_headers(msg.headers),
        handle=event,
    )


class WorkerStats:
    """Counters since the last summary line (a person reads the log; Prometheus comes later)."""

    FIELDS = (
        "consumed",
        "scored",
        "dead_letters",
        "replayed",
        "labels_applied",
        "labels_unmatched",
    )

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.since = time.monotonic()

    def add(self, **counts: int) -> None:
        """Add to the counters."""
        self.counts.update(counts)

    def summary(self) -> str | None:
        """One line with the counts and rates since the previous call; None when idle."""
        now = time.monotonic()
        elapsed = max(now - self.since, 1e-9)
        counts, self.counts, self.since = self.counts, Counter(), now
        if not any(counts.values()):
            return None
        parts = [f"{name.replace('_', ' ')} {counts[name]:,}" for name in self.FIELDS]
        return (
            f"last {elapsed:.0f} s: "
            + ", ".join(parts)
            + f" ({counts['scored'] / elapsed:,.0f} scored/s)"
        )


def _die(stage: str, exc: BaseException) -> None:
    """Stop the process at once, before any offset of the failed batch is committed.

    Input errors never get here (the stages turn them into dead letters). What does (a produce
    that fails for good, a bug) must not be swallowed: Faust's ``take_events`` acks a batch even
    when the agent raises, and the next periodic commit would skip its events. Exiting without
    that commit makes the restart re-read the batch; state updates are idempotent by offset.
    """
    if isinstance(exc, GeneratorExit | KeyboardInterrupt):
        raise exc
    if isinstance(exc, asyncio.CancelledError):
        raise exc
    log.critical(
        "%s failed: %r; exiting without committing so the batch is re-read on restart",
        stage,
        exc,
        exc_info=exc,
    )
    logging.shutdown()
    os._exit(70)


def broker_urls(settings: Settings) -> list[str]:
    """Faust broker URLs for the configured transport."""
    scheme = "confluent" if settings.transport == "confluent" else "kafka"
    return [f"{scheme}://{host.strip()}" for host in settings.kafka_bootstrap_servers.split(",")]


def create_app(
    settings: Settings,
    champion: ScoringModel,
    metrics: WorkerMetrics | None = None,
    challenger: ScoringModel | None = None,
    follow: frozenset[Role] = frozenset(),
) -> faust.App:
    """Build the app, its topics, tables, agents and web views.

    ``metrics`` defaults to a new :class:`WorkerMetrics` with a registry of its own. With a
    ``challenger``, every scored batch is also scored by it in shadow on ``scores.shadow``.
    The roles in ``follow`` swap to what ``models/serving.json`` names when it changes.
    """
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    exactly_once = settings.processing_guarantee == "exactly_once"
    app = (ExactlyOnceApp if exactly_once else FastDispatchApp)(
        settings.app_id,
        broker=broker_urls(settings),
        broker_credentials=faust_credentials(settings),
        store="rocksdb://" if settings.store == "rocksdb" else "memory://",
        datadir=str(settings.state_dir / f"{settings.app_id}-data"),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        web_enabled=settings.web_enabled,
        web_port=settings.web_port,
        web_bind=settings.web_bind,
        web_host="127.0.0.1",
        autodiscover=False,
        producer_linger_ms=5,
        stream_buffer_maxsize=max(4096, 4 * settings.batch_max),
        TableManager="stream_app.faust_recovery:SeekFirstTableManager",  # seeks, then resumes
    )
    topic = settings.topic
    transactions = app.topic(topic(TRANSACTIONS), partitions=settings.partitions)
    terminal_inputs = app.topic(topic(BY_TERMINAL), topic(LABELS), partitions=settings.partitions)
    by_terminal, scores, shadow_topic = topic(BY_TERMINAL), topic(SCORES), topic(SHADOW)
    drift_topic, dlq = topic(DRIFT), topic(DLQ)
    # Outputs and the tables' changelog records go through librdkafka, delivered before each
    # batch is acknowledged (stream_app.outputs.publisher, stream_app.outputs.changelog).
    # In exactly_once mode each stage's outputs and input offsets commit in one transaction per
    # micro-batch instead (stream_app.outputs.transactions); changelogs and shadow records stay
    # on the shared publisher.
    rocksdb = settings.store == "rocksdb"
    outputs = OutputPublisher(settings, report_deliveries=rocksdb)
    table_writer = ChangelogWriter(outputs, persist_offsets=rocksdb)
    customer_sink: BatchSink
    scoring_sink: BatchSink
    transactional: list[TransactionalSink] = []
    if isinstance(app, ExactlyOnceApp):
        transactional = [
            TransactionalSink(settings, stage, outputs, app.group_metadata)
            for stage in ("customer", "scoring")
        ]
        customer_sink, scoring_sink = transactional
    else:
        customer_sink = scoring_sink = AtLeastOnceSink(outputs)

    @app.on_before_shutdown.connect
    def close_outputs(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        for sink in transactional:
            sink.close()
        left = outputs.close()
        if left:
            log.error("%d output record(s) undelivered at shutdown (shadow records)", left)

    # Table keys and values serialize as JSON (Faust's default for tables).
    customer_table = app.Table("customer-state", default=None, partitions=settings.partitions)

    terminal_table = app.Table("terminal-state", default=None, partitions=settings.partitions)

    metrics = metrics if metrics is not None else WorkerMetrics()
    labels_topic = topic(LABELS)

    retention = Retention.for_lateness(settings.allowed_lateness_s)
    customer_stage = CustomerStage(
        customer_table,
        retention,
        settings.allowed_lateness_s,
        settings.max_message_bytes,
        table_writer,
    )
    scoring_stage = ScoringStage(
        terminal_table,
        champion,
        retention,
        labels_topic,
        settings.max_message_bytes,
        settings.emit_features,
        table_writer,
        source_partitions=settings.partitions,
        max_source_skew_s=settings.max_source_skew_s,
    )
    live = LiveModels(settings, champion, challenger, scoring_stage, metrics, follow)

    stats = WorkerStats()

    def send_dead_letters(sink: BatchSink, dead: Sequence[DeadLetter]) -> None:
        if dead:
            first = dead[0]
            reasons = Counter(item.rejection.reason.value for item in dead)
            log.warning(
                "%d dead letter(s) %s; first from %s[%d]@%d: %s",
                len(dead),
                dict(reasons),
                first.record.position.topic,
                first.record.position.partition,
                first.record.position.offset,
                first.rejection.message,
            )
            metrics.dead(reasons)
        for item in dead:
            record = item.record
            key, value, headers = dead_letter_message(
                item.rejection, record.position, record.key, record.value, record.headers
            )
            sink.send(dlq, key, value, headers)

    def publish_drift(sink: BatchSink, records: Sequence[dict[str, Any]], version: str) -> None:
        if not records:
            return
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
        metrics.drift(records)
        key = version.encode()
        for record in records:
            sink.send(drift_topic, key, orjson.dumps(record))

    @app.agent(transactions, name="customer-stage")
    async def customer_agent(stream: faust.StreamT[Any]) -> None:
        sink = customer_sink
        try:
            await sink.start()
        except BaseException as exc:
            _die("customer stage", exc)
        async for events in stream.take_events(  # type: ignore[attr-defined]  # Stream has it, StreamT omits it
            settings.batch_max, within=settings.batch_within_s
        ):
            try:
                sink.begin()
                records = [to_record(e) for e in events]
                out = customer_stage.process(records)
                sink.send_many(by_terminal, [(fwd.key, fwd.value) for fwd in out.forwards])
                send_dead_letters(sink, out.dead_letters)
                await sink.finish(records)
                table_writer.persist()
            except BaseException as exc:
                _die("customer stage", exc)
            stats.add(
                consumed=len(events), replayed=out.replayed, dead_letters=len(out.dead_letters)
            )
            metrics.batch("customer", len(events), out.replayed)

    @app.agent(terminal_inputs, name="scoring-stage")
    async def scoring_agent(stream: faust.StreamT[Any]) -> None:
        sink = scoring_sink
        try:
            await sink.start()
        except BaseException as exc:
            _die("scoring stage", exc)
        async for events in stream.take_events(  # type: ignore[attr-defined]  # Stream has it, StreamT omits it
            settings.batch_max, within=settings.batch_within_s
        ):
            # One set of models per batch: a swap waits for the lock (see LiveModels).
            async with live.lock:
                model, shadow, drift = live.champion, live.shadow, live.drift
                try:
                    sink.begin()
                    records = [to_record(e) for e in events]
                    out = scoring_stage.process(records)
                    sink.send_many(scores, out.scores)
                    if out.champion is not None and score_log.isEnabledFor(logging.DEBUG):
                        log_scores(score_log, out.events, out.champion, model.version)
                    send_dead_letters(sink, out.dead_letters)
                    if out.X is not None and out.champion is not None:
                        if shadow is not None:
                            shadow.offer(
                                ShadowJob.of(
                                    out.events,
                                    scoring_stage.matrix(out.X, shadow.challenger.features),
                                    model.version,
                                    out.champion,
                                )
                            )
                        if drift is not None:
                            publish_drift(
                                sink,
                                drift.observe(
                                    scoring_stage.matrix(out.X, model.features),
                                    out.champion.score.tolist(),
                                    out.event_ts,
                                ),
                                model.version,
                            )
                except BaseException as exc:
                    _die("scoring stage", exc)
            try:
                await sink.finish(records)
                table_writer.persist()
            except BaseException as exc:
                _die("scoring stage", exc)
            stats.add(
                scored=len(out.scores),
                dead_letters=len(out.dead_letters),
                labels_applied=out.labels.applied,
                labels_unmatched=out.labels.pending_or_unknown,
            )
            metrics.batch("scoring", len(events), out.replayed)
            metrics.scored_batch(
                model.version,
                len(out.scores),
                out.scoring_s if out.scores else None,
                latencies_from_ms(out.arrived_ms) if out.scores else None,
            )
            metrics.label_outcomes(out.labels.applied, out.labels.pending_or_unknown)

    async def send_shadow(key: bytes, value: bytes) -> None:
        outputs.send(shadow_topic, key, value)

    @app.task
    async def shadow_task() -> None:
        """Runs the current challenger's scorer; after a swap, the next one."""
        while True:
            scorer = live.shadow
            if scorer is None:
                await asyncio.sleep(0.5)
                continue
            try:
                await scorer.run(send_shadow)
            except BaseException as exc:
                _die("shadow scoring", exc)

    def shadow_since(seen: list[int]) -> tuple[int, int, int]:
        """(scored, agreed, skipped) by the challengers since ``seen``, which is moved on."""
        c = live.shadow_counts
        delta = (c.scored - seen[0], c.agreed - seen[1], c.skipped - seen[2])
        seen[:] = [c.scored, c.agreed, c.skipped]
        return delta

    shadow_logged = [0, 0, 0]  # at the previous stats line
    shadow_exported = [0, 0, 0]  # at the previous metrics sync

    @app.timer(1.0)
    async def export_shadow() -> None:
        scored, agreed, skipped = shadow_since(shadow_exported)
        metrics.shadow_outcomes(agreed, scored - agreed, skipped)

    @app.timer(settings.stats_interval_s)
    async def log_stats() -> None:
        line = stats.summary()
        scored, agreed, skipped = shadow_since(shadow_logged)
        if line and (scored or skipped):
            challenger_now = live.challenger
            line += (
                f"; shadow {challenger_now.version if challenger_now else '(none now)'}: scored "
                f"{scored:,}, agree {agreed / scored if scored else 0:.1%}, skipped {skipped:,}"
            )
        if line:
            log.info("%s · champion %s", line, live.champion.version)

    if follow and settings.model_watch_interval_s > 0:
        watcher = ServingWatcher(settings.models_dir)

        @app.timer(settings.model_watch_interval_s)
        async def watch_serving() -> None:
            """Swap models when ``serving.json`` changes (promote, rollback)."""
            try:
                serving = watcher.changed()
            except ModelIntegrityError as exc:
                log.error("%s; serving what it served", exc)
                return
            if serving is not None:
                await live.follow_serving(serving)

    if settings.web_enabled:
        install_views(
            app,
            metrics,
            champion,
            tables={"customer-state": customer_table, "terminal-state": terminal_table},
            input_topics={topic(TRANSACTIONS), topic(BY_TERMINAL), topic(LABELS)},
        )
    return app
