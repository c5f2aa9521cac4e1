"""Exactly-once with a zombie: one of two workers is frozen until its partitions move, then resumed.

Two workers in ``exactly_once`` mode share the stream. Worker A is frozen with SIGSTOP in the
middle of it (with a transaction of its outputs open, most likely) and stays frozen until the
group has dropped it (its session times out: ``BROKER_SESSION_TIMEOUT`` 10 s) and worker B has
taken its partitions and scored from them; then A is resumed with SIGCONT. A's late transaction
must be fenced (its checkpoint commits offsets with a group generation that is no longer valid:
KIP-447), and whatever A does next (rejoin, or exit for its supervisor to restart it), a
``read_committed`` reader must see every transaction's score exactly once, with the offline
builder's features.

This test found that it was not: A's transaction, begun before the freeze, was committed after it
resumed (aiokafka resets the generation of a dropped member before the revoke's checkpoint, and
offsets sent with generation -1 skip the coordinator's fencing check), so the events it covered,
which B had re-read, were scored twice under ``read_committed`` (1,196, 470 and 2,558 in three
runs). The transaction now commits its offsets under the membership it began with and is aborted
when the group has moved past it (``stream_app.outputs.kafka_transactions``); A then exits 70 for
its supervisor to restart it.
"""

from __future__ import annotations

import os
import signal
import time

import orjson
import pytest
from confluent_kafka.admin import AdminClient

from tests.faults.harness import (
    BackgroundPublisher,
    ScoreTail,
    Worker,
    check_scores,
    envelopes,
    make_stream,
    read_all,
    worker_env,
)
from tests.integration.conftest import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

N_EVENTS = 12_000
RATE = 600  # events/s
SEED = 20261204


def members(admin: AdminClient, group: str) -> list[str]:
    description = admin.describe_consumer_groups([group])[group].result(10)
    return sorted(m.client_id for m in description.members)


def test_a_frozen_worker_resumed_after_its_partitions_moved_is_fenced(
    app_env, app_settings, kafka_bootstrap, tmp_path
):
    began = time.monotonic()
    stream = make_stream(N_EVENTS, seed=SEED)
    settings = app_settings
    scores_topic = settings.topic("scores")
    env = worker_env(app_env, STREAM_APP_PROCESSING_GUARANTEE="exactly_once")
    a = Worker(tmp_path / "a", {**env, "STREAM_APP_STATE_DIR": str(tmp_path / "a" / "state")})
    b = Worker(
        tmp_path / "b",
        {
            **env,
            "STREAM_APP_STATE_DIR": str(tmp_path / "b" / "state"),
            "STREAM_APP_WEB_PORT": str(free_port()),
        },
    )
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    tail = ScoreTail(kafka_bootstrap, scores_topic)
    publisher = BackgroundPublisher(settings, stream.records, RATE)
    frozen_s = moved_after_s = frozen_at = 0.0
    try:
        for w in (a, b):
            w.start()
            w.wait_ready()
        deadline = time.monotonic() + 60
        while len(members(admin, settings.app_id)) < 2:
            assert time.monotonic() < deadline, "B never joined"
            time.sleep(0.5)
        publisher.start()
        while publisher.sent < N_EVENTS // 3:
            time.sleep(0.2)
        assert a.proc is not None
        os.kill(a.proc.pid, signal.SIGSTOP)
        frozen = time.monotonic()
        frozen_at = time.time()
        while len(members(admin, settings.app_id)) != 1:
            assert time.monotonic() - frozen < 90, "the group never dropped the frozen worker"
            time.sleep(0.5)
        moved_after_s = time.monotonic() - frozen
        time.sleep(5)  # B scores from A's partitions meanwhile
        os.kill(a.proc.pid, signal.SIGCONT)
        frozen_s = time.monotonic() - frozen
        resumed = time.monotonic()
        while a.running and time.monotonic() - resumed < 60:
            time.sleep(0.2)
        a_exit = a.proc.poll()  # 70: its transaction aborted, it stops (see the docstring)
        a_exited_after_s = time.monotonic() - resumed
        a_log = a.log_text()
        # As its supervisor would: start it again; it rejoins and shares the rest of the stream.
        a.start()
        a.wait_ready()
        publisher.join(timeout=300)
        assert publisher.error is None and publisher.sent == N_EVENTS, publisher.error
        tail.wait_covered(stream.event_ids, timeout=300, worker=b)
    finally:
        codes = {"a": a.stop(), "b": b.stop()}
        tail.close()

    envs = envelopes(kafka_bootstrap, scores_topic)  # read_committed
    check = check_scores(stream, envs)
    marks = {"frozen": frozen_at, "resumed": frozen_at + frozen_s}
    (tmp_path / "envelopes.json").write_bytes(
        orjson.dumps(
            {
                "marks": marks,
                "envs": [(e.event_id, e.scored_at, e.partition, e.offset) for e in envs],
            }
        )
    )
    uncommitted = read_all(kafka_bootstrap, scores_topic, isolation="read_uncommitted")
    dlq = read_all(kafka_bootstrap, settings.topic("transactions.dlq"))
    fenced = [
        line
        for line in a_log.splitlines()
        if "consumer group moved on" in line or "transaction not committed" in line
    ]
    print(
        f"\nexactly-once zombie: A frozen {frozen_s:.1f} s (the group dropped it after "
        f"{moved_after_s:.1f} s); {check.summary()}; read_uncommitted sees {len(uncommitted):,} "
        f"score records ({len(uncommitted) - len(envs):,} in aborted transactions); A exited "
        f"{a_exit} {a_exited_after_s:.1f} s after resuming, restarted, stop codes {codes}; "
        f"A's log: {fenced[:1]}; {time.monotonic() - began:.0f} s in all"
    )
    check.assert_sound()
    assert check.duplicates == 0, f"{check.duplicates} events scored twice under read_committed"
    assert dlq == []
    assert fenced, "A's late transaction was not fenced (nothing in its log says so)"
    assert len(uncommitted) > len(envs), "A's late transaction left nothing aborted"
    assert a_exit == 70 and codes == {"a": 0, "b": 0}, (a_exit, codes)
