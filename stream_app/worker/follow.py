"""A running worker follows the model assignment: the control topic, else ``serving.json``.

With ``STREAM_APP_MODEL_ASSIGNMENT=topic`` (the default) an :class:`AssignmentFollower` thread
reads ``models.assignment`` from its beginning; each new record wakes the worker's follow task at
once, and the task also runs every ``STREAM_APP_MODEL_WATCH_INTERVAL_S`` (to retry a refused
version after ``STREAM_APP_MODEL_RETRY_S``). Until the group's first assignment is published, the
worker follows its own ``models/serving.json`` as before. With ``file`` it only watches
``serving.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from stream_app.config import Settings
from stream_app.exceptions import ModelIntegrityError
from stream_app.scoring.artifacts import materialise
from stream_app.scoring.assignment import ASSIGNMENT_TOPIC, ModelRef
from stream_app.scoring.assignment_topic import AssignmentFollower
from stream_app.scoring.serving import ServingWatcher
from stream_app.worker.crash import guard
from stream_app.worker.live import LiveModels

log = logging.getLogger("stream_app.models")


def fetch_assigned(settings: Settings, ref: ModelRef) -> Path:
    """``ref`` in this worker's models directory, fetched and checked if need be."""
    path, fetched = materialise(ref, settings.models_dir, settings.model_fetch_timeout_s)
    if fetched:
        log.info(
            "fetched %s from %s into %s (sha256 %s… matches the assignment and its manifest)",
            ref.version,
            ref.uri,
            path,
            ref.sha256[:12],
        )
    return path


def install_model_watch(app: Any, settings: Settings, live: LiveModels) -> None:
    """Register the follow task (and the follower thread's shutdown) on the Faust ``app``."""
    interval = settings.model_watch_interval_s
    watcher = ServingWatcher(settings.models_dir)

    async def follow_file() -> None:
        try:
            serving = watcher.changed()
        except ModelIntegrityError as exc:
            log.error("%s; serving what it served", exc)
            return
        if serving is not None:
            await live.follow_serving(serving)

    if settings.model_assignment == "file":
        live.source = "models/serving.json (STREAM_APP_MODEL_ASSIGNMENT=file)"

        @app.timer(interval)
        async def watch_serving() -> None:
            """Swap models when ``serving.json`` changes (promote, rollback)."""
            await follow_file()

        return

    follower = AssignmentFollower(settings)
    topic = settings.topic(ASSIGNMENT_TOPIC)

    @app.task
    async def follow_assignment() -> None:
        """Apply the group's latest assignment; ``serving.json`` until there is one."""
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()

        def wake() -> None:  # from the follower's thread
            loop.call_soon_threadsafe(changed.set)

        follower.on_change = wake
        follower.start()
        seen: int | None = None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout=interval)
            changed.clear()
            # A bug must not end the following silently: logged, and the next round goes on.
            with guard("following the model assignment", logger=log):
                published = follower.latest()
                if published is None:
                    if follower.caught_up.is_set():
                        live.source = f"models/serving.json (nothing of this group on {topic} yet)"
                        live.assignment = None
                        await follow_file()
                    continue
                if not follower.caught_up.is_set():
                    continue  # apply the latest record once read, not each older one on the way
                if published.offset != seen:
                    seen = published.offset
                    audit = published.assignment.audit
                    action, role = audit.get("action"), audit.get("role")
                    canary = published.assignment.canary_spec()
                    log.info(
                        "model assignment %s@%d (%s %s by %s at %s, audit record %s: %s): "
                        "champion %s, challenger %s, %s",
                        topic,
                        published.offset,
                        action if role in (None, action) else f"{action} {role}",
                        audit.get("version"),
                        audit.get("by"),
                        audit.get("at"),
                        audit.get("id", "none"),
                        audit.get("reason", "no reason given"),
                        *published.assignment.versions().values(),
                        f"canary {canary.describe()}" if canary is not None else "no canary",
                    )
                live.source = topic
                await live.follow_assignment(
                    published, lambda ref: fetch_assigned(settings, ref), settings.model_retry_s
                )

    @app.on_before_shutdown.connect
    def stop_follower(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        follower.stop()
