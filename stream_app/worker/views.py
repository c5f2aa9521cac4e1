"""The worker's web views: ``/metrics``, ``/healthz``, ``/readyz`` (``stream_app.monitoring.
health``) and the entity API ``/v1/...`` with ``/openapi.json`` (``stream_app.api``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from stream_app import api
from stream_app.config import Settings
from stream_app.features.definitions import Entity
from stream_app.features.state import Retention
from stream_app.monitoring.health import install_views
from stream_app.monitoring.metrics import WorkerMetrics
from stream_app.pipeline.engine import BatchEngine
from stream_app.scoring.model import ScoringModel
from stream_app.worker.live import LiveModels
from stream_app.worker.tables import WorkerTables
from stream_app.worker.topics import WorkerTopics


def install_web(
    app: Any,
    settings: Settings,
    *,
    metrics: WorkerMetrics,
    champion: ScoringModel,
    live: LiveModels,
    tables: WorkerTables,
    topics: WorkerTopics,
    engine: BatchEngine,
    retention: Retention,
    checks: Mapping[str, Callable[[], dict[str, Any]]],
) -> None:
    """The views, when the web server is on; ``checks``: the ``/readyz`` checks beside the
    app's own and ``models``."""
    if not settings.web_enabled:
        return
    if settings.api_enabled:  # /v1/... and /openapi.json (issue 17)
        api.install(
            app,
            settings,
            api.ApiState(
                api.EntityTable(
                    Entity.CUSTOMER,
                    tables.customer_table,
                    tables.customers,
                    (topics.transactions, topics.transactions_rerouted),
                ),
                api.EntityTable(
                    Entity.TERMINAL, tables.terminal_table, tables.terminals, (topics.by_terminal,)
                ),
                engine,
                lambda: live.champion,
                retention,
                live.canary_arm,
            ),
        )
    install_views(
        app,
        metrics,
        champion,
        tables=tables.keys(),
        input_topics=topics.inputs,
        lag=engine.lag,
        extra_checks={**checks, "models": live.assignment_state},
        engine_state=lambda: {"stages": engine.stage_times(), "partitions": engine.describe()},
    )
