"""The worker's topology: its Faust app, wired in the order an event flows.

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
outputs queued to librdkafka (``stream_app.worker.outputs``). Before every commit a checkpoint
writes each changed entity state once to its table and changelog and makes the outputs durable
(``stream_app.worker.checkpoint``).

The logic lives in ``stream_app.pipeline``, everything that reaches into Faust in
``stream_app.faust_ext``; the pieces wired here in ``stream_app.worker``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import faust

from stream_app.config import Settings
from stream_app.faust_ext.exactly_once import ExactlyOnceApp
from stream_app.features.state import Retention
from stream_app.monitoring.metrics import WorkerMetrics
from stream_app.monitoring.misroutes import MisrouteReport
from stream_app.outputs.kafka_transactions import TransactionalPublisher
from stream_app.outputs.publisher import OutputPublisher
from stream_app.pipeline.customer_stage import CustomerStage
from stream_app.pipeline.engine import StageInput, StageRunner
from stream_app.pipeline.floors import CommitFloors
from stream_app.pipeline.routing import Routing
from stream_app.pipeline.scoring_stage import ScoringStage
from stream_app.scoring.canary import CanarySpec
from stream_app.scoring.model import ScoringModel
from stream_app.scoring.serving import Role
from stream_app.worker.checkpoint import Checkpoint, install_purge
from stream_app.worker.crash import die
from stream_app.worker.faust_app import faust_app
from stream_app.worker.follow import install_model_watch
from stream_app.worker.handlers import (
    CustomerHandler,
    ScoringHandler,
    decode_scoring,
    decode_transactions,
)
from stream_app.worker.live import LiveModels
from stream_app.worker.outputs import Outputs
from stream_app.worker.shadow import ShadowRunner
from stream_app.worker.stats import WorkerStats, install_stats
from stream_app.worker.tables import ChangelogDeliveries, WorkerTables
from stream_app.worker.topics import WorkerTopics
from stream_app.worker.views import install_web
from stream_app.worker.watches import PartitionLayout, install_liveness, install_retention_watch

__all__ = ["WorkerStats", "create_app"]


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
    app = faust_app(settings)
    topics = WorkerTopics.of(settings)
    metrics = metrics if metrics is not None else WorkerMetrics()
    stats = WorkerStats()

    # -- where the stages write: one producer (and the transactions of exactly_once), and the
    #    two changelogged tables whose changelog records it sends -----------------------------
    deliveries = ChangelogDeliveries()  # RocksDB keeps the changelog offsets delivered
    outputs = Outputs(
        OutputPublisher(settings, listener=deliveries if settings.store == "rocksdb" else None),
        TransactionalPublisher(settings, app.group_metadata)
        if isinstance(app, ExactlyOnceApp)
        else None,
        topics,
        metrics,
    )
    tables = WorkerTables(app, settings, outputs.producer, deliveries)
    retention = Retention.for_lateness(settings.allowed_lateness_s)
    rerouting = settings.misrouted_keys == "reroute"
    misroutes = MisrouteReport(settings.partitions, metrics, rerouting)

    # -- stage 1: transactions (key customer_id) -> customer windows -> by-terminal -----------
    customer_stage = CustomerStage(
        tables.customers,
        retention,
        settings.allowed_lateness_s,
        settings.max_message_bytes,
        topic_index={topics.transactions: 0, topics.transactions_rerouted: 1},
        routing=Routing(settings.partitions, topics.transactions_rerouted if rerouting else None),
        floors=(customer_floors := CommitFloors()),
    )
    customer_runner = StageRunner(
        "customer",
        [StageInput(topics.transactions), StageInput(topics.transactions_rerouted)],
        decode_transactions(customer_stage),
        CustomerHandler(customer_stage, outputs, misroutes, metrics, stats),
        settings.batch_max,
    )

    # -- stage 2: by-terminal and labels (key terminal_id) -> terminal windows, labels -> one
    #    predict_proba per micro-batch -> scores; the champion's rows to shadow and drift -----
    scoring_stage = ScoringStage(
        tables.terminals,
        champion,
        retention,
        topics.labels,
        settings.max_message_bytes,
        settings.emit_features,
        source_partitions=settings.partitions,
        max_source_skew_s=settings.max_source_skew_s,
        topic_index={topics.by_terminal: 0},
        label_routing=Routing(settings.partitions, topics.labels_rerouted if rerouting else None),
        forward_routing=Routing(settings.partitions, topics.by_terminal),
        floors=(terminal_floors := CommitFloors()),
    )
    live = LiveModels(settings, champion, challenger, scoring_stage, metrics, follow, canary=canary)
    # Labels do not run ahead of the transactions stage 1 may still forward (an event may be up
    # to the allowed lateness behind it): early ones would only wait in the terminals' state.
    lateness = settings.allowed_lateness_s
    scoring_runner = StageRunner(
        "scoring",
        [
            StageInput(topics.labels, rank=0, held_by=customer_runner, held_slack=lateness),
            StageInput(
                topics.labels_rerouted, rank=0, held_by=customer_runner, held_slack=lateness
            ),
            StageInput(topics.by_terminal, rank=1),
        ],
        decode_scoring(scoring_stage),
        ScoringHandler(settings, scoring_stage, live, outputs, misroutes, metrics, stats),
        settings.batch_max,
    )

    # -- the challenger in shadow, beside the champion ---------------------------------------
    shadow = ShadowRunner(live, outputs, metrics)

    # -- the checkpoint before every commit, and what follows a commit -----------------------
    checkpoint = Checkpoint(settings, outputs, tables, (customer_floors, terminal_floors))
    engine = checkpoint.engine
    engine.add_stage(customer_runner)
    engine.add_stage(scoring_runner)
    engine.reset_hooks.append(scoring_stage.forget_order)
    app.register_engine(engine, settings.partitions)
    install_purge(app, settings, engine, topics.by_terminal)
    layout = PartitionLayout(settings, engine)

    # -- the tasks: both stages' loops, then beside them --------------------------------------
    @app.task
    async def run_stages() -> None:
        """Bind the engine to the consumer, start the transactions, then run both stages."""
        engine.bind(app.consumer)  # type: ignore[arg-type]
        await outputs.start()
        # The models and everything loaded at start-up stay put: keep the collector off them.
        checkpoint.heap.start()
        await layout.check()  # before the first record
        await asyncio.gather(
            engine.run(customer_runner, lambda exc: die("customer stage", exc)),
            engine.run(scoring_runner, lambda exc: die("scoring stage", exc)),
        )

    @app.on_before_shutdown.connect
    def close_outputs(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        engine.stop()
        outputs.close()

    # -- the worker watching itself, its stats, the models it follows, its web views ---------
    shadow.install(app)
    liveness = install_liveness(app, settings, engine, metrics, outputs.backlog, shadow.state)
    layout.install(app)
    install_retention_watch(app, engine, metrics, frozenset({topics.transactions, topics.labels}))
    install_stats(app, settings.stats_interval_s, stats, live, engine, metrics)
    if follow and settings.model_watch_interval_s > 0:
        install_model_watch(app, settings, live)  # the control topic, else serving.json
    install_web(
        app,
        settings,
        metrics=metrics,
        champion=champion,
        live=live,
        tables=tables,
        topics=topics,
        engine=engine,
        retention=retention,
        checks={"progress": liveness.readiness, "partitions": layout.readiness},
    )
    return app
