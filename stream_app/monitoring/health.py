"""Web endpoints on the worker's Faust web port: ``/metrics``, ``/healthz``, ``/readyz``.

* ``GET /metrics``: the worker's registry in the Prometheus text format.
* ``GET /healthz``: 200 ``ok`` while the process (and its event loop) runs. Liveness only.
* ``GET /engine``: the batch engine's view of each stage partition (records buffered, fetched,
  taken, the partition's end, the event-time keys the alignment compares), for an operator
  asking why a stage waits.
* ``GET /readyz``: 200 when the worker can score: the consumer has partitions assigned, table
  recovery has finished (no rebalance or changelog recovery in progress) and the champion is
  loaded; otherwise 503 with a JSON body naming each check and whether it passes.

Faust's flags, from ``faust/app/base.py`` and ``faust/tables/recovery.py``:
``app.rebalancing`` is set in ``on_rebalance_start`` and cleared in ``on_rebalance_end`` (called
when recovery finishes); ``app.in_recovery`` is true while changelogs are being replayed;
``app.tables.recovery.completed`` is set once the first recovery has ended and streams resumed
(it is never cleared, so the two flags cover later rebalances).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sized
from typing import Any

import faust
from faust import web

from stream_app.monitoring.metrics import CONTENT_TYPE_LATEST, WorkerMetrics
from stream_app.scoring.model import ScoringModel

#: Seconds between two ``len(table)`` refreshes of ``stream_app_table_keys`` (on scrape).
TABLE_KEYS_REFRESH_S = 5.0


def readiness(app: faust.App, champion: ScoringModel | None) -> dict[str, dict[str, Any]]:
    """Each readiness check: ``{"ok": bool, "detail": str}``."""
    checks: dict[str, dict[str, Any]] = {}
    try:
        assigned = len(app.consumer.assignment())
    except Exception as exc:  # consumer not started yet, or being torn down
        checks["partitions_assigned"] = {"ok": False, "detail": f"{type(exc).__name__}: {exc}"}
    else:
        checks["partitions_assigned"] = {
            "ok": assigned > 0,
            "detail": f"{assigned} partition(s) assigned",
        }
    recovery = getattr(app.tables, "recovery", None)  # TableManager has it, TableManagerT omits it
    completed = recovery is not None and recovery.completed.is_set()
    rebalancing = bool(getattr(app, "rebalancing", False))
    in_recovery = bool(getattr(app, "in_recovery", False))
    checks["recovery_finished"] = {
        "ok": completed and not rebalancing and not in_recovery,
        "detail": (
            f"recovery completed={completed}, rebalancing={rebalancing}, in_recovery={in_recovery}"
        ),
    }
    loaded = champion is not None and getattr(champion, "estimator", None) is not None
    checks["champion_loaded"] = {
        "ok": loaded,
        "detail": f"champion {champion.version}" if champion is not None else "no champion",
    }
    return checks


def consumer_lag(consumer: Any, topics: Collection[str]) -> dict[tuple[str, int], int]:
    """Records between the log end and the read position, per assigned partition of ``topics``.

    ``consumer`` is Faust's consumer: ``highwater(tp)`` is the log end offset seen by the last
    fetch (None before the first); the read position is one past the last offset handed to a
    stream (``_read_offset``), else the committed offset. Partitions with neither known are left
    out rather than guessed.
    """
    lags: dict[tuple[str, int], int] = {}
    try:
        assigned = consumer.assignment()
    except Exception:  # consumer not started yet, or being torn down
        return lags
    read = getattr(consumer, "_read_offset", {})
    committed = getattr(consumer, "_committed_offset", {})
    for tp in assigned:
        if tp.topic not in topics:
            continue
        end = consumer.highwater(tp)
        last_read = read.get(tp)
        position = last_read + 1 if last_read is not None else committed.get(tp)
        if end is None or position is None:
            continue
        lags[(tp.topic, tp.partition)] = max(int(end) - int(position), 0)
    return lags


def install_views(
    app: faust.App,
    metrics: WorkerMetrics,
    champion: ScoringModel | None,
    tables: Mapping[str, Sized] | None = None,
    ready: Callable[[], dict[str, dict[str, Any]]] | None = None,
    input_topics: Collection[str] = (),
    lag: Callable[[], Mapping[Any, int]] | None = None,
    extra_checks: Mapping[str, Callable[[], dict[str, Any]]] | None = None,
    engine_state: Callable[[], Any] | None = None,
) -> None:
    """Register ``/metrics``, ``/healthz`` and ``/readyz`` on ``app``'s web server.

    ``tables`` (name → table) feed ``stream_app_table_keys`` and ``input_topics`` feed
    ``stream_app_consumer_lag`` at scrape time (``lag``, the batch engine's per-partition lag,
    replaces the consumer's read positions when given); ``ready`` replaces the default checks
    (tests); ``extra_checks`` are added to them (the worker's progress: a stalled worker is not
    ready).
    """
    base = ready if ready is not None else (lambda: readiness(app, champion))
    extra = dict(extra_checks or {})

    def checks() -> dict[str, dict[str, Any]]:
        result = base()
        for name, check in extra.items():
            result[name] = check()
        return result

    table_map: Mapping[str, Sized] = tables or {}

    class MetricsView(web.View):
        """Prometheus exposition of the worker's registry."""

        async def get(self, request: web.Request) -> web.Response:
            """The text format; table key counts refreshed first (throttled)."""
            metrics.refresh_table_keys(table_map, TABLE_KEYS_REFRESH_S)
            if lag is not None:
                metrics.set_lag({(tp.topic, tp.partition): n for tp, n in lag().items()})
            elif input_topics:
                metrics.set_lag(consumer_lag(app.consumer, input_topics))
            # aiohttp refuses a charset inside ``content_type``: pass the header as is.
            return self.bytes(metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    class HealthView(web.View):
        """Liveness."""

        async def get(self, request: web.Request) -> web.Response:
            """200 ``ok``."""
            return self.text("ok\n")

    class ReadyView(web.View):
        """Readiness: partitions, recovery, champion."""

        async def get(self, request: web.Request) -> web.Response:
            """200 when every check passes, else 503; the checks as JSON either way."""
            result = checks()
            failing = sorted(name for name, check in result.items() if not check["ok"])
            body = {"ready": not failing, "failing": failing, "checks": result}
            return self.json(body, status=200 if not failing else 503)

    app.page("/metrics", name="stream-app-metrics")(MetricsView)
    app.page("/healthz", name="stream-app-healthz")(HealthView)
    app.page("/readyz", name="stream-app-readyz")(ReadyView)

    if engine_state is not None:
        describe = engine_state

        class EngineView(web.View):
            """The batch engine's partitions: buffered, fetched, taken, end, alignment keys."""

            async def get(self, request: web.Request) -> web.Response:
                """One JSON object per stage partition."""
                return self.json(describe())

        app.page("/engine", name="stream-app-engine")(EngineView)
