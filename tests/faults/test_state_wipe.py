"""Delete the worker's local state (RocksDB) between runs: the tables come back from the
changelogs exactly, and /readyz says "not ready" until they have.

1. The worker scores part A of the stream and stops (SIGTERM). Its RocksDB files, read directly,
   equal the tables as their changelogs hold them and the offline recomputation.
2. The state dir is deleted; the worker starts with nothing to consume. Stopped once ready, its
   RocksDB files (rebuilt from the changelogs only) equal those read in step 1, key for key.
3. Part B is published while the worker is down, the state dir is deleted again and the worker
   restarts with B waiting: /readyz is polled from the start. No envelope may carry a
   ``scored_at`` before the last moment /readyz answered 503, and B's features (which read the
   rebuilt windows) must equal the offline ones, as must every envelope of the test.
"""

from __future__ import annotations

import time

import pytest

from tests.faults.harness import (
    SAME_LIFE_MAX,
    ScoreTail,
    Worker,
    changelog,
    check_scores,
    check_states,
    envelopes,
    first_after,
    make_stream,
    publish,
    read_all,
    rocksdb_tables,
    split_duplicates,
    worker_env,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_A = 6_000
N_B = 3_000
SEED = 20260604
TABLES = ("customer-state", "terminal-state")


def poll_readiness(worker: Worker, timeout: float = 90.0) -> list[tuple[float, int | None, dict]]:
    """GET /readyz every 50 ms from now until it answers 200: (time, status, body) each."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        worker.ensure_alive()
        status, body = worker.readyz()
        seen.append((time.time(), status, body or {}))
        if status == 200:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"/readyz never answered 200; last: {seen[-1]}\n{worker.tail(30)}")


def test_state_rebuilt_from_changelogs(app_env, app_settings, kafka_bootstrap, tmp_path):
    began = time.monotonic()
    stream = make_stream(N_A + N_B, seed=SEED)
    settings = app_settings
    app_id = settings.app_id
    worker = Worker(tmp_path / "worker", worker_env(app_env))
    tail = ScoreTail(kafka_bootstrap, settings.topic("scores"))
    try:
        # 1. Part A, then a clean stop.
        publish(settings, stream.slice(0, N_A))
        worker.start()
        worker.wait_ready()
        tail.wait_covered(stream.event_ids[:N_A], timeout=120, worker=worker)
        assert worker.stop() == 0, worker.tail(40)
        stored = {t: rocksdb_tables(worker.state_dir, app_id, t) for t in TABLES}
        logged = {t: changelog(kafka_bootstrap, app_id, t) for t in TABLES}
        assert stored == logged, "RocksDB and the changelogs disagree after a clean stop"
        before = check_states(stream, N_A, *stored.values())
        assert not before, before[:10]

        # 2. Wipe; rebuild from the changelogs alone; compare the files key for key.
        worker.wipe_state()
        worker.start()
        idle = poll_readiness(worker)
        assert worker.stop() == 0, worker.tail(40)
        rebuilt = {t: rocksdb_tables(worker.state_dir, app_id, t) for t in TABLES}
        assert rebuilt == stored, {
            t: sum(rebuilt[t].get(k) != stored[t].get(k) for k in {*rebuilt[t], *stored[t]})
            for t in TABLES
        }

        # 3. Wipe again; part B waits on the topic; poll /readyz from the start.
        worker.wipe_state()
        publish(settings, stream.slice(N_A, N_A + N_B))
        worker.start()
        polls = poll_readiness(worker)
        tail.wait_covered(stream.event_ids, timeout=120, worker=worker)
        assert worker.stop() == 0, worker.tail(40)
        final = {t: rocksdb_tables(worker.state_dir, app_id, t) for t in TABLES}
        final_logged = {t: changelog(kafka_bootstrap, app_id, t) for t in TABLES}
    finally:
        worker.stop()
        tail.close()

    envs = envelopes(kafka_bootstrap, settings.topic("scores"))
    check = check_scores(stream, envs)
    dlq = read_all(kafka_bootstrap, settings.topic("transactions.dlq"))
    replays, same_life = split_duplicates(envs, worker.epochs)
    start3 = worker.epochs[2].started
    answered = [p for p in polls if p[1] is not None]
    not_ready = [p for p in answered if p[1] != 200]
    last_not_ready = max((p[0] for p in not_ready), default=start3)
    ready_at = answered[-1][0]
    first = first_after(envs, start3)
    recovering = [p for p in not_ready if not p[2]["checks"]["recovery_finished"]["ok"]]
    print(
        f"\nstate wipe: {N_A:,} + {N_B:,} events; {sum(len(v) for v in stored.values()):,} keys "
        f"rebuilt equal; idle restart ready {idle[-1][0] - worker.epochs[1].started:.1f} s after "
        f"start; restart with backlog: /readyz answered after "
        f"{answered[0][0] - start3:.1f} s, 503 x{len(not_ready)} "
        f"({len(recovering)} with recovery unfinished, failing: "
        f"{sorted({f for p in not_ready for f in p[2]['failing']})}), 200 after "
        f"{ready_at - start3:.1f} s; first score {first - start3:.1f} s after start "
        f"({first - last_not_ready:+.2f} s after the last 503); {check.summary()} "
        f"({sum(replays)} after a restart, {sum(same_life)} within one life); "
        f"{time.monotonic() - began:.0f} s in all"
    )
    check.assert_sound()
    assert sum(replays) == 0, f"{replays} events scored again after clean restarts"
    assert sum(same_life) <= SAME_LIFE_MAX, same_life
    assert dlq == [], f"{len(dlq)} dead letters"
    assert not_ready, "never saw /readyz say 503 while the worker was starting"
    assert all(e.scored_at > last_not_ready for e in envs if e.scored_at > start3)
    assert final == final_logged
    assert not check_states(stream, N_A + N_B, *final.values())
