"""RepartitionPurger: deletes committed records of the repartition topic, at most every interval,
never twice the same range, and says so when the broker refuses."""

from __future__ import annotations

import logging
from concurrent.futures import Future
from typing import Any, NamedTuple

from stream_app.config import Settings
from stream_app.outputs.purge import RepartitionPurger


class TP(NamedTuple):
    topic: str
    partition: int


class FakeAdmin:
    def __init__(self, conf: dict[str, Any]) -> None:
        self.conf = conf
        self.requests: list[list[tuple[str, int, int]]] = []
        self.futures: list[Future[Any]] = []
        self.fail: Exception | None = None

    def delete_records(self, tps: list[Any], request_timeout: float) -> dict[Any, Future[Any]]:
        self.requests.append([(tp.topic, tp.partition, tp.offset) for tp in tps])
        out = {}
        for tp in tps:
            future: Future[Any] = Future()
            self.futures.append(future)
            out[tp] = future
        return out

    def finish(self) -> None:
        for future in self.futures:
            if not future.done():
                if self.fail is not None:
                    future.set_exception(self.fail)
                else:
                    future.set_result(None)


def make(now: list[float]) -> tuple[RepartitionPurger, list[FakeAdmin]]:
    made: list[FakeAdmin] = []

    def factory(conf: dict[str, Any]) -> FakeAdmin:
        made.append(FakeAdmin(conf))
        return made[0]

    purger = RepartitionPurger(
        Settings(kafka_bootstrap_servers="k:1"), "by", 30.0, factory, clock=lambda: now[0]
    )
    return purger, made


def test_deletes_the_committed_ranges_of_its_topic_every_interval_only():
    now = [0.0]
    purger, made = make(now)
    committed = {TP("by", 0): 120, TP("by", 1): 0, TP("tx", 0): 500}
    assert not purger.after_commit(committed)  # not yet 30 s
    now[0] = 30.0
    assert purger.after_commit(committed)
    admin = made[0]
    assert admin.conf["bootstrap.servers"] == "k:1"
    assert admin.requests == [[("by", 0, 120)]]  # its own topic, something to delete
    now[0] = 45.0
    assert not purger.after_commit({TP("by", 0): 200})  # the interval again
    admin.finish()
    now[0] = 61.0
    assert not purger.after_commit({TP("by", 0): 120})  # deleted already
    assert purger.after_commit({TP("by", 0): 200, TP("by", 1): 7})
    assert admin.requests[-1] == [("by", 0, 200), ("by", 1, 7)]


def test_waits_for_the_previous_request_and_retries_a_failure(caplog):
    now = [0.0]
    purger, made = make(now)
    now[0] = 30.0
    assert purger.after_commit({TP("by", 0): 10})
    now[0] = 61.0
    assert not purger.after_commit({TP("by", 0): 20})  # the first one is still running
    made[0].fail = RuntimeError("TOPIC_AUTHORIZATION_FAILED")
    with caplog.at_level(logging.WARNING, logger="stream_app.outputs"):
        made[0].finish()
    assert purger.failures == 1
    assert "needs Delete on the topic" in caplog.text
    assert purger.after_commit({TP("by", 0): 10})  # not deleted: asked again


def test_confluent_kafka_versions_that_free_what_they_do_not_own_are_not_used():
    from stream_app.outputs.purge import delete_records_safe

    assert not delete_records_safe("2.12.2")  # its second delete_records call segfaults
    assert delete_records_safe("2.16.1") and delete_records_safe("3.0.0")


def test_the_installed_version_is_read_whole() -> None:
    """confluent_kafka.version() is a plain string in the installed release: reading its first
    character as the version ("2") made every worker skip the purge."""
    import re

    import confluent_kafka

    from stream_app.outputs.purge import confluent_version, delete_records_safe

    text = confluent_version()
    assert re.fullmatch(r"\d+\.\d+(\.\d+)?\S*", text), text
    assert text == confluent_kafka.__version__
    assert delete_records_safe() is delete_records_safe(text)


def test_a_commit_skipped_within_the_interval_is_purged_by_the_next_quiet_call():
    """The worker's timer passes every offset committed so far: the last commit before the
    stream went quiet, skipped because it came too soon, is not left behind."""
    now = [0.0]
    purger, made = make(now)
    now[0] = 30.0
    assert purger.after_commit({TP("by", 0): 100, TP("by", 1): 50})
    made[0].finish()
    now[0] = 31.0
    assert not purger.after_commit({TP("by", 1): 80})  # too soon: skipped
    now[0] = 45.0
    assert not purger.after_commit({TP("by", 0): 100, TP("by", 1): 80})  # still within 30 s
    now[0] = 60.0
    all_committed = {TP("by", 0): 100, TP("by", 1): 80}
    assert purger.after_commit(all_committed)
    assert made[0].requests[-1] == [("by", 1, 80)]  # partition 0 was already deleted to 100
