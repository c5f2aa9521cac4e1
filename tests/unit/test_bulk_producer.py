"""The bulk producer's client settings: batched in bulk, order-keeping at a rate."""

from __future__ import annotations

from typing import Any

from stream_app.config import Settings
from stream_app.sources.producer import BulkProducer, TokenBucket


def made_with(**kwargs: Any) -> dict[str, Any]:
    made: list[dict[str, Any]] = []
    BulkProducer(Settings(), producer_factory=lambda conf: made.append(conf), **kwargs)
    return made[0]


def test_bulk_publishing_batches_and_paced_publishing_keeps_the_order_across_topics():
    bulk = made_with()
    assert (bulk["linger.ms"], bulk["batch.size"]) == (20, 1024 * 1024)
    assert "max.in.flight.requests.per.connection" not in bulk
    paced = made_with(rate=2000)
    assert (paced["linger.ms"], paced["max.in.flight.requests.per.connection"]) == (0, 1)
    assert paced["enable.idempotence"] is True and paced["acks"] == "all"
    # the caller's settings still win
    assert made_with(rate=2000, config={"linger.ms": 5})["linger.ms"] == 5


def test_the_token_bucket_waits_exactly_for_the_missing_tokens():
    now = [0.0]
    bucket = TokenBucket(10.0, burst=2.0, clock=lambda: now[0])
    assert [bucket.reserve(), bucket.reserve()] == [0.0, 0.0]
    assert bucket.reserve() == 0.1  # one token short at 10/s
    now[0] = 0.5  # 5 tokens later: -1 + 5 = 4, capped at the burst of 2
    assert [bucket.reserve(), bucket.reserve(), bucket.reserve()] == [0.0, 0.0, 0.1]


class Recording:
    """A stand-in for confluent-kafka's Producer that records what it is asked, in order."""

    def __init__(self, conf: dict[str, Any]) -> None:
        self.calls: list[tuple[str, str]] = []

    def list_topics(self, topic: str, timeout: float) -> None:
        self.calls.append(("metadata", topic))

    def produce(self, topic: str, **kwargs: Any) -> None:
        self.calls.append(("produce", topic))

    def poll(self, timeout: float) -> int:
        return 0


def test_paced_publishing_learns_each_topics_partitions_before_its_first_record():
    made: list[Recording] = []

    def factory(conf: dict[str, Any]) -> Recording:
        made.append(Recording(conf))
        return made[-1]

    paced = BulkProducer(Settings(), rate=1e6, producer_factory=factory)
    for topic in ("tx", "tx", "labels", "tx", "labels"):
        paced.produce(topic, b"k", b"v")
    assert made[0].calls == [
        ("metadata", "tx"),
        ("produce", "tx"),
        ("produce", "tx"),
        ("metadata", "labels"),
        ("produce", "labels"),
        ("produce", "tx"),
        ("produce", "labels"),
    ]
    bulk = BulkProducer(Settings(), producer_factory=factory)
    bulk.produce("tx", b"k", b"v")
    assert made[1].calls == [("produce", "tx")]
