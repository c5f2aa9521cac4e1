"""Delete what the terminal stage has committed from the repartition topic, as Kafka Streams does.

``transactions.by-terminal`` is written and read only by the worker, and its records carry their
source record's timestamp, which may be years old (a replay of historical data): time-based
retention would delete records before the terminal stage read them. So the topic keeps records
without a time limit (``retention.ms = -1``, ``topics/topics.toml``) and the worker deletes
them itself once the offsets of the terminal stage past them are committed: after a checkpoint,
at most every ``interval_s``, :class:`RepartitionPurger` asks the broker to move each partition's
log start to the committed offset (``DeleteRecords``; the worker's user needs Delete on the
topic, ``stream_app.io.worker_acls.worker_acls``). The worker also calls it on a timer of the same
interval with every offset committed so far, so the last commits before the stream goes quiet
are purged too.

The request runs in the background: a failure is logged and retried at the next interval; it
never holds up scoring, and what it did not delete is deleted later.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any

from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from stream_app.config import Settings
from stream_app.io.security import librdkafka_config

log = logging.getLogger("stream_app.outputs")


SAFE_FROM = (2, 16)
"""confluent-kafka before 2.16 frees, in ``AdminClient.delete_records``, a list it does not own
(confluent-kafka-python #2275, fixed by #2328): the next admin call crashes the process (seen
here with 2.12.2, the second call segfaults). The worker does not purge with those versions."""


def confluent_version() -> str:
    """The installed confluent-kafka's version (``confluent_kafka.version()`` is a string here;
    its documentation has it a ``(str, int)`` pair: both are accepted)."""
    import confluent_kafka

    found: Any = confluent_kafka.version()
    return found if isinstance(found, str) else str(found[0])


def delete_records_safe(version: str | None = None) -> bool:
    """Whether this confluent-kafka's ``delete_records`` is safe to call (see :data:`SAFE_FROM`)."""
    text = version if version is not None else confluent_version()
    parts = tuple(int(p) for p in text.split(".")[:2] if p.isdigit())
    return parts >= SAFE_FROM


class RepartitionPurger:
    """Deletes committed records of one topic, at most every ``interval_s``."""

    def __init__(
        self,
        settings: Settings,
        topic: str,
        interval_s: float = 30.0,
        admin_factory: Callable[[dict[str, Any]], Any] = AdminClient,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.topic = topic
        self.interval_s = interval_s
        self._admin_factory = admin_factory
        self._config = librdkafka_config(settings)
        self._admin: Any = None
        self._clock = clock
        self._last = clock()
        self._deleted: dict[int, int] = {}  # partition -> log start we asked for
        self._pending: list[Future[Any]] = []
        self.requests = 0
        self.failures = 0

    def after_commit(self, committed: Mapping[Any, int]) -> bool:
        """Given the positions just committed, ask for the deletion if it is time; whether a
        request went out."""
        now = self._clock()
        if now - self._last < self.interval_s or any(not f.done() for f in self._pending):
            return False
        wanted = [
            TopicPartition(tp.topic, tp.partition, offset)
            for tp, offset in committed.items()
            if tp.topic == self.topic and offset > self._deleted.get(tp.partition, 0)
        ]
        if not wanted:
            return False
        self._last = now
        if self._admin is None:
            self._admin = self._admin_factory(self._config)
        futures = self._admin.delete_records(wanted, request_timeout=30)
        self.requests += 1
        self._pending = []
        for tp, future in futures.items():
            future.add_done_callback(self._done(tp.partition, tp.offset))
            self._pending.append(future)
        return True

    def _done(self, partition: int, offset: int) -> Callable[[Future[Any]], None]:
        def done(future: Future[Any]) -> None:
            exc = future.exception()
            if exc is None:
                self._deleted[partition] = max(self._deleted.get(partition, 0), offset)
            else:
                self.failures += 1
                log.warning(
                    "could not delete %s[%d] below %d (committed, read by the terminal stage): "
                    "%s; retrying in %.0f s. The worker needs Delete on the topic.",
                    self.topic,
                    partition,
                    offset,
                    exc,
                    self.interval_s,
                )

        return done
