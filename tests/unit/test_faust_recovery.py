"""The recovery-order workaround (stream_app/faust_ext/recovery.py): seek, then resume.

Runs Faust's real Recovery code paths on an app that is never started, with a consumer that
records what is done to it, in order.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust
import pytest
from faust.tables.recovery import RebalanceAgain, Recovery
from faust.types import TP

from stream_app.faust_ext import recovery as faust_recovery
from stream_app.faust_ext.recovery import (
    SeekFirstRecovery,
    SeekFirstTableManager,
    changed_methods,
    describe_offsets,
    faust_problems,
    stream_partitions,
)

STREAMS = {TP("in", 0), TP("in", 1), TP("other", 0)}
CHANGELOG = TP("app-t-changelog", 0)


class RecordingConsumer:
    """What Recovery calls on Faust's consumer, recorded in order."""

    def __init__(self, recovery: Recovery | None = None, rebalance_during_seek: bool = False):
        self.calls: list[tuple[Any, ...]] = []
        self.recovery = recovery
        self.rebalance_during_seek = rebalance_during_seek
        self._committed_offset: dict[TP, int | None] = {}

    def assignment(self) -> set[TP]:
        return {*STREAMS, CHANGELOG}

    async def perform_seek(self) -> None:
        self.calls.append(("seek",))
        if self.rebalance_during_seek:
            assert self.recovery is not None
            self.recovery.signal_recovery_start.set()
            await asyncio.sleep(10)
        self._committed_offset = {TP("in", 0): 17, TP("in", 1): None}

    def resume_partitions(self, tps: Any) -> None:
        self.calls.append(("resume", frozenset(tps)))

    def resume_flow(self) -> None:
        self.calls.append(("resume_flow",))


class Fetcher:
    def __init__(self, calls: list[tuple[Any, ...]]) -> None:
        self.calls = calls

    async def maybe_start(self) -> None:
        self.calls.append(("fetcher",))


def make_app(recovery_class: type[Recovery]) -> tuple[faust.App, Recovery, RecordingConsumer]:
    app = faust.App(
        "app",
        broker="kafka://127.0.0.1:1",
        store="memory://",
        autodiscover=False,
        web_enabled=False,
        TableManager="stream_app.faust_ext.recovery:SeekFirstTableManager",
    )
    app.Table("t", default=None, partitions=1)
    recovery = recovery_class(app, app.tables)
    consumer = RecordingConsumer(recovery)
    app.consumer = consumer  # type: ignore[assignment]
    app.__dict__["_fetcher"] = Fetcher(consumer.calls)
    return app, recovery, consumer


def order(calls: list[tuple[Any, ...]]) -> list[str]:
    return [c[0] for c in calls]


@pytest.mark.parametrize("method", ["on_recovery_completed", "_resume_streams"])
def test_seeks_before_it_resumes_the_stream_partitions(method: str) -> None:
    _, recovery, consumer = make_app(SeekFirstRecovery)
    asyncio.run(getattr(recovery, method)(0))
    assert order(consumer.calls) == ["seek", "resume", "resume_flow", "fetcher"]
    assert consumer.calls[1][1] == STREAMS  # never the changelog partition
    assert recovery.completed.is_set()


@pytest.mark.parametrize("method", ["on_recovery_completed", "_resume_streams"])
def test_installed_faust_still_resumes_before_it_seeks(method: str) -> None:
    """The bug the workaround exists for. When this fails, Faust seeks first again: check the
    new order and drop stream_app/faust_ext/recovery.py (and the TableManager setting in app.py)."""
    _, recovery, consumer = make_app(Recovery)
    asyncio.run(getattr(recovery, method)(0))
    assert order(consumer.calls).index("resume") < order(consumer.calls).index("seek")


def test_a_rebalance_during_the_seek_resumes_nothing() -> None:
    app, recovery, _ = make_app(SeekFirstRecovery)
    consumer = RecordingConsumer(recovery, rebalance_during_seek=True)
    app.consumer = consumer  # type: ignore[assignment]
    with pytest.raises(RebalanceAgain):  # _restart_recovery starts over on it
        asyncio.run(recovery.on_recovery_completed(0))
    assert order(consumer.calls) == ["seek"]
    assert not recovery.completed.is_set()


def test_a_stale_generation_neither_seeks_nor_resumes() -> None:
    app, recovery, consumer = make_app(SeekFirstRecovery)
    app.consumer_generation_id = 3
    asyncio.run(recovery.on_recovery_completed(2))
    assert consumer.calls == []


def test_the_app_setting_builds_the_seek_first_recovery() -> None:
    app, _, _ = make_app(SeekFirstRecovery)
    assert isinstance(app.tables, SeekFirstTableManager)
    assert type(app.tables.recovery) is SeekFirstRecovery  # type: ignore[attr-defined]


def test_refuses_a_faust_without_what_it_relies_on(monkeypatch: pytest.MonkeyPatch) -> None:
    assert faust_problems() == []

    class Bare:
        pass

    problems = faust_problems(recovery=Bare, consumer=Bare, manager=Bare)
    assert "faust.tables.recovery.Recovery.on_recovery_completed" in problems
    assert "faust.transport.consumer.Consumer.perform_seek" in problems
    assert "faust.tables.manager.TableManager._recovery" in problems

    monkeypatch.setattr(faust_recovery, "faust_problems", lambda: ["X.y"])
    app, _, _ = make_app(SeekFirstRecovery)
    with pytest.raises(RuntimeError, match=r"lacks what the recovery-order workaround .*X\.y"):
        _ = app.tables.recovery  # type: ignore[attr-defined]


def test_warns_when_faust_changed_what_it_overrides(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    assert changed_methods() == []  # the installed Faust is the one the override was made from

    class Changed(Recovery):
        async def _resume_streams(self, generation_id: int = 0) -> None:
            """Seeks first now, say."""

    assert changed_methods(Changed) == ["_resume_streams"]
    monkeypatch.setattr(faust_recovery, "changed_methods", lambda: ["_resume_streams"])
    app, _, _ = make_app(SeekFirstRecovery)
    with caplog.at_level(logging.WARNING, logger="stream_app.faust_ext.recovery"):
        assert type(app.tables.recovery) is SeekFirstRecovery  # type: ignore[attr-defined]
    assert "Recovery._resume_streams differ(s) from the 0.15.3 source" in caplog.text


def test_stream_partitions_and_offsets_line() -> None:
    assignment = {*STREAMS, CHANGELOG}
    assert stream_partitions(assignment, {CHANGELOG.topic}) == STREAMS
    committed = {TP("in", 0): 17, TP("in", 1): None}
    assert describe_offsets(committed, STREAMS) == "in [0]=17 [1]=none; other none"
