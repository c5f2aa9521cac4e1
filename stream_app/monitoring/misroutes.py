"""Misrouted input records, told once per producer: a count per topic and a log line that says
which partitioner the producer seems to use and how to set the right one."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from stream_app.io.partitioning import FIX, guess_partitioner, producer_name
from stream_app.monitoring.metrics import WorkerMetrics
from stream_app.pipeline.routing import Misrouted

log = logging.getLogger("stream_app.worker")


class MisrouteReport:
    """Counts misrouted records (``stream_app_misrouted_records_total``) and warns once per
    producer: per client id when the record names one in a header (``client-id``,
    ``client_id`` or ``producer``), else per topic partition it was read on."""

    def __init__(self, partitions: int, metrics: WorkerMetrics, rerouting: bool = True) -> None:
        self.partitions = partitions
        self.rerouting = rerouting
        self.metrics = metrics
        self.told: set[tuple[str, str]] = set()
        self.total = 0

    def report(self, misrouted: Iterable[Misrouted]) -> None:
        """Count ``misrouted`` and warn for each producer not warned about yet."""
        per_topic: dict[str, int] = {}
        for item in misrouted:
            record = item.record
            topic = record.topic
            per_topic[topic] = per_topic.get(topic, 0) + 1
            name = producer_name(record.headers)
            who = f"producer {name!r}" if name else f"partition {record.partition}"
            if (topic, who) in self.told:
                continue
            self.told.add((topic, who))
            key = record.key or b""
            log.warning(
                "%s: records from %s are on the wrong partition for their key (key %r read on "
                "partition %d belongs on %d of %d): the producer seems to use %s. They are %s. "
                "To fix the producer: %s.",
                topic,
                who,
                key[:64],
                record.partition,
                item.expected,
                self.partitions,
                guess_partitioner(key, self.partitions, record.partition),
                "rerouted to their key's partition and processed there (one more hop)"
                if self.rerouting
                else "dead-lettered as misrouted_key (STREAM_APP_MISROUTED_KEYS=dead_letter)",
                FIX,
            )
        for topic, n in per_topic.items():
            self.metrics.misrouted(topic, n)
            self.total += n
