"""`stream-app models compare` on the test broker (issue 16, item 3): a scorecard stream where
the challenger is clearly better and one where it is clearly worse, published to the topics the
live scorecard reads; the scorecard joins them and publishes its records (per route and slice on
`metrics`, every joined pair on `scorecard.pairs`); the command, run as a user types it, reads
the pairs and gives promote and roll back."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from stream_app.config import Settings
from stream_app.io.schemas import validate
from stream_app.io.topics import ensure_topics
from stream_app.monitoring.scorecard_service import ScorecardService, run_scorecard
from tests.integration.conftest import isolated_env
from tests.kafka_reader import read_topic
from tests.scorecard_streams import CUSTOMERS, PER_CUSTOMER, stream

REPO = Path(__file__).resolve().parents[2]
N = CUSTOMERS * PER_CUSTOMER


def compare_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **env, "COLUMNS": "200", "NO_COLOR": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "stream_app", "models", "compare", *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.mark.parametrize(("strength", "expected"), [(4.0, "promote"), (0.5, "roll back")])
def test_models_compare_reads_the_scorecard_records(kafka_bootstrap, tmp_path, strength, expected):
    env = isolated_env(kafka_bootstrap, tmp_path / "models", "champ", tmp_path, prefix="cmp")
    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=env["STREAM_APP_TOPIC_PREFIX"],
        app_id=env["STREAM_APP_APP_ID"],
        partitions=3,
    )
    ensure_topics(settings)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for topic, records in stream("champ", "chall", strength).items():
        for record in records:
            inner = record.get("challenger", record)
            key = inner["terminal_id"] if topic == "labels" else inner["customer_id"]
            producer.produce(settings.topic(topic), orjson.dumps(record), key=key.encode())
    assert producer.flush(30) == 0

    service = ScorecardService(horizon_s=60 * 86_400.0, k=100)
    totals = run_scorecard(settings, service, since_ms=None, until_end=True)
    assert (totals.transactions, totals.scores, totals.shadow, totals.labels) == (N, N, N, N)
    assert totals.pair_records == 2 * N
    metrics = [
        orjson.loads(m.value())
        for m in read_topic(
            kafka_bootstrap, settings.topic("metrics"), expect=totals.metrics_records
        )
    ]
    assert len(metrics) == totals.metrics_records
    for record in metrics:
        validate("metrics_record", record)
    assert {(r["model_version"], r["route"]) for r in metrics} == {
        ("champ", "champion"),
        ("chall", "shadow"),
    }
    for route in ("champion", "shadow"):  # every label in each slice's bands, once
        days = [r for r in metrics if r["route"] == route and r["granularity"] == "event_day"]
        assert sum(r["labels"] for r in days) == N
        for name in ("amount", "hour", "tenure"):
            assert sum(p["labels"] for r in days for p in r["slices"][name].values()) == N

    result = compare_cli(env, "chall", "--against", "champ", "--json", "--bootstrap", "300")
    assert result.returncode == 0, result.stderr
    lines = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert [w["window"] for w in lines] == ["shadow"]
    shadow = lines[0]
    assert shadow["verdict"] == expected, shadow["reason"]
    assert shadow["labels"] == {"champion": N, "challenger": N}
    assert shadow["customers"] == CUSTOMERS
    delta = shadow["metrics"]["average_precision"]["delta"]
    assert (delta["low"] > 0) if expected == "promote" else (delta["high"] < 0)

    table = compare_cli(env, "chall", "--against", "champ", "--bootstrap", "200")
    assert table.returncode == 0, table.stderr
    assert f"verdict (shadow): {expected}" in table.stdout
    print(table.stdout)
