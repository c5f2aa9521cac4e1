"""The real local Kafka broker: start, serve, idempotent start, stop, kill/recover, two at once."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from stream_app.broker import LocalBroker, free_ports, port_in_use, read_cmdline

pytestmark = pytest.mark.integration


def _own_processes(broker: LocalBroker) -> list[int]:
    """Pids of every live process whose cmdline is this broker's JVM (read-only /proc scan)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and broker.is_own_cmdline(read_cmdline(int(entry.name))):
            pids.append(int(entry.name))
    return pids


def _create_topic(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    futures[topic].result(timeout=30)


def _produce(bootstrap: str, topic: str, key: bytes, value: bytes) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    errors: list[object] = []
    producer.produce(topic, key=key, value=value, on_delivery=lambda err, _msg: errors.append(err))
    assert producer.flush(30) == 0
    assert errors == [None]


def _consume_one(
    bootstrap: str, topic: str, timeout: float = 30.0
) -> tuple[bytes | None, bytes | None]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            return msg.key(), msg.value()
        raise AssertionError(f"no message on {topic} within {timeout} s")
    finally:
        consumer.close()


def _topics(bootstrap: str) -> set[str]:
    return set(AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics)


@pytest.fixture
def brokers() -> Iterator[list[LocalBroker]]:
    """LocalBrokers a test creates; each is stopped (by its pid file) at the end."""
    made: list[LocalBroker] = []
    yield made
    for broker in made:
        broker.stop(timeout=30)


def _new_broker(tmp_path: Path, name: str, made: list[LocalBroker]) -> LocalBroker:
    port, controller_port = free_ports(2)
    broker = LocalBroker(tmp_path / name, port=port, controller_port=controller_port)
    made.append(broker)
    return broker


def test_start_serve_idempotent_stop(tmp_path: Path, brokers: list[LocalBroker]) -> None:
    broker = _new_broker(tmp_path, "a", brokers)
    started = time.monotonic()
    bootstrap = broker.start(timeout=120)
    elapsed = time.monotonic() - started
    print(f"broker started in {elapsed:.1f} s")
    assert bootstrap == f"127.0.0.1:{broker.port}"
    status = broker.status()
    assert status.running
    assert status.pid is not None
    assert status.bootstrap == bootstrap
    assert status.log_path.is_file()
    assert (status.data_dir / "meta.properties").is_file()
    assert broker.pid_path.read_text().strip() == str(status.pid)

    topic = f"lifecycle-{uuid.uuid4().hex[:8]}"
    _create_topic(bootstrap, topic)
    _produce(bootstrap, topic, b"k1", b"hello kafka")
    assert _consume_one(bootstrap, topic) == (b"k1", b"hello kafka")

    # Starting again (also through a second object on the same home) reuses the JVM.
    assert broker.start(timeout=30) == bootstrap
    twin = LocalBroker(broker.home, port=broker.port, controller_port=broker.controller_port)
    assert twin.start(timeout=30) == bootstrap
    assert broker.status().pid == status.pid
    assert _own_processes(broker) == [status.pid]

    assert broker.stop(timeout=30) is True
    after = broker.status()
    assert after.running is False
    assert after.pid is None
    assert not broker.pid_path.exists()
    assert _own_processes(broker) == []
    assert not port_in_use(broker.port)
    assert broker.stop() is False


def test_kill_then_start_keeps_data(tmp_path: Path, brokers: list[LocalBroker]) -> None:
    broker = _new_broker(tmp_path, "k", brokers)
    bootstrap = broker.start(timeout=120)
    topic = f"durable-{uuid.uuid4().hex[:8]}"
    _create_topic(bootstrap, topic)
    _produce(bootstrap, topic, b"k", b"survives SIGKILL")
    first_pid = broker.status().pid

    assert broker.kill() is True
    assert broker.status().running is False
    assert _own_processes(broker) == []

    assert broker.start(timeout=120) == bootstrap
    assert broker.status().pid != first_pid
    assert _consume_one(bootstrap, topic) == (b"k", b"survives SIGKILL")


def test_two_brokers_side_by_side(tmp_path: Path, brokers: list[LocalBroker]) -> None:
    one = _new_broker(tmp_path, "one", brokers)
    two = _new_broker(tmp_path, "two", brokers)
    b1 = one.start(timeout=120)
    b2 = two.start(timeout=120)
    assert b1 != b2
    assert one.status().pid != two.status().pid
    assert one.jars_dir == two.jars_dir  # one shared jar cache

    topic = f"only-on-one-{uuid.uuid4().hex[:8]}"
    _create_topic(b1, topic)
    _produce(b1, topic, b"x", b"y")
    assert topic in _topics(b1)
    assert topic not in _topics(b2)  # separate clusters

    assert two.stop() is True
    assert one.status().running  # stopping one leaves the other alone
    assert _consume_one(b1, topic) == (b"x", b"y")
    assert one.stop() is True


def test_session_fixture(kafka_bootstrap: str, local_broker: LocalBroker | None) -> None:
    assert os.environ["KAFKA_BOOTSTRAP_SERVERS"] == kafka_bootstrap
    from stream_app.config import get_settings

    assert get_settings().kafka_bootstrap_servers == kafka_bootstrap
    if local_broker is not None:
        assert local_broker.status().running
        assert local_broker.bootstrap == kafka_bootstrap
    topic = f"session-{uuid.uuid4().hex[:8]}"
    _create_topic(kafka_bootstrap, topic)
    _produce(kafka_bootstrap, topic, b"s", b"session broker")
    assert _consume_one(kafka_bootstrap, topic) == (b"s", b"session broker")
