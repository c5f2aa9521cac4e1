"""One declared topic, resolved for a deployment (:class:`TopicSpec`), and the values that a
declaration leaves to the settings: the input topics' retention (``retention_ms = "horizon"``,
:func:`input_retention_ms`) and ``min.insync.replicas``, which follows the replication
(:func:`min_insync_replicas`).

``message.timestamp.type`` is declared per topic: time-based retention counts from the record
timestamps, so a topic whose producers may stamp records with an old time (event time, a source
record's time) must use ``LogAppendTime`` or have no time limit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from stream_app.config import Settings
from stream_app.features.definitions import DAY_S, Entity, horizon_s

RETENTION_MARGIN_S = 7 * DAY_S
"""Added to the features' horizon in :func:`input_retention_ms`: a week to notice that state
was lost (or that a model needs its features rebuilt) and replay before the oldest records go."""

# Fields compared between a declaration and a live topic.
FIELD_PARTITIONS = "partitions"
FIELD_REPLICATION = "replication"
FIELD_RETENTION = "retention.ms"
FIELD_CLEANUP = "cleanup.policy"
FIELD_TIMESTAMP = "message.timestamp.type"
FIELD_MIN_ISR = "min.insync.replicas"


def input_retention_ms(settings: Settings) -> int:
    """Retention (ms) of the input topics, ``retention_ms = "horizon"`` in the toml: the longest
    look-back of any feature (window plus label delay: 30 + 7 days for the terminal windows), plus
    the allowed lateness, plus :data:`RETENTION_MARGIN_S`. Replaying that much of ``transactions``
    and ``labels`` rebuilds every window the live state holds (its own retention is the horizon
    plus the lateness, ``stream_app.features.state.Retention``). 44 days 1 hour by default."""
    longest = max(horizon_s(entity) for entity in Entity)
    return math.ceil((longest + settings.allowed_lateness_s + RETENTION_MARGIN_S) * 1000)


def min_insync_replicas(replication: int) -> int:
    """``min.insync.replicas`` for a topic of ``replication`` replicas: 1 up to 2 replicas, 2
    from 3. With ``acks=all`` (every producer of the project) a write is acknowledged once on
    that many replicas: with 3 replicas, writes go on with one broker down and an acknowledged
    write survives the loss of any one broker. 2 replicas get 1, so that one broker down does not
    stop every write (an acknowledged write may then be on one broker only: use 3)."""
    return max(1, min(2, replication - 1))


@dataclass(frozen=True)
class TopicSpec:
    """One declared topic, resolved for a deployment (prefix applied, partitions an int)."""

    name: str
    description: str
    key: str
    partitions: int
    replication: int
    retention_ms: int
    cleanup_policy: str
    timestamp_type: str
    """``message.timestamp.type``: ``LogAppendTime`` (the broker stamps arrival; retention
    counts from it) or ``CreateTime`` (the producer's timestamp is kept)."""

    def kafka_configs(self) -> dict[str, str]:
        """The topic-level Kafka configs this declaration sets (and that apply compares)."""
        return {
            FIELD_RETENTION: str(self.retention_ms),
            FIELD_CLEANUP: self.cleanup_policy,
            FIELD_TIMESTAMP: self.timestamp_type,
            FIELD_MIN_ISR: str(min_insync_replicas(self.replication)),
        }
