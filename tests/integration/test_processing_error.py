"""A bug met on one input: that record is dead-lettered as ``processing_error``, nothing else is
lost, and the worker goes on (issue 15, item 7: no other test produced this reason).

No input the schema accepts makes the stages raise (that would be a bug to fix), so the bug is
injected into the worker child only, by a ``sitecustomize`` module on its ``PYTHONPATH`` that
makes the customer stage raise for event ids starting with ``poison-``; the project's code has
no hook for it.
"""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime

import orjson
import pytest

from stream_app.sources.producer import BulkProducer
from stream_app.sources.schedule import schedule
from tests.faults.harness import make_stream
from tests.integration.test_misrouted_keys import metric
from tests.kafka_reader import processed_by, read_topic

pytestmark = pytest.mark.integration

INJECTED = """
import stream_app.pipeline.customer_stage as stage

_one = stage.CustomerStage._one


def _buggy(self, record, tx, out):
    if tx.event_id.startswith("poison-"):
        raise RuntimeError("injected by the test: a bug met on this input")
    return _one(self, record, tx, out)


stage.CustomerStage._one = _buggy
"""


def poison(i: int) -> bytes:
    return orjson.dumps(
        {
            "event_id": f"poison-{i}",
            "event_time": datetime(2026, 3, 1, 12, i, tzinfo=UTC).isoformat(),
            "customer_id": f"pc{i}",
            "terminal_id": "pt",
            "amount": 12.5,
            "schema_version": 1,
        }
    )


def test_a_record_that_meets_a_bug_is_dead_lettered_and_the_worker_goes_on(
    app_env, app_settings, kafka_bootstrap, tmp_path
):
    from stream_app.devtools.worker_process import WorkerProcess

    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(INJECTED)
    path = os.pathsep.join(p for p in (str(inject), os.environ.get("PYTHONPATH", "")) if p)
    worker = WorkerProcess(tmp_path / "worker", {**app_env, "PYTHONPATH": path})
    stream = make_stream(300, seed=77)
    poisoned = [poison(i) for i in range(3)]
    topic = app_settings.topic("transactions")
    try:
        worker.start()
        worker.wait_ready()
        with BulkProducer(app_settings) as producer:
            for i, record in enumerate(schedule(stream.items, labels=False)):
                producer.produce(topic, record.key, record.value)
                if i % 100 == 50:
                    value = poisoned[i // 100]
                    producer.produce(topic, orjson.loads(value)["customer_id"], value)
        done = processed_by(app_settings)
        scores = read_topic(kafka_bootstrap, app_settings.topic("scores"), 0, **done)
        dlq = read_topic(kafka_bootstrap, app_settings.topic("transactions.dlq"), 0, **done)
        counted = metric(
            app_env["STREAM_APP_WEB_PORT"],
            "stream_app_dead_letters_total",
            reason="processing_error",
        )
        alive = worker.running
    finally:
        code = worker.stop()
    letters = [orjson.loads(m.value()) for m in dlq]
    scored = [orjson.loads(m.value())["event_id"] for m in scores]
    print(
        f"\n{len(stream.items)} transactions and {len(poisoned)} poisoned: scored {len(scored)}, "
        f"dead letters {[(x['reason'], x['message']) for x in letters][:1]} x {len(letters)}; "
        f"counted {counted:.0f}; worker alive {alive}, exit {code}"
    )
    assert sorted(scored) == sorted(stream.event_ids)
    assert [x["reason"] for x in letters] == ["processing_error"] * 3
    assert {base64.b64decode(x["value_b64"]) for x in letters} == set(poisoned)
    assert all(
        x["message"] == "RuntimeError: injected by the test: a bug met on this input"
        for x in letters
    )
    assert counted == 3 and alive and code == 0
