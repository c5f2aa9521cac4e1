"""Waiting for Kafka before the worker starts: probes answer, refused credentials do not wait."""

import urllib.error
import urllib.request

import orjson
import pytest

from stream_app.config import Settings
from stream_app.exceptions import KafkaAccessError, KafkaUnreachable
from stream_app.monitoring.startup import MAX_BACKOFF_S, wait_for_kafka
from tests.integration.conftest import free_port


def get(port: int, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, orjson.loads(err.read())


def test_waits_with_backoff_and_answers_probes_until_kafka_answers():
    port = free_port()
    settings = Settings(web_port=port, web_bind="127.0.0.1")
    outcomes = [KafkaUnreachable("cannot reach Kafka at x:1")] * 7 + [None]
    sleeps: list[float] = []
    said: list[str] = []
    seen: list[tuple[int, dict]] = []

    def check(_: Settings) -> None:
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        seen.append(get(port, "/readyz"))
        seen.append(get(port, "/healthz"))

    assert wait_for_kafka(settings, check=check, sleep=sleep, say=said.append) == 7
    assert sleeps == [1.0, 2.0, 4.0, 8.0, 16.0, MAX_BACKOFF_S, MAX_BACKOFF_S]
    status, body = seen[0]
    assert status == 503 and body["failing"] == ["kafka"]
    assert body["checks"]["kafka"]["detail"] == (
        "waiting for Kafka (attempt 1): cannot reach Kafka at x:1"
    )
    assert seen[1][0] == 200
    assert said[0].startswith("waiting for Kafka (attempt 1, next in 1 s;")
    assert said[-1] == "Kafka answered after 7 failed attempt(s): starting"
    with pytest.raises(urllib.error.URLError):  # the port is free again, for Faust
        get(port, "/readyz")


def test_refused_credentials_end_it_at_once():
    def check(_: Settings) -> None:
        raise KafkaAccessError("authentication failed: check KAFKA_SASL_PASSWORD")

    with pytest.raises(KafkaAccessError, match="authentication failed"):
        wait_for_kafka(Settings(web_enabled=False), check=check, sleep=lambda s: None)


def test_kafka_up_at_once_opens_no_port():
    port = free_port()
    assert wait_for_kafka(Settings(web_port=port), check=lambda s: None, say=print) == 0
    with pytest.raises(urllib.error.URLError):
        get(port, "/healthz")
