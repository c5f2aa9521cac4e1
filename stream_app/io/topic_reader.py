"""Read whole topics once: every partition from its first offset to the log end seen at start.

Manual assignment and no commits, so no consumer group's offsets ever move. Used by the
evaluation tools (served-score evaluation, topic replay) that need a consistent snapshot.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from stream_app.config import Settings
from stream_app.exceptions import DatasetError, TopicError

OnRecord = Callable[[str, int, int, bytes | None], None]  # topic, partition, offset, value
OnKeyed = Callable[[str, int, bytes | None, bytes | None], None]  # topic, partition, key, value


def partitions_of(consumer: Any, settings: Settings, topic: str) -> list[int]:
    """The partitions of the declared ``topic``, asked through a confluent-kafka ``consumer``.
    Raises :class:`TopicError` when it cannot be listed or does not exist."""
    from confluent_kafka import KafkaException

    name = settings.topic(topic)
    try:
        metadata = consumer.list_topics(name, timeout=10)
    except KafkaException as exc:
        raise TopicError(
            f"cannot list topic {name} at {settings.kafka_bootstrap_servers}: {exc}"
        ) from exc
    described = metadata.topics.get(name)
    if described is None or described.error is not None or not described.partitions:
        raise TopicError(
            f"topic {name} does not exist (declared name {topic!r}, prefix "
            f"{settings.topic_prefix!r}); `stream-app topics list` shows the topics"
        )
    return sorted(described.partitions)


def read_to_end(
    settings: Settings,
    topics: Sequence[str],
    group_id: str,
    on_record: OnRecord | None,
    on_progress: Callable[[int], None] | None = None,
    on_keyed: OnKeyed | None = None,
) -> None:
    """Call ``on_record`` (and ``on_keyed``, which also gets the key) for every record of
    ``topics`` (real names) present at the start."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from stream_app.io.security import check_access, librdkafka_config

    check_access(settings)  # a wrong password or CA fails here, clearly, within seconds
    consumer = Consumer(
        {**librdkafka_config(settings), "group.id": group_id, "enable.auto.commit": False}
    )
    try:
        end: dict[tuple[str, int], int] = {}
        assignment = []
        for name in topics:
            meta = consumer.list_topics(name, timeout=10).topics[name]
            if meta.error is not None:
                raise DatasetError(
                    f"topic {name} is not readable ({meta.error}); check KAFKA_BOOTSTRAP_SERVERS "
                    "and STREAM_APP_TOPIC_PREFIX (the worker's)"
                )
            for partition in sorted(meta.partitions):
                tp = TopicPartition(name, partition, OFFSET_BEGINNING)
                low, high = consumer.get_watermark_offsets(tp, timeout=10)
                if high > low:
                    end[(name, partition)] = high
                    assignment.append(tp)
        consumer.assign(assignment)
        while end:
            batch = consumer.consume(2000, timeout=1.0)
            for msg in batch:
                if msg.error() is not None:
                    continue
                topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
                assert topic is not None and partition is not None and offset is not None
                key = (topic, partition)
                if key not in end or offset >= end[key]:
                    continue
                if offset + 1 >= end[key]:
                    del end[key]
                if on_record is not None:
                    on_record(topic, partition, offset, msg.value())
                if on_keyed is not None:
                    on_keyed(topic, partition, msg.key(), msg.value())
            if on_progress is not None and batch:
                on_progress(len(batch))
    finally:
        consumer.close()
