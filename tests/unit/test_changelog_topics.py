"""The tables' changelog topics, created by the worker before Faust starts (ensure_changelogs)."""

from __future__ import annotations

import logging
from concurrent.futures import Future
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from stream_app.app import create_app
from stream_app.config import Settings
from stream_app.exceptions import TopicError
from stream_app.faust_ext.recovery import SeekFirstRecovery
from stream_app.io.topics import changelog_specs, ensure_changelogs
from stream_app.scoring.model import ScoringModel


def settings(**kwargs: Any) -> Settings:
    return Settings(**{"app_id": "fraud", "topic_prefix": "", "partitions": 6, **kwargs})


class Admin:
    """Lists ``topics`` (name -> partitions); created topics appear on the list after one look
    (the broker's metadata follows the controller a moment later)."""

    def __init__(self, topics: dict[str, int] | None = None) -> None:
        self.topics = dict(topics or {})
        self.pending: dict[str, int] = {}
        self.created: list[Any] = []

    def list_topics(self, timeout: float) -> SimpleNamespace:
        listed = {
            name: SimpleNamespace(
                error=None, partitions={i: SimpleNamespace(replicas=[1]) for i in range(n)}
            )
            for name, n in self.topics.items()
        }
        self.topics.update(self.pending)
        self.pending = {}
        return SimpleNamespace(topics=listed, brokers={1: SimpleNamespace(id=1)})

    def create_topics(self, new_topics: list[Any], **kwargs: Any) -> dict[str, Future]:
        out: dict[str, Future] = {}
        for topic in new_topics:
            self.created.append(topic)
            self.pending[topic.topic] = topic.num_partitions
            out[topic.topic] = Future()
            out[topic.topic].set_result(None)
        return out


def test_changelogs_are_named_as_faust_names_them_compacted_with_the_tables_partitions() -> None:
    specs = changelog_specs(settings())
    assert [s.name for s in specs] == [
        "fraud-customer-state-changelog",
        "fraud-terminal-state-changelog",
    ]
    assert {(s.partitions, s.replication, s.cleanup_policy) for s in specs} == {(6, 1, "compact")}


def test_missing_changelogs_are_created_and_visible_before_it_returns() -> None:
    admin = Admin({"fraud-customer-state-changelog": 6})
    created = ensure_changelogs(settings(), admin=admin, timeout=5)  # type: ignore[arg-type]
    assert created == ["fraud-terminal-state-changelog"]
    (topic,) = admin.created
    assert (topic.num_partitions, topic.replication_factor) == (6, 1)
    assert topic.config == {
        "retention.ms": "-1",
        "cleanup.policy": "compact",
        "message.timestamp.type": "CreateTime",
        "min.insync.replicas": "1",
    }
    assert "fraud-terminal-state-changelog" in admin.topics

    again = Admin(admin.topics)
    assert ensure_changelogs(settings(), admin=again, timeout=5) == []  # type: ignore[arg-type]
    assert again.created == []


def test_a_replication_factor_above_the_broker_count_is_refused() -> None:
    admin = Admin()
    with pytest.raises(TopicError, match=r"replication factor 2 asked for \(fraud-customer"):
        ensure_changelogs(settings(replication_factor=2), admin=admin, timeout=5)  # type: ignore[arg-type]
    assert admin.created == []


def test_a_changelog_with_other_partitions_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    admin = Admin({"fraud-customer-state-changelog": 3, "fraud-terminal-state-changelog": 6})
    with caplog.at_level(logging.ERROR, logger="stream_app.io.topics"):
        assert ensure_changelogs(settings(), admin=admin, timeout=5) == []  # type: ignore[arg-type]
    assert "fraud-customer-state-changelog has 3 partitions, its table 6" in caplog.text


def test_the_app_has_exactly_these_tables(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The declared changelogs are the app's tables' (names, partitions), and the app recovers
    them with the seek-first workaround."""
    # No librdkafka producer for an app that never starts (it would dial the broker).
    monkeypatch.setattr("stream_app.app.OutputPublisher", lambda *a, **kw: SimpleNamespace())
    conf = settings(state_dir=tmp_path / "state", web_enabled=False, store="memory")
    app = create_app(conf, ScoringModel.load(model_dir))
    tables = app.tables.values()
    assert {(t.changelog_topic.get_topic_name(), t.partitions) for t in tables} == {
        (s.name, s.partitions) for s in changelog_specs(conf)
    }
    assert type(app.tables.recovery) is SeekFirstRecovery  # type: ignore[attr-defined]


def test_the_app_replicates_its_internal_topics_as_configured(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Faust creates the leader topic (and would create a missing changelog) with the app's
    topic_replication_factor: the setting, as for every other topic."""
    monkeypatch.setattr("stream_app.app.OutputPublisher", lambda *a, **kw: SimpleNamespace())
    conf = settings(
        state_dir=tmp_path / "state", web_enabled=False, store="memory", replication_factor=3
    )
    app = create_app(conf, ScoringModel.load(model_dir))
    assert app.conf.topic_replication_factor == 3
