"""A co-partitioned topic grown alone, then ``topics grow``, on the real broker (issue 19, case 2).

On main before, ``transactions`` grown from 6 to 12 partitions under a running worker left the
records on the new partitions unread for about five minutes with no sign, then the worker took
them and stopped on ``_UNKNOWN_PARTITION`` (its changelog still had 6 partitions).

Before: within the check interval the worker reads nothing more, ``/readyz`` answers 503 with
the counts and the command to run, the log says it once, the worker stays up, and it scores and
dead-letters nothing of what is sent meanwhile (records placed on the old layout, as by a
producer whose metadata is not refreshed yet: unread when the topics are grown).

After ``stream-app topics grow --partitions 6`` (worker stopped) and a worker on 6 partitions:
every transaction scored once with the offline builder's features, the unread records whose keys
moved rerouted to their new partitions, every key's state on its murmur2 partition only.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewPartitions

from stream_app.config import Settings
from stream_app.io.partitioning import expected_partition
from tests.faults.harness import Worker, check_scores, envelopes, read_all, worker_env
from tests.integration.test_misrouted_keys import _stream
from tests.kafka_reader import read_topic

pytestmark = pytest.mark.integration

CHECK_S = 2.0


def readyz(port: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, orjson.loads(err.read())


def produce(bootstrap: str, topic: str, records, layout: int | None = None) -> None:
    """``records`` through murmur2; ``layout``: as a producer that still sees that many
    partitions places them (its metadata not refreshed yet: the records the workers have not
    read when the topics are grown)."""
    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random"})
    for r in records:
        key = r.key.encode()
        if layout is None:
            producer.produce(topic, r.value, key)
        else:
            producer.produce(topic, r.value, key, partition=expected_partition(key, layout))
    assert producer.flush(30) == 0


def test_a_topic_grown_alone_halts_the_worker_until_it_is_put_right(
    kafka_bootstrap, app_env, tmp_path
):
    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=app_env["STREAM_APP_TOPIC_PREFIX"],
        app_id=app_env["STREAM_APP_APP_ID"],
        partitions=3,
    )
    stream = _stream(seed=31, n_events=120)
    first, second = stream.records[:60], stream.records[60:]
    transactions = settings.topic("transactions")
    worker = Worker(tmp_path / "w", worker_env(app_env, STREAM_APP_PARTITION_CHECK_S=str(CHECK_S)))
    port = app_env["STREAM_APP_WEB_PORT"]
    try:
        worker.start()
        worker.wait_ready()
        produce(kafka_bootstrap, transactions, first)
        assert len(read_topic(kafka_bootstrap, settings.topic("scores"), 60, settle=0.5)) == 60
        status, body = readyz(port)
        assert status == 200 and body["checks"]["partitions"]["ok"], body

        admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
        for future in admin.create_partitions([NewPartitions(transactions, 6)]).values():
            future.result(30)
        grown = time.monotonic()
        while time.monotonic() - grown < 30:
            status, body = readyz(port)
            if status == 503 and not body["checks"]["partitions"]["ok"]:
                break
            time.sleep(0.5)
        noticed_s = time.monotonic() - grown
        detail = body["checks"]["partitions"]["detail"]
        produce(kafka_bootstrap, transactions, second, layout=3)  # still on the old layout
        time.sleep(3 * CHECK_S + 5)
        alive = worker.running
        status_after, _ = readyz(port)
        scores = read_all(kafka_bootstrap, settings.topic("scores"))
        dlq = read_all(kafka_bootstrap, settings.topic("transactions.dlq"))
        log = worker.log_text()
        # A restart on the mismatched layout (its consumer now sees 6 partitions of
        # transactions and 3 of everything else): it must not read either.
        assert worker.stop() == 0
        worker.start()
        restarted = time.monotonic()
        restart_status, restart_body = None, {}
        while time.monotonic() - restarted < 90:
            with contextlib.suppress(OSError):
                restart_status, restart_body = readyz(port)
                if not restart_body["checks"].get("partitions", {"ok": True})["ok"]:
                    break
            time.sleep(0.5)
        time.sleep(3 * CHECK_S + 5)
        restart_alive = worker.running
        restart_status, restart_body = readyz(port)
        restart_scores = read_all(kafka_bootstrap, settings.topic("scores"))
    finally:
        worker.stop()
    print(
        f"\nnoticed {noticed_s:.1f} s after the growth (check every {CHECK_S:g} s); "
        f"/readyz {status}: {detail}; scores {len(scores)} (60 before), dead letters {len(dlq)}; "
        f"restarted on the mismatch: alive {restart_alive}, /readyz {restart_status} failing "
        f"{restart_body.get('failing')}, scores {len(restart_scores)}"
    )
    assert restart_alive and restart_status == 503 and len(restart_scores) == 60
    assert "partitions" in restart_body["failing"]
    assert status == 503 and status_after == 503
    assert noticed_s <= 2 * CHECK_S + 5
    assert f"{transactions} has 6" in detail and "3 (STREAM_APP_PARTITIONS)" in detail
    assert "stream-app topics grow --partitions 6" in detail
    assert alive
    assert len(scores) == 60 and dlq == []
    assert log.count("co-partitioned topics disagree") == 1

    # --- after: `topics grow --partitions 6` with the worker stopped, then a worker on 6 -------
    env6 = worker_env(app_env, STREAM_APP_PARTITION_CHECK_S=str(CHECK_S), STREAM_APP_PARTITIONS="6")
    grown_cli = subprocess.run(
        [sys.executable, "-m", "stream_app", "topics", "grow", "--partitions", "6"],
        env={**os.environ, **env6, "COLUMNS": "250"},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert grown_cli.returncode == 0, grown_cli.stdout + grown_cli.stderr
    moved = re.findall(r"(\S+-state): (\d+) keys with state, (\d+) moved", grown_cli.stdout)
    worker = Worker(tmp_path / "w6", env6)
    try:
        worker.start()
        worker.wait_ready()
        deadline = time.monotonic() + 120
        envs = []
        while time.monotonic() < deadline:
            envs = envelopes(kafka_bootstrap, settings.topic("scores"))
            if len({e.event_id for e in envs}) >= len(stream.records):
                break
            time.sleep(1)
        status6, body6 = readyz(port)
        rerouted = len(read_all(kafka_bootstrap, settings.topic("transactions.rerouted")))
        dlq = read_all(kafka_bootstrap, settings.topic("transactions.dlq"))
    finally:
        worker.stop()
    check = check_scores(stream, envs)
    placement = changelog_placement(kafka_bootstrap, settings)
    print(grown_cli.stdout)
    moving = sum(
        expected_partition(r.key.encode(), 3) != expected_partition(r.key.encode(), 6)
        for r in second
    )
    print(
        f"topics grow: {moved}; after: {check.summary()}; {rerouted} of the {len(second)} "
        f"unread records rerouted ({moving} have keys that moved); state placement {placement}"
    )
    assert {name for name, _, _ in moved} == {"customer-state", "terminal-state"}
    assert all(int(n) > 0 for _, _, n in moved), moved  # most keys move from 3 to 6 partitions
    assert status6 == 200, body6
    check.assert_sound()
    assert dlq == []
    assert placement == {"misplaced": 0, "duplicated": 0}
    assert rerouted == moving > 0


def changelog_placement(bootstrap: str, settings: Settings) -> dict[str, int]:
    """Keys whose live state (latest record per partition, not a tombstone) is on another
    partition than murmur2 over the entity id puts it, or on more than one partition."""
    out = {"misplaced": 0, "duplicated": 0}
    for table in ("customer-state", "terminal-state"):
        latest: dict[bytes, dict[int, bytes | None]] = {}
        for m in read_all(bootstrap, f"{settings.app_id}-{table}-changelog"):
            latest.setdefault(m.key, {})[m.partition] = m.value
        for key, copies in latest.items():
            live = [p for p, v in copies.items() if v is not None]
            entity = orjson.loads(key).encode()
            out["duplicated"] += len(live) > 1
            out["misplaced"] += any(p != expected_partition(entity, 6) for p in live)
    return out
