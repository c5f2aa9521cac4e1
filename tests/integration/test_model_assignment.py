"""One model assignment for the whole group, on the real broker (issue 19, item 3).

Two workers of one group run in different working directories with different models
directories: A's holds a copy of the registry, B's starts empty and fetches every version over
HTTP from the registry the promoting machine serves. `stream-app models promote` publishes once to
the control topic ``models.assignment``; both workers swap (their envelopes and /readyz name the
new version) within the watch interval. Then a tampered copy in A's directory is refused there on
`models rollback` (A keeps serving the previous version and says so in /readyz, its log and
/metrics) while B takes the version; once the bad copy is deleted, A fetches it again and is back
in step."""

import functools
import hashlib
import http.server
import re
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from datetime import UTC, datetime

import orjson
import pytest

from stream_app.devtools.worker_process import WorkerProcess
from stream_app.sources.producer import BulkProducer
from stream_app.sources.schedule import schedule
from stream_app.sources.simulator import simulate
from tests.integration.conftest import free_port, models_cli
from tests.kafka_reader import read_topic

pytestmark = pytest.mark.integration

PHASE = 300  # transactions per phase
WATCH_INTERVAL_S = 2.0
RETRY_S = 3.0
TAMPERED = b"tampered"


def get_json(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return orjson.loads(response.read())
    except urllib.error.HTTPError as exc:  # 503 while not ready: the body still says why
        return orjson.loads(exc.read())


def metrics_text(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def models_check(port):
    return get_json(port, "/readyz")["checks"]["models"]


def wait_until(what, predicate, timeout=90.0, step=0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(step)


def scored(port):
    """``stream_app_events_scored_total`` of one worker, by model version."""
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(
            r'^stream_app_events_scored_total\{model_version="([^"]+)"\} (\S+)$',
            metrics_text(port),
            flags=re.MULTILINE,
        )
    }


def scored_since(before, after):
    return {v: n - before.get(v, 0.0) for v, n in after.items() if n - before.get(v, 0.0)}


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_registry(tmp_path, models_dir, champion_version, challenger_version):
    """The publishing machine's registry, served over HTTP (the standard library's server)."""
    registry = tmp_path / "registry"
    for version in (champion_version, challenger_version):
        shutil.copytree(models_dir / version, registry / version)
    handler = functools.partial(QuietHandler, directory=str(registry))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield registry, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_one_assignment_for_workers_in_two_directories(
    app_env,
    app_settings,
    kafka_bootstrap,
    http_registry,
    champion_version,
    challenger_version,
    tmp_path,
):
    registry, base = http_registry
    env = {k: v for k, v in app_env.items() if k != "STREAM_APP_CHAMPION"}
    env |= {
        "STREAM_APP_MODEL_WATCH_INTERVAL_S": str(WATCH_INTERVAL_S),
        "STREAM_APP_MODEL_RETRY_S": str(RETRY_S),
    }
    publisher = env | {"STREAM_APP_MODELS_DIR": str(registry), "STREAM_APP_MODELS_URI": base}
    topic = app_settings.topic("transactions")
    scores_topic = app_settings.topic("scores")

    # The group's first assignment, published from the registry's machine.
    result = models_cli(publisher, "promote", champion_version, "--reason", "test")
    assert result.returncode == 0, result.stderr
    assert f"{app_settings.topic('models.assignment')}@0 for group" in result.stdout
    assert f"from {base}{champion_version}/" in result.stdout

    home = {name: tmp_path / name for name in ("a", "b")}
    shutil.copytree(registry, home["a"] / "models")  # A: a copy of the registry
    (home["b"]).mkdir()  # B: nothing; it fetches what it is assigned
    ports = {name: free_port() for name in home}
    workers = {
        name: WorkerProcess(
            home[name] / "run",
            env
            | {
                "STREAM_APP_MODELS_DIR": str(home[name] / "models"),
                "STREAM_APP_STATE_DIR": str(home[name] / "state"),
                "STREAM_APP_WEB_PORT": str(ports[name]),
            },
            name=f"worker-{name}",
            cwd=home[name],
        )
        for name in home
    }
    items = list(
        simulate(
            n_customers=200,
            n_terminals=300,
            n_events=3 * PHASE,
            seed=19,
            start=datetime(2026, 3, 1, tzinfo=UTC),
        )
    )
    records = list(schedule(items, labels=False))
    assert len(records) == 3 * PHASE

    def publish(batch):
        with BulkProducer(app_settings) as producer:
            for record in batch:
                producer.produce(topic, record.key, record.value)

    def serving(name, role="champion"):
        return models_check(ports[name])["serving"][role]

    try:
        for worker in workers.values():
            worker.start()
        for worker in workers.values():
            worker.wait_ready(timeout=180)
        wait_until(
            "both workers to be ready (partitions assigned to each)",
            lambda: all(get_json(ports[n], "/readyz")["ready"] for n in home),
            timeout=180,
            step=0.5,
        )
        assert f"follows the model assignment {app_settings.topic('models.assignment')}@0" in (
            workers["b"].log_text()
        )
        assert f"fetched {champion_version} from {base}{champion_version}/" in (
            workers["b"].log_text()
        )
        for name in home:
            check = wait_until(
                f"{name} to read the assignment",
                lambda n=name: "assignment" in (c := models_check(ports[n])) and c,
                timeout=30,
            )
            assert check["serving"] == {"champion": champion_version, "challenger": None}
            assert check["in_step"] is True and check["assignment"]["offset"] == 0

        # 1. the first assignment: every envelope names it
        publish(records[:PHASE])
        scores = read_topic(kafka_bootstrap, scores_topic, expect=PHASE, settle=0)
        assert {orjson.loads(m.value())["model_version"] for m in scores} == {champion_version}
        # 2. one promote, published once, reaches both workers within the watch interval
        result = models_cli(publisher, "promote", challenger_version, "--reason", "test")
        assert result.returncode == 0, result.stderr
        reached = {}
        for name in home:
            wait_until(f"{name} to swap", lambda n=name: serving(n) == challenger_version, 60)
            # from the record's timestamp to the worker serving all of it (one host, one clock)
            reached[name] = models_check(ports[name])["assignment"]["in_step_after_s"]
        print(f"promote: A in step {reached['a']:.3f} s after the publish, B {reached['b']:.3f} s")
        assert max(reached.values()) <= WATCH_INTERVAL_S, reached
        assert f"fetched {challenger_version} from {base}{challenger_version}/" in (
            workers["b"].log_text()
        )
        assert "fetched" not in workers["a"].log_text()  # A's copy was checked, not fetched
        before = {name: scored(ports[name]) for name in home}
        publish(records[PHASE : 2 * PHASE])
        scores = read_topic(kafka_bootstrap, scores_topic, expect=2 * PHASE, settle=0)
        phase2 = {r.value for r in records[PHASE : 2 * PHASE]}
        envelopes = [orjson.loads(m.value()) for m in scores]
        ids = {orjson.loads(v)["event_id"] for v in phase2}
        assert {e["model_version"] for e in envelopes if e["event_id"] in ids} == {
            challenger_version
        }
        # each worker scored its share, with the new version only
        by_worker = {n: scored_since(before[n], scored(ports[n])) for n in home}
        print(f"phase 2 scored: {by_worker}")
        assert set(by_worker["a"]) == set(by_worker["b"]) == {challenger_version}
        assert sum(n for d in by_worker.values() for n in d.values()) == PHASE

        # 3. a tampered copy in A's directory: A refuses the rollback, B takes it
        (home["a"] / "models" / champion_version / "model.joblib").write_bytes(TAMPERED)
        result = models_cli(publisher, "rollback", "--reason", "test")
        assert result.returncode == 0, result.stderr
        assert f"champion: {challenger_version} -> {champion_version} (rollback;" in result.stdout
        published_at = time.monotonic()
        wait_until("B to roll back", lambda: serving("b") == champion_version, 60)
        b_after = models_check(ports["b"])["assignment"]["in_step_after_s"]
        refused = wait_until(
            "A to refuse", lambda: models_check(ports["a"]).get("refused", {}).get("champion"), 60
        )
        print(
            f"rollback: B in step {b_after:.3f} s after the publish; A refused it "
            f"{time.monotonic() - published_at:.2f} s after the CLI returned"
        )
        assert b_after <= WATCH_INTERVAL_S
        bad = hashlib.sha256(TAMPERED).hexdigest()
        assert refused["version"] == champion_version and refused["reason"] == "sha256_mismatch"
        assert f"has SHA-256 {bad}" in refused["message"]
        check_a = models_check(ports["a"])
        assert check_a["ok"] is True and check_a["in_step"] is False
        assert check_a["serving"]["champion"] == challenger_version
        assert check_a["assigned"]["champion"] == champion_version
        assert "NOT in step" in check_a["detail"] and check_a["assignment"]["in_step_at"] is None
        log_a = workers["a"].log_text()
        assert f"refused champion {champion_version} of the model assignment" in log_a
        assert f"still serving champion {challenger_version}" in log_a
        text_a, text_b = metrics_text(ports["a"]), metrics_text(ports["b"])
        assert 'stream_app_model_refused_total{reason="sha256_mismatch",role="champion"}' in text_a
        assert 'stream_app_model_in_step{role="champion"} 0.0' in text_a
        assert (
            f'stream_app_model_serving{{role="champion",version="{challenger_version}"}} 1.0'
            in (text_a)
        )
        assert f'stream_app_model_assigned{{role="champion",version="{champion_version}"}} 1.0' in (
            text_a
        )
        assert 'stream_app_model_in_step{role="champion"} 1.0' in text_b
        assert f'stream_app_model_serving{{role="champion",version="{champion_version}"}} 1.0' in (
            text_b
        )
        assert "refused" not in models_check(ports["b"])

        before = {name: scored(ports[name]) for name in home}
        publish(records[2 * PHASE :])
        scores = read_topic(kafka_bootstrap, scores_topic, expect=3 * PHASE)
        split = {n: scored_since(before[n], scored(ports[n])) for n in home}

        # 4. the bad copy deleted: A fetches the version from the URI and is back in step
        shutil.rmtree(home["a"] / "models" / champion_version)
        deleted_at = time.monotonic()
        wait_until("A to recover", lambda: serving("a") == champion_version, 60)
        print(f"A back in step {time.monotonic() - deleted_at:.2f} s after the bad copy went")
        assert models_check(ports["a"])["in_step"] is True
        assert f"fetched {champion_version} from {base}{champion_version}/" in (
            workers["a"].log_text()
        )
        assert all(w.running for w in workers.values())
    finally:
        for worker in workers.values():
            worker.stop()

    # Every transaction scored once; in phase 3 each worker's partitions carry its own version.
    envelopes = [orjson.loads(m.value()) for m in scores]
    assert len({e["event_id"] for e in envelopes}) == len(envelopes) == len(records)
    phase3 = {orjson.loads(r.value)["event_id"] for r in records[2 * PHASE :]}
    served = Counter(e["model_version"] for e in envelopes if e["event_id"] in phase3)
    print(f"phase 3: envelopes {dict(served)}; scored by A {split['a']}, by B {split['b']}")
    # A (refused) scored its share with the previous version, B with the new one
    assert set(split["a"]) == {challenger_version} and set(split["b"]) == {champion_version}
    assert served == {
        challenger_version: split["a"][challenger_version],
        champion_version: split["b"][champion_version],
    }
    assert sum(served.values()) == PHASE
