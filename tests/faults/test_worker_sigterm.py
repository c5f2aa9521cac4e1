"""SIGTERM the worker mid-stream: it finishes in-flight batches, commits, logs its shutdown and
exits 0; after a restart nothing is lost and nothing is scored again.

The stream is published at a steady rate while the worker runs, so the signal lands while both
stages are busy. Right after the exit, the group's committed offsets must cover everything the
worker did (``harness.in_flight`` = 0: no forwarded transaction and no scored by-terminal record
beyond a commit); the envelopes then show no event scored by both lives, and the offline features.
An event scored twice by one life fails too (``harness.SAME_LIFE_MAX``).
"""

from __future__ import annotations

import random
import re
import time

import pytest

from tests.faults.harness import (
    SAME_LIFE_MAX,
    BackgroundPublisher,
    ScoreTail,
    TopicWatch,
    Worker,
    check_scores,
    envelopes,
    first_after,
    in_flight,
    kill_point,
    make_stream,
    read_all,
    split_duplicates,
    table_problems,
    wait_for_count,
    worker_env,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_EVENTS = 10_000
RATE = 1000  # events/s
SEED = 20260602
# mode's Worker logs the signal, then Faust's worker its last step ("15" or "Signals.SIGTERM").
SHUTDOWN_MARKS = (
    re.compile(r"Signal received: (15|Signals\.SIGTERM)"),
    re.compile(r"\[\^Worker\]: Closing event loop"),
)


def test_sigterm_loses_nothing_and_duplicates_nothing(
    app_env, app_settings, kafka_bootstrap, tmp_path
):
    began = time.monotonic()
    stream = make_stream(N_EVENTS, seed=SEED)
    settings = app_settings
    scores_topic = settings.topic("scores")
    worker = Worker(tmp_path / "worker", worker_env(app_env))
    moment = int(N_EVENTS * random.Random(SEED).uniform(0.3, 0.6))
    publisher = BackgroundPublisher(settings, stream.records, RATE)
    publisher.start()
    watch = TopicWatch(kafka_bootstrap)
    tail = ScoreTail(kafka_bootstrap, scores_topic)
    try:
        worker.start()
        worker.wait_ready()
        wait_for_count(watch, scores_topic, moment, worker, timeout=120)
        code, shutdown_s = worker.sigterm(timeout=60)
        assert code is not None, f"worker still running 60 s after SIGTERM:\n{worker.tail(40)}"
        log = worker.log_text()
        point = kill_point(watch, kafka_bootstrap, settings)
        assert code == 0, f"exit code {code} after SIGTERM:\n{worker.tail(40)}"
        missing = [mark.pattern for mark in SHUTDOWN_MARKS if not mark.search(log)]
        assert not missing, f"shutdown not logged ({missing}):\n{worker.tail(40)}"

        worker.start()
        worker.wait_ready()
        publisher.join(timeout=120)
        assert publisher.error is None and publisher.sent == N_EVENTS, publisher.error
        tail.wait_covered(stream.event_ids, timeout=180, worker=worker)
    finally:
        worker.stop()
        tail.close()
        watch.close()

    envs = envelopes(kafka_bootstrap, scores_topic)
    check = check_scores(stream, envs)
    by_terminal = read_all(kafka_bootstrap, settings.topic("transactions.by-terminal"))
    stage1, stage2 = in_flight(point, envs, by_terminal)
    restarted = worker.epochs[1].started
    recover = first_after(envs, restarted) - restarted
    problems = table_problems(kafka_bootstrap, settings.app_id, stream, N_EVENTS)
    dlq = read_all(kafka_bootstrap, settings.topic("transactions.dlq"))
    replays, same_life = split_duplicates(envs, worker.epochs)
    print(
        f"\nSIGTERM after {sum(point.scores_end.values()):,} scores: exit {code} in "
        f"{shutdown_s:.1f} s; uncommitted at exit: stage 1 {stage1}, stage 2 {stage2}; first "
        f"score {recover:.1f} s after restart; {check.summary()} ({replays[1]} after the restart, "
        f"{sum(same_life)} within one life); "
        f"{time.monotonic() - began:.0f} s in all"
    )
    check.assert_sound()
    assert replays[1] == 0, f"{replays[1]} events scored again after the clean restart"
    assert sum(same_life) <= SAME_LIFE_MAX, same_life
    assert (stage1, stage2) == (0, 0), "work done but not committed at exit"
    assert not problems, (len(problems), problems[:10])
    assert dlq == [], f"{len(dlq)} dead letters"
