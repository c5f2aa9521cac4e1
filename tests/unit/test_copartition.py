"""The co-partitioned topics' partition counts: which disagree, and what the worker says."""

from stream_app.config import Settings
from stream_app.io.copartition import (
    copartitioned_topics,
    mismatch_message,
    partition_mismatches,
)
from stream_app.io.topics import copartitioned

SETTINGS = Settings(topic_prefix="p.", app_id="fraud", partitions=6)


def test_every_copartitioned_topic_is_named_as_on_the_cluster():
    assert copartitioned_topics(SETTINGS) == [
        "p.transactions",
        "p.transactions.rerouted",
        "p.transactions.by-terminal",
        "p.labels",
        "p.labels.rerouted",
        "fraud-customer-state-changelog",
        "fraud-terminal-state-changelog",
    ]


def test_mismatches_ignore_missing_and_unrelated_topics():
    counts = {name: 6 for name in copartitioned_topics(SETTINGS)}
    assert partition_mismatches(SETTINGS, counts) == {}
    counts |= {"p.transactions": 12, "p.scores": 1, "p.drift": 3}
    del counts["p.labels.rerouted"]
    assert partition_mismatches(SETTINGS, counts) == {"p.transactions": 12}


def test_the_message_gives_the_counts_and_the_command():
    message = mismatch_message(SETTINGS, {"p.transactions": 12, "p.labels": 8})
    assert "p.labels has 8, p.transactions has 12" in message
    assert "kept in 6 (STREAM_APP_PARTITIONS)" in message
    assert "`stream-app topics grow --partitions 12`" in message
    assert message.endswith("STREAM_APP_PARTITIONS=12.")


def test_topics_apply_never_grows_a_copartitioned_topic_alone():
    from stream_app.io.topics import FIELD_PARTITIONS, Difference

    assert copartitioned("p.transactions") and copartitioned("fraud-customer-state-changelog")
    assert copartitioned("p.labels.rerouted") and not copartitioned("p.scores")
    diff = Difference("p.transactions", FIELD_PARTITIONS, 12, 6, fixable=False)
    assert "`stream-app topics grow --partitions 12`" in diff.hint
