"""The worker's web port on the real broker: /metrics counts exactly what went through,
/healthz and /readyz answer 200."""

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from stream_app.operations import top
from stream_app.scoring.model import ScoringModel
from stream_app.scoring.registry import resolve_version
from stream_app.sources.producer import BulkProducer
from stream_app.sources.schedule import schedule
from stream_app.sources.simulator import simulate
from tests.kafka_reader import read_topic

pytestmark = pytest.mark.integration

# (key, value, expected dead-letter reason): one of each, keyed as a producer would.
MALFORMED = [
    (b"c1", b"{not json", "invalid_json"),
    (b"c1", b"", "empty_value"),
    (b"c1", b"[1,2,3]", "not_an_object"),
    (
        b"other",
        b'{"event_id":"m9","event_time":"2026-03-01T00:00:00Z","customer_id":"c1",'
        b'"terminal_id":"t","amount":5,"schema_version":1}',
        "key_mismatch",
    ),
    (b"c1", b"x" * 70_000, "too_large"),
]


def get(port: int, path: str) -> tuple[int, str, str]:
    """(status, content type, body) of GET http://127.0.0.1:<port><path>."""
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read().decode()


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, _, text = get(port, "/metrics")
    assert status == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def by_label(samples, name: str, label: str) -> dict[str, float]:
    return {dict(k[1])[label]: v for k, v in samples.items() if k[0] == name}


def test_metrics_count_200_scored_and_5_dead_letters(
    worker, app_env, app_settings, kafka_bootstrap
):
    port = int(app_env["STREAM_APP_WEB_PORT"])
    champion = ScoringModel.load(
        resolve_version(Path(app_env["STREAM_APP_MODELS_DIR"]), app_env["STREAM_APP_CHAMPION"])
    )

    items = list(
        simulate(
            n_customers=100,
            n_terminals=150,
            n_events=200,
            seed=31,
            start=datetime(2026, 3, 1, tzinfo=UTC),
        )
    )
    assert len(items) == 200
    topic = app_settings.topic("transactions")
    with BulkProducer(app_settings) as producer:
        for i, record in enumerate(schedule(items, labels=False)):
            producer.produce(topic, record.key, record.value)
            if i % 40 == 0 and i // 40 < len(MALFORMED):
                key, value, _ = MALFORMED[i // 40]
                producer.produce(topic, key, value)

    scores = read_topic(kafka_bootstrap, app_settings.topic("scores"), expect=200)
    assert len(scores) == 200
    dlq = read_topic(kafka_bootstrap, app_settings.topic("transactions.dlq"), expect=5, settle=0)
    assert len(dlq) == 5

    # Counters move after a batch's sends are handed to the producer: poll briefly, then exact.
    deadline = time.monotonic() + 30
    while True:
        samples = scrape(port)
        consumed = by_label(samples, "stream_app_events_consumed_total", "stage")
        scored = by_label(samples, "stream_app_events_scored_total", "model_version")
        dead = by_label(samples, "stream_app_dead_letters_total", "reason")
        done = consumed.get("customer") == 205 and sum(scored.values()) == 200
        if (done and sum(dead.values()) == 5) or time.monotonic() > deadline:
            break
        time.sleep(0.5)

    assert scored == {champion.version: 200}
    assert consumed["customer"] == 205
    assert consumed["scoring"] == 200
    assert {reason: n for reason, n in dead.items() if n} == {
        reason: 1 for _, _, reason in MALFORMED
    }
    assert sum(dead.values()) == 5
    info = by_label(samples, "stream_app_model_info", "version")
    assert info == {champion.version: 1.0}
    assert (
        "stream_app_model_info",
        (("sha256", champion.sha256), ("version", champion.version)),
    ) in samples
    assert samples[("stream_app_end_to_end_latency_seconds_count", ())] == 200
    assert samples[("stream_app_end_to_end_latency_seconds_bucket", (("le", "+Inf"),))] == 200
    assert samples[("stream_app_end_to_end_latency_seconds_sum", ())] > 0
    assert samples[("stream_app_scoring_seconds_count", ())] >= 1
    assert by_label(samples, "stream_app_batch_size_sum", "stage") == {
        "customer": 205.0,
        "scoring": 200.0,
    }
    assert by_label(samples, "stream_app_labels_total", "outcome") == {
        "applied": 0.0,
        "unmatched": 0.0,
    }
    assert by_label(samples, "stream_app_replayed_total", "stage") == {
        "customer": 0.0,
        "scoring": 0.0,
    }
    tables = by_label(samples, "stream_app_table_keys", "table")
    assert tables["customer-state"] > 0 and tables["terminal-state"] > 0

    status, content_type, _ = get(port, "/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    assert "version=" in content_type

    assert get(port, "/healthz")[:1] == (200,)
    assert get(port, "/healthz")[2].strip() == "ok"
    status, _, body = get(port, "/readyz")
    assert status == 200, body
    ready = json.loads(body)
    assert ready["ready"] is True and ready["failing"] == []
    assert set(ready["checks"]) == {
        "partitions_assigned",
        "recovery_finished",
        "champion_loaded",
        "progress",
        "partitions",
        "models",
    }
    assert ready["checks"]["partitions"]["detail"] == "co-partitioned topics have 3 partitions"

    # Consumer lag: one series per assigned input partition, all at 0 once everything is read.
    deadline = time.monotonic() + 30
    while True:
        lag = top.by_label(scrape(port), "stream_app_consumer_lag", "topic", "partition")
        if (lag and sum(lag.values()) == 0) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    partitions = app_settings.partitions
    assert {(t, int(p)) for t, p in lag if t == topic} == {(topic, p) for p in range(partitions)}
    assert sum(lag.values()) == 0, lag

    # `stream-app top --once` reads the same endpoint and shows the same totals.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "stream_app",
            "top",
            "--once",
            "--interval",
            "0.5",
            "--url",
            f"http://127.0.0.1:{port}/metrics",
            "--scorecard-url",
            "http://127.0.0.1:9/metrics",  # nothing listens: skipped, not an error
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "160"},
    )
    assert result.returncode == 0, result.stderr
    frame = result.stdout
    assert re.search(r"scored total\s*│\s*200\b", frame), frame
    assert re.search(r"key_mismatch\s*│\s*1\b", frame), frame
    assert f"champion {champion.version}" in frame and "Consumer lag (total 0)" in frame
