"""``stream-app topics grow --partitions N``: every co-partitioned topic to N partitions, and the
tables' state moved to the partitions its keys belong on now.

A key's partition is ``murmur2(key) % n``; with more partitions most keys belong elsewhere. The
input topics keep their records where they are (Kafka cannot move them): what the workers have
not read yet of the old partitions is rerouted by the stages to the keys' new partitions
(``stream_app.pipeline.routing``). The state must move too, or a key would meet an empty window
on its new partition. With the workers stopped (their consumer group empty), this job

1. reads both changelogs to their end: each key's latest state per partition;
2. grows ``transactions``, ``transactions.rerouted``, ``transactions.by-terminal``, ``labels``,
   ``labels.rerouted`` and both changelogs to N (``stream_app.io.copartition``);
3. for each key whose partition changed, writes its state to the new partition of its
   changelog and a tombstone to the old one (idempotent producer, all replicas): a worker
   restarted with ``STREAM_APP_PARTITIONS=N`` recovers each partition from its changelog (a
   RocksDB store replays the tombstone after its stored offset and drops the key).

Running it again after an interruption finishes the job: a key with a state on its right
partition keeps it, and every other copy gets its tombstone.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from confluent_kafka import Producer
from confluent_kafka.admin import NewPartitions

from stream_app.config import Settings
from stream_app.exceptions import TopicError
from stream_app.io.copartition import TABLES, changelog_name, copartitioned_topics
from stream_app.io.partitioning import expected_partition
from stream_app.io.security import librdkafka_config
from stream_app.io.topic_reader import read_to_end
from stream_app.io.topics import make_admin


@dataclass
class GrowReport:
    """What ``grow`` found and did."""

    partitions: int
    before: dict[str, int]
    grown: list[str] = field(default_factory=list)
    keys: dict[str, int] = field(default_factory=dict)  # table -> keys with a state
    moved: dict[str, int] = field(default_factory=dict)  # table -> keys moved


def _counts(settings: Settings, admin: object, timeout: float) -> dict[str, int]:
    metadata = admin.list_topics(timeout=timeout)  # type: ignore[attr-defined]
    return {
        name: len(metadata.topics[name].partitions)
        for name in copartitioned_topics(settings)
        if name in metadata.topics and metadata.topics[name].error is None
    }


def _running_members(settings: Settings, admin: object, timeout: float) -> int:
    """Members of the workers' consumer group (0: stopped)."""
    futures = admin.describe_consumer_groups([settings.app_id])  # type: ignore[attr-defined]
    try:
        description = futures[settings.app_id].result(timeout)
    except Exception:  # no such group yet: nothing runs
        return 0
    return len(description.members)


def grow(
    settings: Settings,
    partitions: int,
    timeout: float = 30.0,
    on_progress: Callable[[str], None] | None = None,
) -> GrowReport:
    """Grow every co-partitioned topic to ``partitions`` and move the tables' state."""
    say = on_progress or (lambda _: None)
    admin = make_admin(settings)
    before = _counts(settings, admin, timeout)
    missing = sorted(set(copartitioned_topics(settings)) - set(before))
    if missing:
        raise TopicError(
            f"{', '.join(missing)} not found: run `stream-app topics apply` (and start a worker "
            "once, which creates the changelogs) before growing"
        )
    if partitions < max(before.values()):
        raise TopicError(
            f"cannot shrink: {max(before, key=lambda n: before[n])} has "
            f"{max(before.values())} partitions, more than {partitions} (Kafka never removes "
            "partitions)"
        )
    members = _running_members(settings, admin, timeout)
    if members:
        raise TopicError(
            f"{members} worker(s) of group {settings.app_id} are running: stop them first "
            "(their state would change under the move), then run this again"
        )
    report = GrowReport(partitions, before)

    say("reading the changelogs")
    changelogs = {changelog_name(settings, t): t for t in TABLES}
    latest: dict[str, dict[bytes, dict[int, bytes | None]]] = {t: defaultdict(dict) for t in TABLES}

    def keep(topic: str, partition: int, key: bytes | None, value: bytes | None) -> None:
        if key is not None:
            latest[changelogs[topic]][key][partition] = value

    read_to_end(settings, list(changelogs), f"{settings.app_id}-grow", None, on_keyed=keep)

    grow_these = [name for name, count in before.items() if count < partitions]
    if grow_these:
        say(f"growing {len(grow_these)} topic(s) to {partitions} partitions")
        futures = admin.create_partitions([NewPartitions(n, partitions) for n in grow_these])
        for name, future in futures.items():
            future.result(timeout)
            report.grown.append(name)
        deadline = time.monotonic() + timeout
        while any(c != partitions for c in _counts(settings, admin, timeout).values()):
            if time.monotonic() > deadline:
                raise TopicError(f"the metadata does not show {partitions} partitions yet")
            time.sleep(0.5)

    say("moving state to the keys' new partitions")
    producer = Producer({**librdkafka_config(settings), "enable.idempotence": True, "acks": "all"})
    errors: list[str] = []

    def delivered(err: object, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    for topic, table in changelogs.items():
        moved = kept = 0
        for key, copies in latest[table].items():
            live = {p: v for p, v in copies.items() if v is not None}
            if not live:
                continue
            kept += 1
            right = expected_partition(orjson.loads(key).encode(), partitions)
            if right not in live:
                # The state from before (one copy; after an interruption, any is the same one).
                value = next(iter(live.values()))
                producer.produce(topic, value, key, partition=right, on_delivery=delivered)
                moved += 1
            for partition in live:
                if partition != right:
                    producer.produce(topic, None, key, partition=partition, on_delivery=delivered)
            producer.poll(0)
        report.keys[table], report.moved[table] = kept, moved
    left = producer.flush(timeout)
    if left or errors:
        raise TopicError(
            f"{left} changelog record(s) undelivered, {len(errors)} failed"
            + (f" (first: {errors[0]})" if errors else "")
            + ": run the command again (it finishes the move)"
        )
    return report
