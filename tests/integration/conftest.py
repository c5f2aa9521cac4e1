"""Integration fixtures: a trained model, and a worker child per test with its own topics."""

import os
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from stream_app.config import Settings
from stream_app.devtools.worker_process import WorkerProcess
from stream_app.sources.schedule import batch_from_events
from stream_app.sources.simulator import simulate
from stream_app.training import train


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def trained_models(tmp_path_factory) -> tuple[Path, str, str]:
    """A registry with a logistic champion and a gradient-boosting challenger, trained by the
    project's trainer on generator data: (root, champion version, challenger version)."""
    root = tmp_path_factory.mktemp("models")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    batch = batch_from_events(
        simulate(n_customers=300, n_terminals=500, days=58, seed=3, start=start)
    )
    versions = [
        train(
            batch,
            model_type=model_type,
            train_start=datetime(2026, 2, 7, tzinfo=UTC),
            models_dir=root,
            data_tag="integration",
            seed=3,
        ).version
        for model_type in ("logreg", "hgb")
    ]
    return root, versions[0], versions[1]


@pytest.fixture(scope="session")
def models_dir(trained_models) -> Path:
    return trained_models[0]


@pytest.fixture(scope="session")
def champion_version(trained_models) -> str:
    return trained_models[1]


@pytest.fixture(scope="session")
def challenger_version(trained_models) -> str:
    return trained_models[2]


def isolated_env(
    bootstrap: str, models_dir: Path, champion: str, home: Path, prefix: str = "it"
) -> dict[str, str]:
    """Environment of a worker isolated by topic prefix and app id, its state under ``home``."""
    tag = uuid.uuid4().hex[:8]
    return {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "STREAM_APP_TOPIC_PREFIX": f"{prefix}-{tag}.",
        "STREAM_APP_APP_ID": f"{prefix}-{tag}",
        "STREAM_APP_MODELS_DIR": str(models_dir),
        "STREAM_APP_CHAMPION": champion,
        "STREAM_APP_STATE_DIR": str(home / "state"),
        "STREAM_APP_WEB_PORT": str(free_port()),
        "STREAM_APP_PARTITIONS": "3",
    }


@pytest.fixture
def app_env(kafka_bootstrap, models_dir, champion_version, tmp_path) -> dict[str, str]:
    """Environment of a worker isolated by topic prefix and app id."""
    return isolated_env(kafka_bootstrap, models_dir, champion_version, tmp_path)


@pytest.fixture
def app_settings(app_env) -> Settings:
    return Settings(
        kafka_bootstrap_servers=app_env["KAFKA_BOOTSTRAP_SERVERS"],
        topic_prefix=app_env["STREAM_APP_TOPIC_PREFIX"],
        app_id=app_env["STREAM_APP_APP_ID"],
        partitions=3,
    )


@pytest.fixture
def worker(app_env, tmp_path):
    """A started, ready worker child; stopped (by pid) after the test."""
    proc = WorkerProcess(tmp_path / "worker", app_env)
    proc.start()
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


def models_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``stream-app models ARGS`` in a child with ``env`` over this process's environment."""
    return subprocess.run(
        [sys.executable, "-m", "stream_app", "models", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def wait_for_log(worker: WorkerProcess, text: str, timeout: float = 60.0) -> None:
    """Until ``text`` is in the worker's log (fails with the log's tail after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while text not in worker.log_text():
        assert time.monotonic() < deadline, f"no {text!r} in the worker log:\n{worker.tail()}"
        time.sleep(0.2)
