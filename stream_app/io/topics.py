"""Topics as code: the declarations in ``topics/topics.toml``, and applying them to a cluster.

``load_topic_specs`` reads and validates the declarations; ``apply_topics`` creates the topics
that are missing and compares the ones that exist (partitions, replication factor and the
declared configs) with their declaration. A live topic is never changed silently: every
difference is reported, and only ``fix=True`` repairs the ones Kafka allows to be repaired
(more partitions, config values). ``ensure_topics`` is the one-call version for start-up.
``changelog_specs`` adds the tables' changelogs, which the toml does not declare;
``project_topic_specs`` is every topic the project creates.

The pieces, one module each (their public names are importable from here too):

* :mod:`stream_app.io.topic_specs`: one declared topic (:class:`TopicSpec`) and the values a
  declaration leaves to the settings (input retention, ``min.insync.replicas``);
* :mod:`stream_app.io.topic_declarations`: finding, parsing and validating ``topics.toml``;
* :mod:`stream_app.io.changelog_topics`: the tables' changelogs, and every topic the project
  creates;
* :mod:`stream_app.io.topic_differences`: how a live topic differs from its declaration;
* :mod:`stream_app.io.topic_admin`: the admin requests (list, create, describe, alter), and the
  refusal of a replication factor the cluster has too few brokers for.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from confluent_kafka.admin import AdminClient

from stream_app.config import Settings
from stream_app.exceptions import TopicError
from stream_app.io.changelog_topics import changelog_specs, project_topic_specs
from stream_app.io.topic_admin import (
    check_replication,
    create_topics,
    describe_configs,
    fix_differences,
    live_topics,
    make_admin,
    topics_and_brokers,
    wait_visible,
)
from stream_app.io.topic_declarations import (
    find_declaration,
    load_topic_specs,
    parse_topic_specs,
    select_specs,
)
from stream_app.io.topic_differences import ApplyReport, Difference, compare_topic, copartitioned
from stream_app.io.topic_specs import (
    FIELD_PARTITIONS,
    TopicSpec,
    input_retention_ms,
    min_insync_replicas,
)

__all__ = [
    "FIELD_PARTITIONS",
    "ApplyReport",
    "Difference",
    "TopicSpec",
    "apply_topics",
    "changelog_specs",
    "check_replication",
    "compare_topic",
    "copartitioned",
    "ensure_changelogs",
    "ensure_topics",
    "find_declaration",
    "input_retention_ms",
    "live_topics",
    "load_topic_specs",
    "make_admin",
    "min_insync_replicas",
    "parse_topic_specs",
    "project_topic_specs",
    "select_specs",
]

log = logging.getLogger(__name__)


def apply_topics(
    settings: Settings,
    specs: Sequence[TopicSpec],
    admin: AdminClient | None = None,
    timeout: float = 30,
    *,
    fix: bool = False,
    dry_run: bool = False,
) -> ApplyReport:
    """Make the cluster match ``specs`` as far as it may be done without surprises.

    Missing topics are created with their declared partitions, replication and configs (a
    concurrent creation by someone else is fine). Existing topics are compared field by field;
    each difference is reported with the declared and the live value. With ``fix=True``,
    partitions are increased (never decreased) and config values set to the declared ones;
    replication differences are only reported. ``dry_run=True`` changes nothing and reports what
    would be created (and, with ``fix``, fixed). Raises ``KafkaAccessError`` if the cluster
    cannot be reached or refuses the credentials, ``TopicError`` if the cluster has too few
    brokers for a replication factor (:func:`check_replication`, before anything is created) or
    a creation or fix fails.
    """
    admin = admin if admin is not None else make_admin(settings)
    report = ApplyReport(dry_run=dry_run)
    live, brokers = topics_and_brokers(settings, admin, timeout)
    check_replication(settings, specs, live, brokers)

    missing = [s for s in specs if s.name not in live]
    existing = [s for s in specs if s.name in live]
    if missing:
        if dry_run:
            report.created = [s.name for s in missing]
        else:
            report.created, raced = create_topics(admin, missing, timeout)
            for name in report.created:
                log.info("created topic %s", name)
            if raced:
                log.info("topic(s) created concurrently: %s", ", ".join(s.name for s in raced))
                existing.extend(raced)
            # The controller has them; the broker's metadata follows a moment later. Return only
            # once clients (the worker starting next, a test) can see every one of them.
            live = wait_visible(
                settings, admin, [*report.created, *(s.name for s in raced)], timeout
            )

    if existing:
        configs = describe_configs(admin, [s.name for s in existing], timeout)
        order = {s.name: i for i, s in enumerate(specs)}
        for spec in sorted(existing, key=lambda s: order[s.name]):
            partitions, replication = live[spec.name]
            diffs = compare_topic(spec, partitions, replication, configs.get(spec.name, {}))
            if diffs:
                report.differences.extend(diffs)
            else:
                report.unchanged.append(spec.name)

    if fix and report.differences:
        fixable = [d for d in report.differences if d.fixable]
        if dry_run:
            report.fixed = fixable
        elif fixable:
            report.fixed = fix_differences(admin, fixable, timeout)
            for d in report.fixed:
                log.info("fixed %s %s: %s -> %s", d.topic, d.field, d.live, d.declared)
    return report


def ensure_changelogs(
    settings: Settings, *, admin: AdminClient | None = None, timeout: float = 30
) -> list[str]:
    """Create the tables' missing changelog topics before Faust starts; returns those created.

    With a fresh app id Faust creates the changelogs itself just before its consumer's first
    metadata request, which may not list a topic created a moment ago: the assignor then ignores
    it ("Ignoring missing topic"), aiokafka does not refresh its metadata for minutes, and the
    first write to that table fails with ``PartitionsMismatch`` (the worker exits 70). Created
    here, they are in the metadata before Faust asks. Existing changelogs are left alone (the
    worker's ACLs on its ``<app_id>-`` topics hold no DescribeConfigs); one with another partition
    count than the table's is logged as an error (Faust refuses it).
    """
    admin = admin if admin is not None else make_admin(settings)
    specs = changelog_specs(settings)
    live, brokers = topics_and_brokers(settings, admin, timeout)
    check_replication(settings, specs, live, brokers)
    missing = [s for s in specs if s.name not in live]
    created: list[str] = []
    if missing:
        created, _ = create_topics(admin, missing, timeout)
        for name in created:
            log.info("created changelog topic %s", name)
        live = wait_visible(settings, admin, [s.name for s in missing], timeout)
    for spec in specs:
        partitions = live[spec.name][0]
        if partitions != spec.partitions:
            log.error(
                "changelog %s has %d partitions, its table %d: Faust will refuse it; recreate "
                "it or use another app id",
                spec.name,
                partitions,
                spec.partitions,
            )
    return created


def ensure_topics(
    settings: Settings,
    names: list[str] | None = None,
    *,
    admin: AdminClient | None = None,
    timeout: float = 30,
    path: Path | None = None,
    strict: bool = False,
) -> ApplyReport:
    """Create the declared topics that are missing (all, or the declared ``names``) at start-up.

    Differences on existing topics are logged as warnings and left alone; with ``strict=True``
    they raise ``TopicError`` instead.
    """
    specs = load_topic_specs(settings, path)
    if names is not None:
        specs = select_specs(settings, specs, names)
    report = apply_topics(settings, specs, admin=admin, timeout=timeout)
    for d in report.remaining:
        log.warning(
            "topic %s differs from its declaration: %s declared %s, live %s (%s)",
            d.topic,
            d.field,
            d.declared,
            d.live,
            d.hint,
        )
    if strict and report.remaining:
        lines = [
            f"{d.topic} {d.field}: declared {d.declared}, live {d.live}" for d in report.remaining
        ]
        raise TopicError(
            "topics differ from their declarations (see `stream-app topics apply`):\n  "
            + "\n  ".join(lines)
        )
    return report
