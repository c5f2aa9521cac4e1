"""The topics the project creates beyond the declared ones: the tables' changelogs."""

from __future__ import annotations

from pathlib import Path

from stream_app.config import Settings
from stream_app.io.topic_declarations import load_topic_specs
from stream_app.io.topic_specs import TopicSpec
from stream_app.io.topology import TOPOLOGY


def changelog_specs(settings: Settings) -> list[TopicSpec]:
    """The changelog topics of the worker's tables (:data:`stream_app.io.topology.TOPOLOGY`) as
    Faust names them, ``<app_id>-<table>-changelog``: the table's partition count
    (``settings.partitions``, co-partitioned with its input),
    ``settings.replication_factor`` (as the app's ``topic_replication_factor``), compacted and
    never deleted by time (compaction keeps each key's latest value whatever its timestamp)."""
    return [
        TopicSpec(
            name=table.changelog_name(settings),
            description=f"Changelog of the {table.name} table (Faust's), replayed on recovery; "
            "compacted, never deleted by time.",
            key=table.key,
            partitions=settings.partitions,
            replication=settings.replication_factor,
            retention_ms=-1,
            cleanup_policy="compact",
            timestamp_type="CreateTime",
        )
        for table in TOPOLOGY.tables
    ]


def project_topic_specs(settings: Settings, path: Path | None = None) -> list[TopicSpec]:
    """Every topic the project creates: the declared ones (:func:`load_topic_specs`), then the
    tables' changelogs (:func:`changelog_specs`). Faust's own ``<app_id>-__assignor-__leader``
    (no records; ``settings.replication_factor`` through the app) is left to Faust."""
    return [*load_topic_specs(settings, path), *changelog_specs(settings)]
