"""A worker whose broker stops answering says so and exits, instead of looking healthy.

The broker is frozen with SIGSTOP while the worker has a backlog to score: its outputs get no
delivery report and its stages no records, so within STREAM_APP_STALL_TIMEOUT_S (+ the 5 s check)
``/readyz`` answers 503 with what is stalled, ``stream_app_stalled`` says which part, and after
STREAM_APP_STALL_EXIT_S the process exits with 75 (``EX_TEMPFAIL``) for its supervisor to restart
it. The broker is then resumed and the worker restarted: every transaction is scored (at least
once; the exit committed nothing the worker had not delivered).

A broker of the test's own (stopped by its pid), so that freezing it stops no other test."""

from __future__ import annotations

import json
import os
import re
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from stream_app.broker import LocalBroker, free_ports
from stream_app.config import Settings
from stream_app.devtools.worker_process import WorkerProcess
from stream_app.monitoring.liveness import EXIT_STALLED
from stream_app.sources.producer import BulkProducer
from stream_app.sources.schedule import schedule
from stream_app.sources.simulator import simulate
from tests.faults.harness import TopicWatch
from tests.kafka_reader import processed_by, read_topic

pytestmark = pytest.mark.integration

N_EVENTS = 20_000
STALL_S = 3
EXIT_S = 15
STALLED = re.compile(r'^stream_app_stalled\{what="([^"]+)"\} (\S+)$')


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    port, controller_port = free_ports(2)
    broker = LocalBroker(
        tmp_path_factory.mktemp("frozen-broker"),
        port=port,
        controller_port=controller_port,
        heap_mb=256,
    )
    try:
        broker.start(timeout=120)
        yield broker
    finally:
        pid = broker_pid(broker)
        if pid is not None:
            os.kill(pid, signal.SIGCONT)  # a frozen JVM would not stop
        broker.stop()


def broker_pid(broker: LocalBroker) -> int | None:
    try:
        return int(broker.pid_path.read_text().strip())
    except (OSError, ValueError):
        return None


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def stalled_metric(port: int) -> dict[str, float]:
    _, text = get(port, "/metrics")
    return {m.group(1): float(m.group(2)) for m in map(STALLED.match, text.splitlines()) if m}


def test_a_frozen_broker_makes_readyz_503_then_exit_75_and_a_restart_loses_nothing(
    own_broker: LocalBroker, models_dir: Path, champion_version: str, tmp_path: Path
) -> None:
    bootstrap = own_broker.bootstrap
    tag = os.urandom(4).hex()
    settings = Settings(
        kafka_bootstrap_servers=bootstrap,
        topic_prefix=f"live-{tag}.",
        app_id=f"live-{tag}",
        partitions=3,
    )
    port = free_ports(1)[0]
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "STREAM_APP_TOPIC_PREFIX": settings.topic_prefix,
        "STREAM_APP_APP_ID": settings.app_id,
        "STREAM_APP_PARTITIONS": "3",
        "STREAM_APP_MODELS_DIR": str(models_dir),
        "STREAM_APP_CHAMPION": champion_version,
        "STREAM_APP_STATE_DIR": str(tmp_path / "state"),
        "STREAM_APP_WEB_PORT": str(port),
        "STREAM_APP_STALL_TIMEOUT_S": str(STALL_S),
        "STREAM_APP_STALL_EXIT_S": str(EXIT_S),
    }
    worker = WorkerProcess(tmp_path / "worker", env)
    worker.start()
    pid = broker_pid(own_broker)
    assert pid is not None
    watch = TopicWatch(bootstrap)
    frozen = False
    try:
        worker.wait_ready()
        assert get(port, "/readyz")[0] == 200
        items = list(
            simulate(
                n_customers=500,
                n_terminals=800,
                n_events=N_EVENTS,
                seed=5,
                start=datetime(2026, 6, 1, tzinfo=UTC),
            )
        )
        with BulkProducer(settings) as producer:
            for record in schedule(items, labels=False):
                producer.produce(settings.topic(record.topic), record.key, record.value)
        deadline = time.monotonic() + 120
        while (watch.count(settings.topic("scores")) or 0) < 1_000:
            assert time.monotonic() < deadline, worker.tail(20)
            time.sleep(0.05)

        os.kill(pid, signal.SIGSTOP)
        frozen = True
        frozen_at = time.monotonic()
        status, body = get(port, "/readyz")
        while status != 503 and time.monotonic() - frozen_at < STALL_S + 20:
            time.sleep(0.5)
            status, body = get(port, "/readyz")
        not_ready_after = time.monotonic() - frozen_at
        assert status == 503, body
        ready = json.loads(body)
        assert "progress" in ready["failing"], ready
        # The metric and the log follow at the next 5-s liveness check.
        critical = {"customer stage", "scoring stage", "outputs", "checkpoints"}
        stalled: set[str] = set()
        while not stalled & critical and time.monotonic() - frozen_at < STALL_S + 20:
            stalled = {what for what, value in stalled_metric(port).items() if value == 1.0}
            time.sleep(0.5)
        assert stalled & critical, stalled

        assert worker.proc is not None
        code = worker.proc.wait(timeout=EXIT_S + 30)
        exited_after = time.monotonic() - frozen_at
        assert code == EXIT_STALLED, worker.tail(30)
        log = worker.log_text()
        assert "stalled: " in log
        assert f"exiting with code {EXIT_STALLED}" in log

        os.kill(pid, signal.SIGCONT)
        frozen = False
        worker.start()
        worker.wait_ready(timeout=120)
        # Read once the worker has committed all its input: counting records would stop at the
        # first N_EVENTS, duplicates of the first life's uncommitted work included.
        scores = read_topic(
            bootstrap, settings.topic("scores"), N_EVENTS, timeout=180, **processed_by(settings)
        )
    finally:
        if frozen:
            os.kill(pid, signal.SIGCONT)
        worker.stop()
        watch.close()
    scored = {orjson.loads(m.value())["event_id"] for m in scores}
    print(
        f"\nbroker frozen: /readyz 503 after {not_ready_after:.1f} s ({ready['checks']}), "
        f"stalled {sorted(stalled)}, exit {code} after {exited_after:.1f} s; after the restart "
        f"{len(scored):,} of {N_EVENTS:,} transactions scored ({len(scores) - len(scored):,} "
        "scored twice)"
    )
    assert scored == {i.event["event_id"] for i in items}
    assert not_ready_after <= STALL_S + 5 + 3  # the timeout, the 5 s check, slack
    assert exited_after <= EXIT_S + 5 + 5
