"""kill -9 while one actor of a concurrent agent holds a slow event: it is scored after the restart.

faust-streaming issue #606: with agent concurrency above 1, a fast actor acknowledges the events
after one a slow actor still holds, and ``Consumer._new_offset`` commits past the slow one (its
head-gap check lets exactly one missing offset through, and there is no check at all before a
partition's first commit). A kill -9 before the slow event finishes then loses it: the restart
resumes after it. The worker's own agents run one actor each (their per-entity windows must see a
key's records in order), so this uses a small app on the same Faust layer
(``tests/faults/concurrent_agent_app.py``: ``FastDispatchApp``, ``FastDispatchConsumer``, the
worker's settings) with an agent of ``CONCURRENCY`` actors that scores every event by producing
an output record.

The test publishes ``N_EVENTS`` events to a one-partition topic; the event at ``SLOW_OFFSET``
sleeps ``SLOW_S`` (longer than the first life lasts), the others 10 ms. Once every other event is
scored, it waits until the group's committed offset passes the slow event, or, if it does not,
for three commit intervals; then it checks the slow event was not scored yet and kills the app
with SIGKILL. A second life (no slow event) starts; a sentinel event is published after the
kill, and when the group's committed offset reaches past the sentinel (every event it resumed
from has been acknowledged after its output was delivered), an independent reader checks that
every event, the slow one included, has an output record. Events the second life scores again
are the at-least-once duplicates a kill leaves; they are reported, not limited.

On faust-streaming 0.15.3 without the fix (``FastDispatchConsumer._new_offset``) it failed: the
group had committed 30 (the log end) while offset 5 was in flight, and offset 5 was never scored.
With it, the commit stays at 5 until the kill and the second life scores 5..30 (6..29 twice).
About 25 s, plus the session's broker start.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.faults.harness import committed, read_all

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

REPO = Path(__file__).resolve().parents[2]
N_EVENTS = 30
SLOW_OFFSET = 5
SLOW_S = 300.0  # never finishes in the first life: it is killed first
CONCURRENCY = 2
COMMIT_INTERVAL_S = 2.8  # Faust's broker_commit_interval default, as the worker runs
SESSION_TIMEOUT_S = 6.0  # the broker's minimum: the killed member leaves the group sooner


class App:
    """One life of ``tests.faults.concurrent_agent_app`` as a child process with a log file."""

    def __init__(self, home: Path, name: str, args: list[str], bootstrap: str) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.log_path = home / f"{name}.log"
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "BROKER_COMMIT_INTERVAL": str(COMMIT_INTERVAL_S),
            "BROKER_SESSION_TIMEOUT": str(SESSION_TIMEOUT_S),
            "BROKER_HEARTBEAT_INTERVAL": "1.0",
        }
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.faults.concurrent_agent_app", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO,
                start_new_session=True,
            )

    def check_alive(self) -> None:
        code = self.proc.poll()
        assert code is None, f"app exited with {code}:\n{self.tail()}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


class Outputs:
    """Reads the output topic from the beginning with its own consumer (never the app's group)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"verify-{uuid.uuid4()}",
                "enable.auto.commit": False,
            }
        )
        self.consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        self.scored: Counter[int] = Counter()

    def poll(self) -> set[int]:
        for message in self.consumer.consume(1000, timeout=0.2):
            if message.error() is None:
                self.scored[orjson.loads(message.value())["offset"]] += 1
        return set(self.scored)

    def close(self) -> None:
        self.consumer.close()


def wait_until(what: str, condition: Callable[[], bool], timeout: float, app: App) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        app.check_alive()
        assert time.monotonic() < deadline, f"{what}: not after {timeout:.0f} s\n{app.tail()}"
        time.sleep(0.2)


def test_a_slow_event_held_by_one_of_two_actors_is_scored_after_kill_9(kafka_bootstrap, tmp_path):
    began = time.monotonic()
    tag = uuid.uuid4().hex[:8]
    source, output, app_id = f"conc-{tag}.in", f"conc-{tag}.out", f"conc-{tag}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for future in admin.create_topics(
        [NewTopic(t, num_partitions=1, replication_factor=1) for t in (source, output)]
    ).values():
        future.result(timeout=30)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})

    def publish(offsets: range) -> None:
        for i in offsets:
            producer.produce(source, key=f"k{i}".encode(), value=f"event {i}".encode())
        assert producer.flush(30) == 0

    def group_offset() -> int:
        return committed(kafka_bootstrap, app_id, source, [0])[0]

    publish(range(N_EVENTS))
    args = ["--broker", kafka_bootstrap, "--app-id", app_id, "--input", source]
    args += ["--output", output, "--concurrency", str(CONCURRENCY)]
    outputs = Outputs(kafka_bootstrap, output)
    fast = set(range(N_EVENTS)) - {SLOW_OFFSET}
    slow = ["--slow-offset", str(SLOW_OFFSET), "--slow-s", str(SLOW_S)]
    first = App(
        tmp_path, "first", [*args, "--datadir", str(tmp_path / "d1"), *slow], kafka_bootstrap
    )
    try:
        wait_until("every event but the slow one scored", lambda: outputs.poll() >= fast, 90, first)
        scored_all_fast = time.monotonic()
        while time.monotonic() - scored_all_fast < 3 * COMMIT_INTERVAL_S:
            if group_offset() > SLOW_OFFSET:
                break
            first.check_alive()
            time.sleep(0.2)
        at_kill = group_offset()
        in_flight = SLOW_OFFSET not in outputs.poll()
        first.kill()
    finally:
        first.kill()
    assert in_flight, "the slow event finished in the first life: the test tested nothing"

    second = App(tmp_path, "second", [*args, "--datadir", str(tmp_path / "d2")], kafka_bootstrap)
    try:
        publish(range(N_EVENTS, N_EVENTS + 1))  # a sentinel after the kill
        wait_until(
            "the second life acknowledged every event to the sentinel",
            lambda: group_offset() == N_EVENTS + 1,
            90,
            second,
        )
        outputs.poll()
        code = second.stop()
    finally:
        second.kill()
        outputs.close()

    scored = Counter(orjson.loads(m.value)["offset"] for m in read_all(kafka_bootstrap, output))
    twice = sum(n - 1 for n in scored.values())
    print(
        f"\n#606 kill test: {N_EVENTS + 1} events, concurrency {CONCURRENCY}, offset "
        f"{SLOW_OFFSET} slow; committed at the kill {at_kill}; after the restart every event "
        f"scored: {set(range(N_EVENTS + 1)) <= set(scored)}, offset {SLOW_OFFSET} scored "
        f"{scored[SLOW_OFFSET]} time(s), {twice} scored twice; {time.monotonic() - began:.1f} s"
    )
    assert code == 0, second.tail()
    assert scored[SLOW_OFFSET] >= 1, (
        f"offset {SLOW_OFFSET} was never scored: the first life committed {at_kill} while it "
        "was still in flight (faust-streaming #606), so the restart resumed after it"
    )
    assert at_kill <= SLOW_OFFSET, (at_kill, SLOW_OFFSET)
    lost = sorted(set(range(N_EVENTS + 1)) - set(scored))
    assert not lost, f"never scored: {lost}"
