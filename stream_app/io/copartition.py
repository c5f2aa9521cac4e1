"""The co-partitioned topics and their partition counts.

A customer's window lives in partition ``murmur2(customer) % n`` of the customer table, whose
changelog has ``n`` partitions, and its records must arrive on that partition of
``transactions`` (and of ``transactions.rerouted``); the same holds for a terminal with
``labels``, ``labels.rerouted``, ``transactions.by-terminal`` and the terminal table. All of
them must have ``n = STREAM_APP_PARTITIONS`` partitions. When one is grown alone (the routine
way to scale a consumer group), the keys on it move to other partitions than their state, and
a new partition has no changelog partition to keep state in: the worker stops reading
(:meth:`stream_app.pipeline.engine.BatchEngine.halt`), reports not-ready with the counts, and
says which command puts it right (``stream-app topics grow``).
"""

from __future__ import annotations

from collections.abc import Mapping

from stream_app.config import Settings
from stream_app.io.topology import TOPOLOGY

COPARTITIONED_INPUTS = tuple(t.name for t in TOPOLOGY.copartitioned(changelogs=False))
"""Declared topics co-partitioned with the tables (names before the topic prefix), from
:data:`stream_app.io.topology.TOPOLOGY`."""

TABLES = tuple(t.name for t in TOPOLOGY.tables)


def changelog_name(settings: Settings, table: str) -> str:
    """The changelog topic Faust keeps ``table`` in."""
    return TOPOLOGY.table(table).changelog_name(settings)


def copartitioned_topics(settings: Settings) -> list[str]:
    """Every topic that must have ``settings.partitions`` partitions, as named on the cluster."""
    return [settings.topic(name) for name in COPARTITIONED_INPUTS] + [
        changelog_name(settings, table) for table in TABLES
    ]


def partition_mismatches(settings: Settings, counts: Mapping[str, int]) -> dict[str, int]:
    """The co-partitioned topics (in ``counts``: name -> partitions on the cluster) whose count
    is not ``settings.partitions``; a topic missing from ``counts`` is not a mismatch (the
    worker creates it)."""
    out = {}
    for name in copartitioned_topics(settings):
        count = counts.get(name)
        if count is not None and count != settings.partitions:
            out[name] = count
    return out


def mismatch_message(settings: Settings, mismatches: Mapping[str, int]) -> str:
    """What is wrong and what to do, for the log and ``/readyz``."""
    shown = ", ".join(f"{name} has {count}" for name, count in sorted(mismatches.items()))
    target = max([settings.partitions, *mismatches.values()])
    return (
        f"co-partitioned topics disagree on their partition count: {shown}, where the worker's "
        f"state is kept in {settings.partitions} (STREAM_APP_PARTITIONS). The worker reads "
        "nothing until this is put right: a key on the new layout would meet another key's "
        "state. Stop the workers, run `stream-app topics grow --partitions "
        f"{target}` (grows every co-partitioned topic and moves the state to the keys' new "
        f"partitions), then start them with STREAM_APP_PARTITIONS={target}."
    )
