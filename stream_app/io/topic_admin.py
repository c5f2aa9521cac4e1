"""The Kafka admin requests that apply topic declarations: list the live topics and brokers,
check a replication factor against the broker count, create topics, describe their configs, and
repair what may be repaired (add partitions, set configs)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    ResourceType,
)

from stream_app.config import Settings
from stream_app.exceptions import TopicError
from stream_app.io.security import admin_client, fetch_metadata
from stream_app.io.topic_differences import Difference
from stream_app.io.topic_specs import FIELD_PARTITIONS, TopicSpec


def make_admin(settings: Settings) -> AdminClient:
    """An AdminClient for ``settings`` (:func:`stream_app.io.security.admin_client`): a wrong
    password or an untrusted certificate fails its first request within about a second."""
    return admin_client(settings)


def _kafka_error(exc: BaseException) -> KafkaError | None:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None


def live_topics(
    settings: Settings, admin: AdminClient, timeout: float = 30
) -> dict[str, tuple[int, int]]:
    """Every topic on the cluster: name -> (partition count, replication factor).

    Raises ``KafkaAccessError`` when the cluster cannot be reached or refuses the credentials.
    """
    return topics_and_brokers(settings, admin, timeout)[0]


def topics_and_brokers(
    settings: Settings, admin: AdminClient, timeout: float
) -> tuple[dict[str, tuple[int, int]], int]:
    """(:func:`live_topics`, how many brokers the metadata lists) from one metadata request."""
    metadata = fetch_metadata(admin, settings, timeout)
    out: dict[str, tuple[int, int]] = {}
    for name, topic in metadata.topics.items():
        if topic.error is not None and topic.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            continue
        replicas = [len(p.replicas) for p in topic.partitions.values()]
        out[name] = (len(topic.partitions), min(replicas) if replicas else 0)
    return out, len(metadata.brokers)


def check_replication(
    settings: Settings,
    specs: Sequence[TopicSpec],
    live: Mapping[str, tuple[int, int]],
    brokers: int,
) -> None:
    """Refuse, with what to do, a replication factor the cluster has too few brokers for.

    A topic is refused when it asks for more replicas than ``brokers`` (the brokers the cluster's
    metadata lists) and does not already have them: a missing one cannot be created, a live one
    with fewer replicas cannot be brought to its declaration. A live topic that has all its
    replicas is fine while a broker is down. Raises ``TopicError``.
    """
    short = [
        s
        for s in specs
        if s.replication > brokers and (s.name not in live or live[s.name][1] < s.replication)
    ]
    if not short:
        return
    wanted = max(s.replication for s in short)
    names = ", ".join(s.name for s in short[:4]) + (
        f" and {len(short) - 4} more" if len(short) > 4 else ""
    )
    raise TopicError(
        f"replication factor {wanted} asked for ({names}), but the cluster at "
        f"{settings.kafka_bootstrap_servers} has {brokers} broker(s): Kafka cannot place "
        f"{wanted} replicas of a partition on {brokers} broker(s). Set "
        f"STREAM_APP_REPLICATION_FACTOR={brokers} or lower (now {settings.replication_factor}; 1 "
        "for the local broker), lower a replication that topics/topics.toml pins, or point "
        "KAFKA_BOOTSTRAP_SERVERS at a cluster with enough brokers. Nothing was created."
    )


def wait_visible(
    settings: Settings, admin: AdminClient, names: Sequence[str], timeout: float
) -> dict[str, tuple[int, int]]:
    """Live topics once all ``names`` show in the metadata (a broker may lag the controller)."""
    deadline = time.monotonic() + timeout
    while True:
        live = live_topics(settings, admin, timeout)
        missing = [n for n in names if n not in live]
        if not missing:
            return live
        if time.monotonic() >= deadline:
            raise TopicError(
                f"topic(s) {', '.join(missing)} exist on the controller but did not appear in "
                f"the metadata within {timeout:g}s; run `stream-app topics apply` again"
            )
        time.sleep(0.2)


def describe_configs(
    admin: AdminClient, names: Sequence[str], timeout: float
) -> dict[str, dict[str, str | None]]:
    """Live topic configs: name -> {config: value}; retries topics the broker does not know yet."""
    out: dict[str, dict[str, str | None]] = {}
    pending = list(names)
    deadline = time.monotonic() + timeout
    while pending:
        resources_ = [ConfigResource(ResourceType.TOPIC, n) for n in pending]
        futures = admin.describe_configs(resources_, request_timeout=timeout)
        retry: list[str] = []
        failures: list[str] = []
        for resource, future in futures.items():
            try:
                entries = future.result(timeout=timeout)
            except KafkaException as exc:
                err = _kafka_error(exc)
                if (
                    err is not None
                    and err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
                    and time.monotonic() < deadline
                ):
                    retry.append(resource.name)
                else:
                    failures.append(f"{resource.name}: {exc}")
                continue
            out[resource.name] = {k: v.value for k, v in entries.items()}
        if failures:
            raise TopicError("cannot describe topic configs:\n  " + "\n  ".join(failures))
        pending = retry
        if pending:
            time.sleep(0.2)
    return out


def create_topics(
    admin: AdminClient, specs: Sequence[TopicSpec], timeout: float
) -> tuple[list[str], list[TopicSpec]]:
    """Create ``specs``; return (created names, specs that someone else created meanwhile)."""
    new_topics = [
        NewTopic(
            s.name,
            num_partitions=s.partitions,
            replication_factor=s.replication,
            config=s.kafka_configs(),
        )
        for s in specs
    ]
    futures = admin.create_topics(new_topics, operation_timeout=timeout, request_timeout=timeout)
    by_name = {s.name: s for s in specs}
    created: list[str] = []
    raced: list[TopicSpec] = []
    failures: list[str] = []
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            err = _kafka_error(exc)
            if err is not None and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                raced.append(by_name[name])
            else:
                failures.append(f"{name}: {exc}")
            continue
        created.append(name)
    if failures:
        raise TopicError(
            "cannot create topic(s) (check replication against the broker count and the "
            "client's ACLs):\n  " + "\n  ".join(failures)
        )
    order = {s.name: i for i, s in enumerate(specs)}
    created.sort(key=order.__getitem__)
    return created, raced


def fix_differences(
    admin: AdminClient, diffs: Sequence[Difference], timeout: float
) -> list[Difference]:
    """Repair fixable differences: add partitions, set configs. Returns what was repaired."""
    fixed: list[Difference] = []
    failures: list[str] = []

    grow = [d for d in diffs if d.fixable and d.field == FIELD_PARTITIONS]
    if grow:
        futures = admin.create_partitions(
            [NewPartitions(d.topic, int(d.declared)) for d in grow],
            operation_timeout=timeout,
            request_timeout=timeout,
        )
        by_topic = {d.topic: d for d in grow}
        for topic, future in futures.items():
            try:
                future.result(timeout=timeout)
            except KafkaException as exc:
                failures.append(f"{topic}: add partitions: {exc}")
                continue
            fixed.append(by_topic[topic])

    config_diffs: dict[str, list[Difference]] = {}
    for d in diffs:
        if d.fixable and d.field != FIELD_PARTITIONS:
            config_diffs.setdefault(d.topic, []).append(d)
    if config_diffs:
        resources_ = [
            ConfigResource(
                ResourceType.TOPIC,
                topic,
                incremental_configs=[
                    ConfigEntry(
                        d.field, str(d.declared), incremental_operation=AlterConfigOpType.SET
                    )
                    for d in topic_diffs
                ],
            )
            for topic, topic_diffs in config_diffs.items()
        ]
        futures_cfg = admin.incremental_alter_configs(resources_, request_timeout=timeout)
        for resource, future in futures_cfg.items():
            try:
                future.result(timeout=timeout)
            except KafkaException as exc:
                failures.append(f"{resource.name}: alter configs: {exc}")
                continue
            fixed.extend(config_diffs[resource.name])

    if failures:
        raise TopicError("cannot fix topic(s):\n  " + "\n  ".join(failures))
    return fixed
