"""Stop the broker mid-stream for ~10 s (SIGTERM, and kill -9) and start it again (same port,
same data dir) while the source keeps producing: the same worker process reconnects on its own
and nothing is lost. And a broker that is down when the worker starts: the worker waits, answers
``/readyz`` 503 (``/healthz`` 200) meanwhile, and scores everything once the broker is up.

The test runs its own broker on free ports (the session broker is shared by every test). A
thousand events go first; once the worker scores them the rest follows at a steady rate, and the
broker stops when a quarter of the stream is out. The publisher thread keeps producing through
the outage (librdkafka queues and retries); the worker
is never restarted, and must still be the same live process at the end, exiting 0 on SIGTERM.
Duplicates are allowed (a rebalance after the outage re-reads uncommitted work) and reported;
every envelope, duplicates included, must carry the offline features.
"""

from __future__ import annotations

import time

import pytest

from stream_app.broker import LocalBroker, free_ports
from stream_app.config import Settings
from tests.faults.harness import (
    BackgroundPublisher,
    ScoreTail,
    TopicWatch,
    Worker,
    check_scores,
    envelopes,
    first_after,
    make_stream,
    publish,
    read_all,
    wait_for_count,
    worker_env,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_EVENTS = 12_000
WARM_UP = 1_000  # published before the worker starts; the steady stream starts once it scores
RATE = 400  # events/s: the steady stream lasts ~28 s and goes on through the outage (~20 s)
OUTAGE_S = 10.0
SEED = 20260603


@pytest.fixture
def own_broker(tmp_path):
    port, controller_port = free_ports(2)
    broker = LocalBroker(tmp_path / "broker", port=port, controller_port=controller_port)
    try:
        broker.start(timeout=120)
        yield broker
    finally:
        broker.stop()


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_worker_survives_broker_restart(own_broker, app_env, tmp_path, how):
    began = time.monotonic()
    bootstrap = own_broker.bootstrap
    env = worker_env(app_env, KAFKA_BOOTSTRAP_SERVERS=bootstrap)
    settings = Settings(
        kafka_bootstrap_servers=bootstrap,
        topic_prefix=env["STREAM_APP_TOPIC_PREFIX"],
        app_id=env["STREAM_APP_APP_ID"],
        partitions=int(env["STREAM_APP_PARTITIONS"]),
    )
    stream = make_stream(N_EVENTS, seed=SEED)
    scores_topic = settings.topic("scores")
    worker = Worker(tmp_path / "worker", env)
    # librdkafka logs every refused reconnect at level 3 while the broker is down: keep quiet.
    publisher = BackgroundPublisher(
        settings, stream.records[WARM_UP:], RATE, config={"log_level": 2}
    )
    try:
        publish(settings, stream.records[:WARM_UP])
        worker.start()
        worker.wait_ready()
        assert worker.proc is not None
        pid = worker.proc.pid
        watch = TopicWatch(bootstrap)
        try:  # the worker is scoring before the steady stream starts
            wait_for_count(watch, scores_topic, WARM_UP // 2, worker, timeout=120)
        finally:
            watch.close()
        publisher.start()
        while publisher.sent < N_EVENTS // 4:  # three quarters still to come: ~20 s at RATE
            assert publisher.is_alive(), publisher.error
            time.sleep(0.05)
        stopped_at = time.time()
        sent_at_stop = publisher.sent
        if how == "SIGTERM":
            assert own_broker.stop(), "the broker was not running"
        else:  # kill -9: no controlled shutdown, the log recovers at the next start
            assert own_broker.kill(), "the broker was not running"
        time.sleep(OUTAGE_S)
        worker.ensure_alive()
        restart_at = time.time()
        own_broker.start(timeout=120)
        back_at = time.time()
        sent_at_back = publisher.sent
        publisher.join(timeout=180)
        assert publisher.error is None and publisher.sent == N_EVENTS - WARM_UP, publisher.error
        tail = ScoreTail(bootstrap, scores_topic)
        try:
            tail.wait_covered(stream.event_ids, timeout=180, worker=worker)
        finally:
            tail.close()
        assert worker.proc.pid == pid and worker.running
        code = worker.stop()
    finally:
        worker.stop()
    assert code == 0, worker.tail(40)

    envs = envelopes(bootstrap, scores_topic)
    check = check_scores(stream, envs)
    dlq = read_all(bootstrap, settings.topic("transactions.dlq"))
    first = first_after(envs, back_at)
    log = worker.log_text()
    print(
        f"\nbroker restart ({how}): stopped after {WARM_UP + sent_at_stop:,} events sent "
        f"({WARM_UP + sent_at_back:,} when back), down "
        f"{restart_at - stopped_at:.1f} s, back in {back_at - restart_at:.1f} s; first score "
        f"{(first or back_at) - back_at:.1f} s after the broker was back; worker pid {pid} "
        f"throughout; {check.summary()}; {log.count('Joined group')} group joins; "
        f"{time.monotonic() - began:.0f} s in all"
    )
    assert len(worker.epochs) == 1
    check.assert_sound()
    assert dlq == [], f"{len(dlq)} dead letters"


def test_a_worker_started_before_its_broker_waits_and_loses_nothing(own_broker, app_env, tmp_path):
    import urllib.error
    import urllib.request

    import orjson

    bootstrap = own_broker.bootstrap
    env = worker_env(app_env, KAFKA_BOOTSTRAP_SERVERS=bootstrap)
    settings = Settings(
        kafka_bootstrap_servers=bootstrap,
        topic_prefix=env["STREAM_APP_TOPIC_PREFIX"],
        app_id=env["STREAM_APP_APP_ID"],
        partitions=int(env["STREAM_APP_PARTITIONS"]),
    )
    port = env["STREAM_APP_WEB_PORT"]

    def probe(path: str) -> tuple[int | None, dict]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                return r.status, orjson.loads(r.read())
        except urllib.error.HTTPError as err:
            return err.code, orjson.loads(err.read())
        except OSError:
            return None, {}

    stream = make_stream(3_000, seed=SEED + 1)
    worker = Worker(tmp_path / "worker", env)
    assert own_broker.stop()
    try:
        worker.start()
        deadline = time.monotonic() + 60
        ready, healthy = probe("/readyz"), probe("/healthz")
        while ready[0] != 503 and time.monotonic() < deadline:
            time.sleep(0.5)
            ready, healthy = probe("/readyz"), probe("/healthz")
        time.sleep(10)  # still waiting, still the same process
        alive = worker.running
        still = probe("/readyz")
        own_broker.start(timeout=120)
        worker.wait_ready(timeout=120)
        publish(settings, stream.records)
        tail = ScoreTail(bootstrap, settings.topic("scores"))
        try:
            tail.wait_covered(stream.event_ids, timeout=120, worker=worker)
        finally:
            tail.close()
        code = worker.stop()
    finally:
        worker.stop()
    envs = envelopes(bootstrap, settings.topic("scores"))
    check = check_scores(stream, envs)
    log = worker.log_text()
    print(
        f"\nbroker down at start: /readyz {ready[0]} {ready[1].get('checks')}, /healthz "
        f"{healthy[0]}; after 10 s more alive {alive}, /readyz {still[0]}; "
        f"{log.count('waiting for Kafka (attempt')} attempts logged; {check.summary()}"
    )
    assert ready[0] == 503 and ready[1]["failing"] == ["kafka"] and healthy[0] == 200
    assert "cannot reach Kafka" in ready[1]["checks"]["kafka"]["detail"]
    assert alive and still[0] == 503
    assert len(worker.epochs) == 1 and code == 0
    check.assert_sound()
    assert check.duplicates == 0
