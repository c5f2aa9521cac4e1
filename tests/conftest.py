"""Shared pytest fixtures: a real Kafka broker for the whole test session.

By default the session starts a :class:`~stream_app.broker.LocalBroker` (a real Apache Kafka
JVM, single KRaft node) on free ports in a temporary directory, and stops it at the end. Java 17+
is required; Maven is needed once to fetch the jars (cached in ~/.cache/stream_app). If the broker
cannot start, tests that need it FAIL -- they are never skipped.

``STREAM_APP_TEST_BROKER=testcontainers`` uses ``testcontainers``' KafkaContainer (KRaft) instead;
it needs a Docker engine and fails clearly when none answers.

``KAFKA_BOOTSTRAP_SERVERS`` is set in ``os.environ`` for the session, so subprocesses (worker,
CLI) reach the same broker. Fault tests that stop or kill the broker through ``local_broker``
must start it again (``local_broker.start()``, same port and data) before they finish.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from stream_app.broker import LocalBroker, free_ports
from stream_app.exceptions import BrokerError

BROKER_MODE_ENV = "STREAM_APP_TEST_BROKER"

LONGEST_FIRST = (
    "integration/test_feature_parity.py",  # ~9 min: 45 days of the handbook through the worker
    "faults/test_worker_kill.py",  # ~5 min
    "faults/test_exactly_once.py",
    "integration/test_model_quality.py",
    "faults/test_broker_restart.py",
    "faults/test_rebalance.py",
    "faults/test_state_wipe.py",
)
"""Test files that run first, longest first: ``make test`` spreads whole files over two
processes (pytest-xdist ``--dist loadfile --no-loadscope-reorder``) in collection order, so the
longest file must start at once, not last. The order does not matter to a single process."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Move the files of :data:`LONGEST_FIRST` to the front, in that order (stable otherwise)."""
    tests_dir = os.path.dirname(__file__)
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}

    def key(item: pytest.Item) -> int:
        relative = os.path.relpath(str(item.path), tests_dir).replace(os.sep, "/")
        return rank.get(relative, len(rank))

    items.sort(key=key)


BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP_SERVERS"


@dataclass(frozen=True)
class _KafkaSession:
    bootstrap: str
    broker: LocalBroker | None


def _set_bootstrap_env(bootstrap: str) -> str | None:
    previous = os.environ.get(BOOTSTRAP_ENV)
    os.environ[BOOTSTRAP_ENV] = bootstrap
    _clear_settings_cache()
    return previous


def _restore_bootstrap_env(previous: str | None) -> None:
    if previous is None:
        os.environ.pop(BOOTSTRAP_ENV, None)
    else:
        os.environ[BOOTSTRAP_ENV] = previous
    _clear_settings_cache()


def _clear_settings_cache() -> None:
    from stream_app.config import get_settings

    get_settings.cache_clear()


def _docker_problem() -> str | None:
    """None when a Docker engine answers a ping, else why not."""
    try:
        import docker
    except ImportError as exc:
        return f"the docker package is not installed ({exc})"
    try:
        client = docker.from_env(timeout=5)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _testcontainers_session() -> Iterator[_KafkaSession]:
    problem = _docker_problem()
    if problem is not None:
        pytest.fail(
            f"{BROKER_MODE_ENV}=testcontainers, but no Docker engine answers ({problem}). "
            f"Start Docker, or unset {BROKER_MODE_ENV} to use the local broker (needs Java 17+).",
            pytrace=False,
        )
    try:
        from testcontainers.community.kafka import KafkaContainer
    except ImportError:  # older testcontainers
        from testcontainers.kafka import KafkaContainer

    with KafkaContainer().with_kraft() as container:
        bootstrap = container.get_bootstrap_server()
        previous = _set_bootstrap_env(bootstrap)
        try:
            yield _KafkaSession(bootstrap=bootstrap, broker=None)
        finally:
            _restore_bootstrap_env(previous)


def _local_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_KafkaSession]:
    home = tmp_path_factory.mktemp("kafka-broker")
    port, controller_port = free_ports(2)
    broker = LocalBroker(home, port=port, controller_port=controller_port)
    try:
        bootstrap = broker.start(timeout=120)
    except BrokerError as exc:
        broker.stop()
        pytest.fail(
            f"the local Kafka broker for the test session did not start:\n{exc}", pytrace=False
        )
    previous = _set_bootstrap_env(bootstrap)
    try:
        yield _KafkaSession(bootstrap=bootstrap, broker=broker)
    finally:
        _restore_bootstrap_env(previous)
        broker.stop()


@pytest.fixture(scope="session")
def _kafka_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_KafkaSession]:
    mode = os.environ.get(BROKER_MODE_ENV, "local").strip().lower() or "local"
    if mode == "testcontainers":
        yield from _testcontainers_session()
    elif mode == "local":
        yield from _local_session(tmp_path_factory)
    else:
        pytest.fail(
            f"{BROKER_MODE_ENV}={mode!r}: expected 'local' (default) or 'testcontainers'",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def kafka_bootstrap(_kafka_session: _KafkaSession) -> str:
    """Bootstrap address (``host:port``) of the session's real Kafka broker."""
    return _kafka_session.bootstrap


@pytest.fixture(scope="session")
def local_broker(_kafka_session: _KafkaSession) -> LocalBroker | None:
    """The session's LocalBroker (to stop/kill it in fault tests); None with testcontainers."""
    return _kafka_session.broker
