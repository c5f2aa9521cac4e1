"""Exactly-once after quick kills: a worker killed three times about 3 s apart (some kills land
before it is ready), restarted each time, scores everything in its last life, every run.

The pattern once left the last life "ready" and consuming nothing for 9 minutes, in 1 run of 6
(issue "Nothing silent"). Reproduced on the worker before the batch engine (fa32ef9) in 2 of
218 runs of 12,000 transactions (kills 2.5-12 s apart): after two back-to-back rebalances,
Faust's ``Consumer.getmany`` discarded the records aiokafka returned for the stream partitions
the recovery had just sought (its live active-partition set, emptied while the fetch waited,
reads as "every partition" to aiokafka), with no seek after: 3,200 of 3,200 missing scores in the
run that logged every drop (README, exactly-once). The batch engine fetches with a copy of the
set, never an empty one; the same pattern on it scored everything in 10 of 10 runs.

``STREAM_APP_QUICK_KILL_RUNS`` runs (20 by default: a 1-in-6 failure passes all 20 with
probability (5/6)^20 = 2.6 %) each publish their own transactions at 1,000/s
to topics of their own; after the last restart every transaction must have exactly one score for a
``read_committed`` consumer within ``COVER_S``. A run that misses it is reported with the last
life's ``/readyz`` and ``/engine`` and its log."""

from __future__ import annotations

import json
import os
import random
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from stream_app.config import Settings
from tests.faults.harness import (
    BackgroundPublisher,
    ScoreTail,
    Worker,
    make_stream,
    worker_env,
)

pytestmark = pytest.mark.integration

RUNS = int(os.environ.get("STREAM_APP_QUICK_KILL_RUNS", "20"))
N_EVENTS = int(os.environ.get("STREAM_APP_QUICK_KILL_EVENTS", "3000"))
# The harness's 10 s (see worker_env); Faust's default is 60 s.
SESSION_TIMEOUT_S = os.environ.get("STREAM_APP_QUICK_KILL_SESSION_TIMEOUT_S", "10")
RATE = 1_000
KILLS = 3
KILL_EVERY_S = 3.0
# "LOW,HIGH": each run's kills come a uniform LOW..HIGH seconds apart (seeded by the run), as the
# issue's "about 3 s": with "2.5,7" some lives join the group, open transactions and die in it
# (the pre-engine worker stalled in 1 of 97 such runs; see the module docstring).
KILL_SPACING_S = os.environ.get("STREAM_APP_QUICK_KILL_SPACING_S", f"{KILL_EVERY_S},{KILL_EVERY_S}")
COVER_S = float(os.environ.get("STREAM_APP_QUICK_KILL_COVER_S", "60"))


def engine_view(port: int) -> Any:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/engine", timeout=2) as resp:
            return json.loads(resp.read())
    except Exception as exc:
        return repr(exc)


def one_run(run: int, app_env: dict[str, str], tmp_path: Path) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    env = worker_env(
        {
            **app_env,
            "STREAM_APP_TOPIC_PREFIX": f"qk-{tag}.",
            "STREAM_APP_APP_ID": f"qk-{tag}",
            "STREAM_APP_STATE_DIR": str(tmp_path / f"state-{run}"),
        },
        STREAM_APP_PROCESSING_GUARANTEE="exactly_once",
        BROKER_SESSION_TIMEOUT=SESSION_TIMEOUT_S,
    )
    settings = Settings(
        kafka_bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"],
        topic_prefix=env["STREAM_APP_TOPIC_PREFIX"],
        app_id=env["STREAM_APP_APP_ID"],
        partitions=int(env["STREAM_APP_PARTITIONS"]),
    )
    stream = make_stream(N_EVENTS, seed=run, n_customers=300, n_terminals=300)
    publisher = BackgroundPublisher(settings, stream.records, RATE)
    worker = Worker(tmp_path / f"worker-{run}", env)
    publisher.start()
    worker.start()
    tail = ScoreTail(env["KAFKA_BOOTSTRAP_SERVERS"], settings.topic("scores"))
    low, high = (float(x) for x in KILL_SPACING_S.split(","))
    spacing = random.Random(run)
    try:
        for _ in range(KILLS):
            time.sleep(spacing.uniform(low, high))
            worker.kill()
            worker.start()
        publisher.join(timeout=60)
        started = time.monotonic()
        wanted = set(stream.event_ids)
        while wanted.difference(tail.seen) and time.monotonic() - started < COVER_S:
            worker.ensure_alive()
            tail.poll(1.0)
        missing = len(wanted.difference(tail.seen))
        result = {
            "run": run,
            "sent": publisher.sent,
            "missing": missing,
            "duplicates": sum(n - 1 for n in tail.seen.values() if n > 1),
            "covered_after_s": round(time.monotonic() - started, 1),
            "ready_after_s": [e.ready_after_s for e in worker.epochs],
        }
        if missing:
            result["readyz"] = worker.readyz()
            result["engine"] = engine_view(worker.web_port)
            result["log"] = worker.tail(60)
        return result
    finally:
        worker.stop()
        tail.close()


def test_exactly_once_scores_everything_after_quick_kills_every_run(app_env, tmp_path):
    results = [one_run(run, app_env, tmp_path) for run in range(RUNS)]
    failed = [r for r in results if r["missing"] or r["duplicates"] or r["sent"] != N_EVENTS]
    covered = sorted(r["covered_after_s"] for r in results)
    print(
        f"\nexactly-once, {KILLS} kills {KILL_SPACING_S} s apart, {RUNS} runs of {N_EVENTS:,} "
        f"transactions: {RUNS - len(failed)} scored everything exactly once; last life covered "
        f"all within {covered[0]:.1f}-{covered[-1]:.1f} s of the publisher's end "
        f"(median {covered[len(covered) // 2]:.1f}); "
        f"{Counter(r['missing'] > 0 for r in results)[True]} stalled"
    )
    assert not failed, json.dumps(failed, indent=1, default=str)[:20_000]
