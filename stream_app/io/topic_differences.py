"""How a live topic differs from its declaration (:class:`Difference`, :func:`compare_topic`),
and what an apply found and did (:class:`ApplyReport`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from stream_app.io.topic_specs import (
    FIELD_CLEANUP,
    FIELD_MIN_ISR,
    FIELD_PARTITIONS,
    FIELD_REPLICATION,
    FIELD_TIMESTAMP,
    TopicSpec,
    min_insync_replicas,
)


@dataclass(frozen=True)
class Difference:
    """A live topic disagrees with its declaration on one field."""

    topic: str
    field: str
    declared: int | str
    live: int | str
    fixable: bool
    """Whether ``apply --fix`` can repair it (Kafka cannot shrink partitions or re-replicate)."""

    @property
    def hint(self) -> str:
        """What to do about it, in one line."""
        if self.field == FIELD_PARTITIONS:
            if copartitioned(self.topic) and int(self.declared) > int(self.live):
                return (
                    f"co-partitioned with the tables' state: run `stream-app topics grow "
                    f"--partitions {self.declared}` with the workers stopped (it moves the state)"
                )
            if self.fixable:
                return "run `stream-app topics apply --fix` to add partitions"
            return "Kafka cannot remove partitions: recreate the topic or change the declaration"
        if self.field == FIELD_REPLICATION:
            return (
                "reassign partitions (kafka-reassign-partitions) or change the declaration "
                "(STREAM_APP_REPLICATION_FACTOR)"
            )
        if self.field == FIELD_MIN_ISR and not self.fixable:
            return "follows the replication: fix the replication first, then `topics apply --fix`"
        if self.field == FIELD_TIMESTAMP:
            return (
                "run `stream-app topics apply --fix`; records already on the topic keep their "
                "timestamps, and time-based retention still counts from those"
            )
        return "run `stream-app topics apply --fix` to set the declared value"


@dataclass
class ApplyReport:
    """What ``apply_topics`` found and did, topic names as they are on the cluster."""

    created: list[str] = field(default_factory=list)
    """Topics created (with ``dry_run``: that would be created)."""
    unchanged: list[str] = field(default_factory=list)
    """Existing topics that match their declaration."""
    differences: list[Difference] = field(default_factory=list)
    """Every difference between a live topic and its declaration, as found before any fix."""
    fixed: list[Difference] = field(default_factory=list)
    """Differences repaired by ``fix=True`` (with ``dry_run``: that would be repaired)."""
    dry_run: bool = False

    @property
    def remaining(self) -> list[Difference]:
        """Differences still there after this apply."""
        return [d for d in self.differences if d not in self.fixed]

    @property
    def ok(self) -> bool:
        """True when every declared topic exists (or would) and matches its declaration."""
        return not self.remaining


def _same_config(name: str, declared: str, live: str | None) -> bool:
    if live is None:
        return False
    if name == FIELD_CLEANUP:
        return {p.strip() for p in declared.split(",")} == {p.strip() for p in live.split(",")}
    return declared.strip() == live.strip()


def copartitioned(name: str) -> bool:
    """Whether topic ``name`` (as on the cluster) is co-partitioned with the tables
    (:mod:`stream_app.io.copartition`): only ``topics grow`` may add partitions to it."""
    from stream_app.io.copartition import COPARTITIONED_INPUTS

    return name.endswith("-changelog") or any(name.endswith(n) for n in COPARTITIONED_INPUTS)


def compare_topic(
    spec: TopicSpec, partitions: int, replication: int, configs: Mapping[str, str | None]
) -> list[Difference]:
    """Every difference between ``spec`` and a live topic with these properties."""
    diffs: list[Difference] = []
    if partitions != spec.partitions:
        diffs.append(
            Difference(
                spec.name,
                FIELD_PARTITIONS,
                spec.partitions,
                partitions,
                # Growing one co-partitioned topic alone halts the workers: `topics grow`.
                fixable=spec.partitions > partitions and not copartitioned(spec.name),
            )
        )
    if replication != spec.replication:
        diffs.append(
            Difference(spec.name, FIELD_REPLICATION, spec.replication, replication, fixable=False)
        )
    for key, declared in spec.kafka_configs().items():
        live = configs.get(key)
        if not _same_config(key, declared, live):
            # min.insync.replicas is set for the declared replication: never above what the
            # live replication warrants (on a topic without its replicas yet, a larger value
            # would refuse every acks=all write).
            fixable = key != FIELD_MIN_ISR or int(declared) <= min_insync_replicas(replication)
            diffs.append(
                Difference(
                    spec.name,
                    key,
                    declared,
                    "<unset>" if live is None else live,
                    fixable=fixable,
                )
            )
    return diffs
