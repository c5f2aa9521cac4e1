"""The ACLs the worker needs on a cluster with an authorizer, derived from the topology."""

from __future__ import annotations

from typing import Any

from stream_app.config import Settings
from stream_app.io.topology import TOPOLOGY, Topology


def worker_acls(
    settings: Settings,
    principal: str,
    *,
    create_topics: bool = True,
    topology: Topology = TOPOLOGY,
) -> list[Any]:
    """The ACLs (``confluent_kafka.admin.AclBinding``) the worker needs as ``principal``, from
    the topology:

    * Group ``app_id`` (the Faust consumer group): Read.
    * Every declared topic a stage of the worker reads (:meth:`Topology.worker_reads`:
      ``transactions``, ``transactions.by-terminal``, ``labels``, the reroute topics and
      ``models.assignment``): Read; every one it writes (the by-terminal repartition topic, the
      reroute topics, ``scores``, ``scores.shadow``, ``drift``, ``transactions.dlq``): Write; the
      purged by-terminal topic: Delete (the worker deletes the records it has committed there).
    * Every declared topic: Describe and DescribeConfigs (the start-up check compares each one
      with its declaration), plus Create with ``create_topics`` (it creates missing ones).
    * Topics prefixed ``<app_id>-``, Faust's own: the table changelogs
      ``<app_id>-customer-state-changelog`` and ``<app_id>-terminal-state-changelog`` (Read,
      Write; recovery reads them back) and the assignor's ``<app_id>-__assignor-__leader``
      (Read); Create there too, since Faust creates them on the first start.

    * With ``processing_guarantee=exactly_once``: TransactionalId Write and Describe on the
      prefix ``STREAM_APP_TRANSACTIONAL_ID`` (or ``<app_id>-``, which the default ids start with):
      each stage's transactional producer is ``<prefix>-customer`` / ``<prefix>-scoring``.

    No cluster-level ACL: idempotent producers need none on Kafka >= 3.0 (Write covers them).
    """
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    allow = AclPermissionType.ALLOW

    def grant(restype: Any, name: str, op: Any, pattern: Any = ResourcePatternType.LITERAL) -> Any:
        return AclBinding(restype, name, pattern, principal, "*", op, allow)

    def topics(names: tuple[str, ...], op: Any) -> list[Any]:
        return [grant(ResourceType.TOPIC, settings.topic(n), op) for n in names]

    acls = [grant(ResourceType.GROUP, settings.app_id, AclOperation.READ)]
    acls += topics(topology.worker_reads(), AclOperation.READ)
    acls += topics(topology.worker_writes(), AclOperation.WRITE)
    acls += topics(topology.worker_deletes(), AclOperation.DELETE)
    checks = [AclOperation.DESCRIBE, AclOperation.DESCRIBE_CONFIGS]
    checks += [AclOperation.CREATE] if create_topics else []
    for topic in topology.declared():
        acls += [grant(ResourceType.TOPIC, settings.topic(topic.name), op) for op in checks]
    internal = f"{settings.app_id}-"
    acls += [
        grant(ResourceType.TOPIC, internal, op, ResourcePatternType.PREFIXED)
        for op in (AclOperation.READ, AclOperation.WRITE, AclOperation.CREATE)
    ]
    if settings.processing_guarantee == "exactly_once":
        prefix = settings.transactional_id or internal
        acls += [
            grant(ResourceType.TRANSACTIONAL_ID, prefix, op, ResourcePatternType.PREFIXED)
            for op in (AclOperation.WRITE, AclOperation.DESCRIBE)
        ]
    return acls
