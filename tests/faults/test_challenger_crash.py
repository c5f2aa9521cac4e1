"""The challenger's process killed (SIGKILL) under a running worker (issue 15, item 7).

The challenger scores in a process of its own (``stream_app.scoring.shadow``). When that process
dies, the champion must go on scoring every event, the worker must say so (the log, and the
challenger stall on ``/metrics``), and start the challenger again after a backoff: every event
sent after that is shadowed again, in the same worker process (those scored while it was down
are skipped, as when a challenger falls behind).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import orjson
import pytest

from tests.faults.harness import ScoreTail, Worker, make_stream, publish, read_all, worker_env
from tests.integration.test_misrouted_keys import metric

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_EVENTS = 2_000


def challenger_pids(worker_pid: int) -> list[int]:
    """The worker's child processes that run the challenger (multiprocessing spawn children,
    not its resource tracker)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == worker_pid and b"spawn_main" in cmdline:
            out.append(int(entry.name))
    return out


def test_a_killed_challenger_is_restarted_and_the_champion_goes_on(
    app_env, app_settings, kafka_bootstrap, challenger_version, tmp_path
):
    stream = make_stream(N_EVENTS, seed=715)
    # before the kill; right after it (scored by the champion while the challenger is down:
    # their shadow jobs are skipped); once the challenger runs again
    first, second, third = (
        stream.records[:800],
        stream.records[800:1400],
        stream.records[1400:],
    )
    env = worker_env(app_env, STREAM_APP_CHALLENGER=challenger_version)
    port = env["STREAM_APP_WEB_PORT"]
    worker = Worker(tmp_path / "worker", env)
    shadow_topic = app_settings.topic("scores.shadow")
    try:
        worker.start()
        worker.wait_ready()
        assert worker.proc is not None
        pid = worker.proc.pid
        publish(app_settings, first)
        tail = ScoreTail(kafka_bootstrap, app_settings.topic("scores"))
        try:
            tail.wait_covered([orjson.loads(r.value)["event_id"] for r in first], 120, worker)
            deadline = time.monotonic() + 60
            while len(read_all(kafka_bootstrap, shadow_topic)) < len(first):
                assert time.monotonic() < deadline, "the challenger never caught up"
                time.sleep(1)
            children = challenger_pids(pid)
            assert children, "no challenger process found"
            for child in children:
                os.kill(child, signal.SIGKILL)
            killed = time.monotonic()
            stalled_seen = False
            publish(app_settings, second)
            while time.monotonic() - killed < 30 and not stalled_seen:
                stalled_seen = metric(port, "stream_app_stalled", what="challenger") == 1.0
                time.sleep(0.2)
            while not (set(challenger_pids(pid)) - set(children)):
                assert time.monotonic() - killed < 60, "the challenger was not started again"
                time.sleep(0.2)
            back_s = time.monotonic() - killed
            publish(app_settings, third)
            tail.wait_covered(stream.event_ids, 120, worker)
        finally:
            tail.close()
        second_ids = {orjson.loads(r.value)["event_id"] for r in third}
        deadline = time.monotonic() + 90
        shadowed: set[str] = set()
        while time.monotonic() < deadline:
            shadowed = {
                orjson.loads(m.value or b"")["challenger"]["event_id"]
                for m in read_all(kafka_bootstrap, shadow_topic)
            } & second_ids
            if len(shadowed) == len(second_ids):
                break
            time.sleep(1)
        restarted = challenger_pids(pid)
        same_process = worker.running and worker.proc.pid == pid
        log = worker.log_text()
        code = worker.stop()
    finally:
        worker.stop()
    scores = read_all(kafka_bootstrap, app_settings.topic("scores"))
    scored = [orjson.loads(m.value or b"")["event_id"] for m in scores]
    print(
        f"\nchallenger killed (pids {children}): champion scored {len(set(scored)):,}/"
        f"{N_EVENTS:,} ({len(scored) - len(set(scored))} twice); stall seen on /metrics "
        f"{stalled_seen}; challenger running again after {back_s:.1f} s as {restarted}; shadow "
        f"records for {len(shadowed):,} of the {len(second_ids):,} events sent after that; "
        f"worker pid {pid} throughout "
        f"{same_process}, exit {code}"
    )
    assert same_process and code == 0
    assert set(scored) == set(stream.event_ids) and len(scored) == N_EVENTS
    assert "restarting the challenger" in log
    assert stalled_seen
    assert restarted and not set(restarted) & set(children)
    assert shadowed == second_ids
