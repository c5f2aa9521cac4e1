"""The Faust application: the topology, its stages and its outputs. The logic lives in
``stream_app.pipeline``; everything that reaches into Faust lives in ``stream_app.faust_ext``.

::

    transactions ──(key customer_id)──► customer stage ──► transactions.by-terminal
        │  bad / mis-keyed / too late                     (key terminal_id)
        ▼                                                        │
    transactions.dlq ◄── bad labels ── labels (key terminal_id) ─┤
                                                                 ▼
                                   scoring stage: terminal windows + labels,
                                   one predict_proba per micro-batch ──► scores
                                          │                  │
                          challenger (own process, never     drift windows ──► drift
                          blocks the champion) ──► scores.shadow

Faust owns the consumer group, the assignment, the two changelogged tables (``customer-state``,
``terminal-state``, each co-partitioned with its stage's inputs), recovery and the offset
commits. Its consumer hands each fetched partition chunk of the stages' topics to the batch
engine (``stream_app.pipeline.engine``), which runs one loop per stage: micro-batches taken in
event-time order across the stage's partitions, decoded once, processed without waiting, their
outputs queued to librdkafka (``stream_app.outputs``). Before every commit a checkpoint writes
each changed entity state once to its table and changelog and makes the outputs durable:
delivered (at least once) or committed with the input offsets in one Kafka transaction
(``processing_guarantee=exactly_once``).

Prometheus metrics (``stream_app.monitoring.metrics``) are updated once per micro-batch and served
with ``/healthz`` and ``/readyz`` on the Faust web port (``stream_app.monitoring.health``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import faust
import orjson
from confluent_kafka import TopicPartition

from stream_app import api
from stream_app.config import Settings
from stream_app.faust_ext.batch import BatchApp
from stream_app.faust_ext.exactly_once import ExactlyOnceApp
from stream_app.faust_ext.recovery import SeekFirstTableManager
from stream_app.faust_ext.tables import FaustTableWriter, bytes_table
from stream_app.features.definitions import Entity
from stream_app.features.state import CustomerState, Retention, TerminalState
from stream_app.io.copartition import mismatch_message, partition_mismatches
from stream_app.io.deadletter import dead_letter_message
from stream_app.io.records import headers_of, position_of
from stream_app.io.security import admin_client, faust_credentials
from stream_app.logs import log_scores, score_log
from stream_app.monitoring.health import install_views, settled
from stream_app.monitoring.liveness import EXIT_STALLED, Liveness
from stream_app.monitoring.metrics import WorkerMetrics, latencies_from_ms
from stream_app.monitoring.misroutes import MisrouteReport
from stream_app.outputs.kafka_transactions import TransactionalPublisher
from stream_app.outputs.publisher import OutputPublisher
from stream_app.outputs.purge import RepartitionPurger, confluent_version, delete_records_safe
from stream_app.pipeline.buffers import Batch
from stream_app.pipeline.customer_stage import CustomerStage, DeadLetter
from stream_app.pipeline.engine import BatchEngine, StageInput, StageRunner
from stream_app.pipeline.floors import CommitFloors
from stream_app.pipeline.heap import HeapKeeper
from stream_app.pipeline.routing import Reroute, Routing
from stream_app.pipeline.scoring_stage import ScoringStage
from stream_app.pipeline.state_store import StateStore, TableKeys
from stream_app.scoring.canary import CanarySpec
from stream_app.scoring.model import ScoringModel
from stream_app.scoring.serving import Role
from stream_app.scoring.shadow import ShadowJob, sample_rows
from stream_app.worker.follow import install_model_watch
from stream_app.worker.live import LiveModels

log = logging.getLogger("stream_app.worker")

TRANSACTIONS = "transactions"
TRANSACTIONS_REROUTED = "transactions.rerouted"
BY_TERMINAL = "transactions.by-terminal"
LABELS = "labels"
LABELS_REROUTED = "labels.rerouted"
SCORES = "scores"
SHADOW = "scores.shadow"
DRIFT = "drift"
DLQ = "transactions.dlq"

EXACTLY_ONCE_COMMIT_INTERVAL_S = 0.5
"""Checkpoint interval with exactly_once unless set: its outputs are visible once committed."""


class WorkerStats:
    """Counters since the last summary line."""

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


def die(what: str, exc: BaseException) -> None:
    """Stop the process at once, before any offset of the failed work is committed.

    Input errors never get here (the stages turn them into dead letters). What does (an output
    that fails for good, a bug) must not be swallowed: exiting without a commit makes the
    restart re-read what was not committed; state updates are idempotent by offset.
    """
    if isinstance(exc, GeneratorExit | KeyboardInterrupt | asyncio.CancelledError):
        raise exc
    log.critical(
        "%s failed: %r; exiting without committing so the input is read again on restart",
        what,
        exc,
        exc_info=exc,
    )
    logging.shutdown()
    os._exit(70)


def broker_urls(settings: Settings) -> list[str]:
    """Faust broker URLs for the configured transport."""
    scheme = "confluent" if settings.transport == "confluent" else "kafka"
    return [f"{scheme}://{host.strip()}" for host in settings.kafka_bootstrap_servers.split(",")]


def commit_interval(settings: Settings) -> float | None:
    """The checkpoint interval to give Faust (None: Faust's own, from its environment)."""
    if settings.commit_interval_s is not None:
        return settings.commit_interval_s
    if settings.processing_guarantee == "exactly_once" and not os.environ.get(
        "BROKER_COMMIT_INTERVAL"
    ):
        return EXACTLY_ONCE_COMMIT_INTERVAL_S
    return None


def create_app(
    settings: Settings,
    champion: ScoringModel,
    metrics: WorkerMetrics | None = None,
    challenger: ScoringModel | None = None,
    follow: frozenset[Role] = frozenset(),
    canary: CanarySpec | None = None,
) -> faust.App:
    """Build the app: its tables, the batch engine and its two stages, outputs, web views.

    ``metrics`` defaults to a new :class:`WorkerMetrics` with a registry of its own. With a
    ``challenger``, scored events are also scored by it in shadow on ``scores.shadow``.
    The roles in ``follow`` swap to what ``models/serving.json`` names when it changes.
    ``canary``: the canary to start with (the challenger deciding for a share of customers).
    """
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    exactly_once = settings.processing_guarantee == "exactly_once"
    extra: dict[str, Any] = {}
    interval = commit_interval(settings)
    if interval is not None:
        extra["broker_commit_interval"] = interval
    app: BatchApp = (ExactlyOnceApp if exactly_once else BatchApp)(
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
        broker_max_poll_records=max(10_000, settings.batch_max),
        web_enabled=settings.web_enabled,
        web_port=settings.web_port,
        web_bind=settings.web_bind,
        web_host=settings.web_host,  # the canonical URL the API forwards to
        autodiscover=False,
        TableManager=SeekFirstTableManager,  # seeks, then resumes (faust_ext.recovery)
        **extra,
    )
    topic = settings.topic
    by_terminal, scores_topic, shadow_topic = topic(BY_TERMINAL), topic(SCORES), topic(SHADOW)
    drift_topic, dlq, labels_topic = topic(DRIFT), topic(DLQ), topic(LABELS)
    metrics = metrics if metrics is not None else WorkerMetrics()
    stats = WorkerStats()

    # -- outputs -----------------------------------------------------------------------------
    # One librdkafka producer for the tables' changelog records and the shadow records, and for
    # the stages' outputs with at_least_once; exactly_once puts the stages' outputs in
    # transactions of their own (stream_app.outputs.transactions). (A producer of their own for
    # the stages' outputs was measured at 2,500 tx/s: p99 latency 95-134 ms with it, 100-133
    # without; the checkpoint's changelog burst does not hold the forwards up in the queue.)
    rocksdb = settings.store == "rocksdb"
    writers: list[FaustTableWriter] = []

    def changelog_delivered(err: Any, msg: Any) -> None:  # RocksDB keeps changelog offsets
        for writer in writers:
            writer.on_delivery(err, msg)

    outputs = OutputPublisher(settings, listener=changelog_delivered if rocksdb else None)
    transactional = (
        TransactionalPublisher(settings, app.group_metadata)
        if isinstance(app, ExactlyOnceApp)
        else None
    )
    sink: OutputPublisher = transactional if transactional is not None else outputs

    # -- state ------------------------------------------------------------------------------
    # Table keys are JSON strings (Faust's default for tables); values are the states' bytes.
    customer_table = bytes_table(app, "customer-state", settings.partitions)
    terminal_table = bytes_table(app, "terminal-state", settings.partitions)
    writers += [
        FaustTableWriter(customer_table, outputs, persist_offsets=rocksdb),
        FaustTableWriter(terminal_table, outputs, persist_offsets=rocksdb),
    ]
    customers: StateStore[CustomerState] = StateStore(CustomerState, writers[0])
    terminals: StateStore[TerminalState] = StateStore(TerminalState, writers[1])
    stores: tuple[StateStore[Any], ...] = (customers, terminals)

    # -- stages -----------------------------------------------------------------------------
    retention = Retention.for_lateness(settings.allowed_lateness_s)
    rerouting = settings.misrouted_keys == "reroute"
    transactions_rerouted, labels_rerouted = topic(TRANSACTIONS_REROUTED), topic(LABELS_REROUTED)
    customer_stage = CustomerStage(
        customers,
        retention,
        settings.allowed_lateness_s,
        settings.max_message_bytes,
        topic_index={topic(TRANSACTIONS): 0, transactions_rerouted: 1},
        routing=Routing(settings.partitions, transactions_rerouted if rerouting else None),
        floors=(customer_floors := CommitFloors()),
    )
    scoring_stage = ScoringStage(
        terminals,
        champion,
        retention,
        labels_topic,
        settings.max_message_bytes,
        settings.emit_features,
        source_partitions=settings.partitions,
        max_source_skew_s=settings.max_source_skew_s,
        topic_index={by_terminal: 0},
        label_routing=Routing(settings.partitions, labels_rerouted if rerouting else None),
        forward_routing=Routing(settings.partitions, by_terminal),
        floors=(terminal_floors := CommitFloors()),
    )
    live = LiveModels(settings, champion, challenger, scoring_stage, metrics, follow, canary=canary)

    def send_dead_letters(dead: Sequence[DeadLetter]) -> None:
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
        metrics.dead(reasons)
        for item in dead:
            record = item.record
            key, value, headers = dead_letter_message(
                item.rejection, position_of(record), record.key, record.value, headers_of(record)
            )
            sink.send(dlq, key, value, headers)

    def publish_drift(records: Sequence[dict[str, Any]], version: str) -> None:
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

    misroutes = MisrouteReport(settings.partitions, metrics, rerouting)

    def send_reroutes(reroutes: Sequence[Reroute]) -> None:
        for r in reroutes:
            sink.send(
                r.topic, r.key, r.value, r.headers, partition=r.partition, timestamp=r.timestamp
            )

    def handle_customers(batch: Batch) -> None:
        """Stage 1: customer windows, forwards to the terminal stage, dead letters."""
        out = customer_stage.process(batch.records, batch.items)
        sink.send_timed(by_terminal, [(f.key, f.value, f.timestamp) for f in out.forwards])
        if out.misrouted:
            misroutes.report(out.misrouted)
            send_reroutes(out.reroutes)
        if out.dead_letters:
            send_dead_letters(out.dead_letters)
        sink.poll()
        stats.add(consumed=len(batch), replayed=out.replayed, dead_letters=len(out.dead_letters))
        metrics.batch("customer", len(batch), out.replayed)

    def handle_scoring(batch: Batch) -> None:
        """Stage 2: terminal windows and labels, one predict_proba, envelopes, shadow, drift."""
        model, shadow, drift = live.champion, live.shadow, live.drift
        out = scoring_stage.process(batch.records, batch.items)
        sink.send_many(scores_topic, out.scores)
        if out.misrouted:
            misroutes.report(out.misrouted)
            send_reroutes(out.reroutes)
        if out.dead_letters:
            send_dead_letters(out.dead_letters)
        if out.X is not None and out.champion is not None:
            if score_log.isEnabledFor(logging.DEBUG):
                log_scores(score_log, out.events, out.champion, model.version)
            if shadow is not None:
                offer_shadow(shadow, out.events, out.X, out.champion, model.version)
            if drift is not None:
                records = drift.observe(
                    scoring_stage.matrix(out.X, model.features),
                    out.champion.score.tolist(),
                    out.event_ts,
                )
                if records:
                    publish_drift(records, model.version)
        sink.poll()
        stats.add(
            scored=len(out.scores),
            dead_letters=len(out.dead_letters),
            labels_applied=out.labels.applied,
            labels_unmatched=out.labels.pending_or_unknown,
        )
        metrics.batch("scoring", len(batch), out.replayed)
        metrics.scored_batch(
            model.version,
            len(out.scores) - out.canary_scored,
            out.scoring_s if out.scores else None,
            latencies_from_ms(out.arrived_ms) if out.scores else None,
        )
        if out.canary_scored:
            canary_model = scoring_stage.canary
            if canary_model is not None:
                metrics.scored_batch(canary_model.version, out.canary_scored)
        metrics.label_outcomes(out.labels.applied, out.labels.pending_or_unknown)

    def offer_shadow(shadow: Any, events: Any, X: Any, champion_scores: Any, version: str) -> None:
        """The champion's rows of a batch to the challenger (the canary's customers, which the
        challenger decided for already, are not among them)."""
        rows = sample_rows([e.customer_id for e in events], settings.shadow_sample)
        X_challenger = scoring_stage.matrix(X, shadow.challenger.features)
        canary = scoring_stage.canary
        canary_version = canary.version if canary is not None else None
        if rows is None:
            shadow.offer(
                ShadowJob.of(events, X_challenger, version, champion_scores, canary_version)
            )
            return
        live.shadow_counts.unsampled += len(events) - len(rows)
        if rows:
            shadow.offer(
                ShadowJob(
                    [events[i] for i in rows],
                    X_challenger[rows],
                    version,
                    champion_scores.score[rows],
                    champion_scores.decision[rows],
                    canary_version,
                )
            )

    # -- the engine ---------------------------------------------------------------------------
    lock = asyncio.Lock() if transactional is not None else None
    one_at_a_time = asyncio.Lock()  # a revoke's checkpoint waits for the periodic one's writes
    heap = HeapKeeper()
    last_committed: dict[Any, int] = {}

    async def checkpoint() -> dict[Any, int]:
        """States to their tables and changelogs, outputs durable; the positions to commit."""
        try:
            if lock is None:
                # The positions and the keys their events changed, taken together; the states
                # are written while the stages go on (StateStore.write_out_yielding), then
                # everything sent so far is delivered. One checkpoint at a time: a revoke's
                # checkpoint running beside a periodic one would be followed by the engine's
                # reset, and the reset drops the cached states the periodic one has still to
                # write while its offsets are committed.
                async with one_at_a_time:
                    positions = engine.positions()
                    dirty = [store.take_dirty() for store in stores]
                    for store, keys in zip(stores, dirty, strict=True):
                        await store.write_out_yielding(keys)
                    await outputs.settle(outputs.rotate())
                    for writer in writers:
                        writer.persist()
                    heap.after_checkpoint()
                    return positions
            async with lock:
                # Exactly once: the stages wait (the transaction must hold the outputs of the
                # committed positions only); the writes still let the fetches run between chunks.
                positions = engine.positions()
                for store in stores:
                    await store.write_out_yielding(store.take_dirty())
                await outputs.settle(outputs.rotate())
                for writer in writers:
                    writer.persist()
                assert transactional is not None
                changed = [
                    TopicPartition(tp.topic, tp.partition, offset)
                    for tp, offset in positions.items()
                    if last_committed.get(tp) != offset
                ]
                await transactional.commit(changed)
                last_committed.clear()
                last_committed.update(positions)
                heap.after_checkpoint()
                return positions
        except BaseException as exc:
            die("checkpoint", exc)
            raise

    engine = BatchEngine(
        max_buffered=settings.max_buffered,
        max_idle_s=settings.max_task_idle_s,
        checkpoint=checkpoint,
        lock=lock,
    )
    engine.reset_hooks += [customers.clear, terminals.clear, last_committed.clear]
    # Replay floors (stream_app.pipeline.floors): what each stage may evict follows its commits.
    engine.reset_hooks += [customer_floors.reset, terminal_floors.reset]
    engine.commit_hooks += [customer_floors.committed, terminal_floors.committed]
    # What the terminal stage has committed of the repartition topic is deleted (its records
    # carry source timestamps, so it has no time-based retention: stream_app.outputs.purge).
    if settings.repartition_purge_s > 0 and delete_records_safe():
        purger = RepartitionPurger(settings, by_terminal, settings.repartition_purge_s)
        engine.commit_hooks.append(purger.after_commit)

        @app.timer(settings.repartition_purge_s)
        async def purge_when_quiet() -> None:
            """What a commit left unpurged (it came within the interval of the previous purge,
            or its request was still out) is purged here, from every offset committed so far:
            once the stream goes quiet no commit would ask again."""
            purger.after_commit(dict(engine.committed_positions))
    elif settings.repartition_purge_s > 0:
        log.warning(
            "confluent-kafka %s cannot delete records safely (its delete_records frees memory "
            "it does not own, confluent-kafka-python #2275): %s is not purged and grows until "
            "confluent-kafka is 2.16 or newer",
            confluent_version(),
            by_terminal,
        )
    customer_runner = engine.add_stage(
        StageRunner(
            "customer",
            [StageInput(topic(TRANSACTIONS)), StageInput(transactions_rerouted)],
            lambda records: _decoded(customer_stage.decode(records), _tx_time),
            handle_customers,
            settings.batch_max,
        )
    )
    scoring_runner = engine.add_stage(
        StageRunner(
            "scoring",
            [
                # Labels do not run ahead of the transactions stage 1 may still forward (an
                # event may be up to the allowed lateness behind it): early ones would only wait
                # in the terminals' state.
                StageInput(
                    labels_topic,
                    rank=0,
                    held_by=customer_runner,
                    held_slack=settings.allowed_lateness_s,
                ),
                StageInput(
                    labels_rerouted,
                    rank=0,
                    held_by=customer_runner,
                    held_slack=settings.allowed_lateness_s,
                ),
                StageInput(by_terminal, rank=1),
            ],
            lambda records: _decoded(scoring_stage.decode(records), _scoring_time),
            handle_scoring,
            settings.batch_max,
        )
    )
    app.register_engine(engine, settings.partitions)
    app.fetch_max_wait_ms = settings.fetch_max_wait_ms

    @app.task
    async def run_stages() -> None:
        """Bind the engine to the consumer, start the transactions, then run both stages."""
        engine.bind(app.consumer)  # type: ignore[arg-type]
        if transactional is not None:
            try:
                await transactional.start()
            except BaseException as exc:
                die("exactly-once outputs", exc)
        # The models and everything loaded at start-up stay put: keep the collector off them.
        heap.start()
        await check_partitions()  # before the first record
        await asyncio.gather(
            engine.run(customer_runner, lambda exc: die("customer stage", exc)),
            engine.run(scoring_runner, lambda exc: die("scoring stage", exc)),
        )

    @app.on_before_shutdown.connect
    def close_outputs(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        engine.stop()
        if transactional is not None:
            transactional.close()
        left = outputs.close()
        if left:
            log.error("%d output record(s) undelivered at shutdown (shadow records)", left)

    async def send_shadow(key: bytes, value: bytes) -> None:
        outputs.send(shadow_topic, key, value)

    shadow_down: list[str | None] = [None]

    @app.task
    async def shadow_task() -> None:
        """Runs the current challenger's scorer; after a swap, the next one. A challenger whose
        process dies does not stop the champion: it is reported (``/readyz`` detail,
        ``stream_app_stalled{what="challenger"}``) and started again after a backoff."""
        backoff = 1.0
        while True:
            scorer = live.shadow
            if scorer is None:
                await asyncio.sleep(0.5)
                continue
            started = time.monotonic()
            try:
                await scorer.run(send_shadow)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if scorer is not live.shadow:  # swapped meanwhile: the new one runs next
                    continue
                shadow_down[0] = f"its process failed ({type(exc).__name__}: {exc})"
                metrics.set_stalled({"challenger": True})  # now, not at the next progress check
                if time.monotonic() - started > 60.0:
                    backoff = 1.0
                log.error(
                    "challenger %s failed: %r; the champion goes on; restarting the challenger "
                    "in %.0f s",
                    scorer.challenger.version,
                    exc,
                    backoff,
                    exc_info=exc,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 60.0)
                async with live.lock:
                    if live.shadow is scorer:
                        live.use_challenger(scorer.challenger)
                shadow_down[0] = None
                metrics.set_stalled({"challenger": False})

    def shadow_since(seen: list[int]) -> tuple[int, int, int, int]:
        """(scored, agreed, skipped, unsampled) since ``seen``, which is moved on."""
        c = live.shadow_counts
        now = [c.scored, c.agreed, c.skipped, c.unsampled]
        delta = (now[0] - seen[0], now[1] - seen[1], now[2] - seen[2], now[3] - seen[3])
        seen[:] = now
        return delta

    shadow_logged = [0, 0, 0, 0]  # at the previous stats line
    batches_logged = {runner.name: (0, 0) for runner in (customer_runner, scoring_runner)}
    shadow_exported = [0, 0, 0, 0]  # at the previous metrics sync

    @app.timer(1.0)
    async def export_shadow() -> None:
        scored, agreed, skipped, unsampled = shadow_since(shadow_exported)
        metrics.shadow_outcomes(agreed, scored - agreed, skipped, unsampled)

    # -- liveness: a worker that stops making progress says so, then exits ----------------------
    def output_state() -> tuple[int, float]:
        publishers = [outputs] if transactional is None else [outputs, transactional]
        pending = [p for p in publishers if p.pending()]
        return (
            sum(p.pending() for p in pending),
            min((p.last_delivery for p in pending), default=time.monotonic()),
        )

    def challenger_state() -> tuple[int, float, str | None]:
        scorer = live.shadow
        if scorer is None:
            return 0, time.monotonic(), None
        return scorer.queue.qsize(), scorer.last_done, shadow_down[0]

    liveness = Liveness(
        stages=lambda: [] if engine.halted is not None else engine.stages,  # see `partitions`
        waiting=engine.waiting,
        outputs=output_state,
        checkpoints=lambda: (
            engine.uncommitted_since is not None,
            engine.uncommitted_since or time.monotonic(),
        ),
        challenger=challenger_state,
        stall_s=settings.stall_timeout_s,
        exit_s=settings.stall_exit_s,
        commit_interval_s=app.conf.broker_commit_interval,
    )
    stall_logged: dict[str, float] = {}

    @app.timer(5.0)
    async def watch_progress() -> None:
        """Stalls to the metric and the log; a scoring path stalled for good ends the process."""
        if not settled(app):
            return
        stalls = liveness.stalls()
        names = {"customer stage", "scoring stage", "outputs", "checkpoints", "challenger"}
        metrics.set_stalled({name: any(s.what == name for s in stalls) for name in names})
        now = time.monotonic()
        for stall in stalls:
            if now - stall_logged.get(stall.what, 0.0) >= 30.0:
                stall_logged[stall.what] = now
                log.warning("stalled: %s: %s", stall.what, stall.detail)
        fatal = liveness.must_exit(stalls)
        if fatal is not None:
            log.critical(
                "%s made no progress for %.0f s (%s); exiting with code %d so that the "
                "supervisor restarts the worker (it re-reads from the last commit)",
                fatal.what,
                fatal.for_s,
                fatal.detail,
                EXIT_STALLED,
            )
            logging.shutdown()
            os._exit(EXIT_STALLED)

    # -- input that vanished before it was read ---------------------------------------------------
    # The co-partitioned topics must keep STREAM_APP_PARTITIONS partitions (stream_app.io.
    # copartition): a topic grown alone puts keys on partitions that hold other keys' state, or
    # none. Checked before the first record and every partition_check_s; on a mismatch the
    # engine reads and processes nothing (not a stall: it waits for the operator).
    layout_admin = admin_client(settings) if settings.partition_check_s > 0 else None

    async def check_partitions() -> None:
        if layout_admin is None:
            return
        try:
            metadata = await asyncio.to_thread(layout_admin.list_topics, timeout=5)
        except Exception as exc:  # the broker is away: the next round asks again
            log.debug("topic metadata unavailable: %r", exc)
            return
        counts = {name: len(t.partitions) for name, t in metadata.topics.items() if t.error is None}
        mismatches = partition_mismatches(settings, counts)
        if mismatches:
            reason = mismatch_message(settings, mismatches)
            if engine.halted != reason:
                log.error("%s", reason)
            engine.halt(reason)
        elif engine.halted is not None:
            log.info(
                "co-partitioned topics agree again (%d partitions): reading", settings.partitions
            )
            engine.unhalt()

    if layout_admin is not None:

        @app.timer(settings.partition_check_s)
        async def watch_partitions() -> None:
            """Halt the engine while the co-partitioned topics disagree on partition counts."""
            await check_partitions()

    def layout_readiness() -> dict[str, Any]:
        halted = engine.halted
        return {
            "ok": halted is None,
            "detail": halted or f"co-partitioned topics have {settings.partitions} partitions",
        }

    # The engine notes every chunk of an input partition that starts past the offset expected
    # (the last one read, or the committed one after an assignment); the broker's log start says
    # whether the records between were deleted before the worker read them (retention, or a
    # DeleteRecords) or were only transaction markers and aborted records of a producer.
    engine.gap_topics = frozenset({topic(TRANSACTIONS), labels_topic})

    @app.timer(5.0)
    async def watch_retention() -> None:
        """Count and log each range of input records deleted before the worker read them."""
        if not engine.gaps:
            return
        gaps, engine.gaps = engine.gaps, []
        try:
            earliest = await app.consumer.earliest_offsets(*{tp for tp, _, _ in gaps})
        except Exception as exc:  # the broker is away: the next round asks again
            log.debug("log start offsets unavailable: %r", exc)
            engine.gaps[:0] = gaps
            return
        for tp, expected, first in gaps:
            start = earliest.get(tp)
            if start is None or start <= expected:
                log.debug(
                    "%s[%d]: offsets %d..%d hold no record the worker can read (transaction "
                    "markers or aborted records)",
                    tp.topic,
                    tp.partition,
                    expected,
                    first - 1,
                )
                continue
            lost = min(start, first) - expected
            metrics.skipped(tp.topic, tp.partition, lost)
            log.error(
                "%s[%d]: records %d..%d were deleted before the worker read them (the log now "
                "starts at %d); %d record(s) never scored. Retention shorter than the worker's "
                "lag? (see README, Topics)",
                tp.topic,
                tp.partition,
                expected,
                expected + lost - 1,
                start,
                lost,
            )

    @app.timer(settings.stats_interval_s)
    async def log_stats() -> None:
        line = stats.summary()
        scored, agreed, skipped, unsampled = shadow_since(shadow_logged)
        if line and (scored or skipped or unsampled):
            challenger_now = live.challenger
            line += (
                f"; shadow {challenger_now.version if challenger_now else '(none now)'}: scored "
                f"{scored:,}, agree {agreed / scored if scored else 0:.1%}, skipped {skipped:,}"
                + (f", unsampled {unsampled:,}" if unsampled else "")
            )
        if line:
            sizes = []
            for runner in engine.stages:
                batches, records = batches_logged[runner.name]
                n = runner.batches - batches
                if n:
                    sizes.append(f"{runner.name} {(runner.records - records) / n:,.0f}")
                batches_logged[runner.name] = (runner.batches, runner.records)
            if sizes:
                line += "; records per batch: " + ", ".join(sizes)
            log.info("%s · champion %s", line, live.champion.version)

    if follow and settings.model_watch_interval_s > 0:
        # The group's assignment on the control topic, else models/serving.json
        # (stream_app.worker.follow).
        install_model_watch(app, settings, live)

    if settings.web_enabled and settings.api_enabled:  # /v1/... and /openapi.json (issue 17)
        api.install(
            app,
            settings,
            api.ApiState(
                api.EntityTable(
                    Entity.CUSTOMER,
                    customer_table,
                    customers,
                    (topic(TRANSACTIONS), transactions_rerouted),
                ),
                api.EntityTable(Entity.TERMINAL, terminal_table, terminals, (by_terminal,)),
                engine,
                lambda: live.champion,
                retention,
            ),
        )
    if settings.web_enabled:
        install_views(
            app,
            metrics,
            champion,
            tables={
                "customer-state": TableKeys(customer_table, customers),
                "terminal-state": TableKeys(terminal_table, terminals),
            },
            input_topics={
                topic(TRANSACTIONS),
                transactions_rerouted,
                by_terminal,
                labels_topic,
                labels_rerouted,
            },
            lag=engine.lag,
            extra_checks={
                "progress": liveness.readiness,
                "partitions": layout_readiness,
                "models": live.assignment_state,
            },
            engine_state=lambda: {"stages": engine.stage_times(), "partitions": engine.describe()},
        )
    return app


def _tx_time(item: Any) -> float | None:
    return getattr(item, "ts", None)


def _scoring_time(item: Any) -> float | None:
    """A forward at its event time, a label at the time it became known."""
    label_ts = getattr(item, "label_ts", None)
    return label_ts if label_ts is not None else getattr(item, "ts", None)


def _decoded(items: list[Any], time_of: Any) -> tuple[list[Any], list[float | None]]:
    return items, [time_of(item) for item in items]
