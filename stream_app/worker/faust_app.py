"""The Faust app of the worker, configured from the settings: broker, store, web, commits."""

from __future__ import annotations

import os
from typing import Any

from stream_app.config import Settings
from stream_app.faust_ext.batch import BatchApp
from stream_app.faust_ext.exactly_once import ExactlyOnceApp
from stream_app.faust_ext.recovery import SeekFirstTableManager
from stream_app.io.security import faust_credentials

EXACTLY_ONCE_COMMIT_INTERVAL_S = 0.5
"""Checkpoint interval with exactly_once unless set: its outputs are visible once committed."""


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


def faust_app(settings: Settings) -> BatchApp:
    """The app (an :class:`ExactlyOnceApp` with ``processing_guarantee=exactly_once``): the
    consumer group, the batch consumer, recovery, offset commits, the web server."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    extra: dict[str, Any] = {}
    interval = commit_interval(settings)
    if interval is not None:
        extra["broker_commit_interval"] = interval
    exactly_once = settings.processing_guarantee == "exactly_once"
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
    app.fetch_max_wait_ms = settings.fetch_max_wait_ms
    return app
