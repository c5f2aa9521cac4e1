"""The bad-input corpus on the real broker (issue #6): every case of tests/data/bad_inputs/
interleaved with good traffic lands in the dead-letter topic with its reason and original bytes,
every good event is scored exactly once, and the worker never stops."""

import base64
import hashlib
import time
import urllib.error
import urllib.request
from collections import Counter
from datetime import UTC, datetime

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stream_app.io.deadletter import KEEP_BYTES, KEEP_KEY_BYTES, original_value
from stream_app.io.schemas import validate
from stream_app.pipeline.forward import forward_view
from stream_app.sources.producer import BulkProducer
from stream_app.sources.schedule import schedule
from stream_app.sources.simulator import simulate
from tests.bad_input_corpus import TOPICS, load_corpus
from tests.kafka_reader import read_topic

pytestmark = pytest.mark.integration

N_GOOD = 400


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def dead_letter_counts(port: int) -> dict[str, float]:
    status, text = get(port, "/metrics")
    assert status == 200
    return {
        s.labels["reason"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "stream_app_dead_letters_total"
    }


def digest(value: bytes | None) -> str | None:
    return None if value is None else hashlib.sha256(value).hexdigest()


def interleave(good: list, bad: list) -> list:
    """``good`` with ``bad`` spread evenly through it, both in their own order."""
    out, step = [], max(1, len(good) // (len(bad) + 1))
    bad_iter = iter(bad)
    for i, item in enumerate(good):
        out.append(item)
        if (i + 1) % step == 0:
            out += [b for b in [next(bad_iter, None)] if b is not None]
    return out + list(bad_iter)


def test_every_bad_input_is_dead_lettered_with_its_reason_and_nothing_good_is_lost(
    worker, app_env, app_settings, kafka_bootstrap
):
    port = int(app_env["STREAM_APP_WEB_PORT"])
    cases = load_corpus()
    items = list(
        simulate(
            n_customers=100,
            n_terminals=150,
            n_events=N_GOOD,
            seed=41,
            start=datetime(2026, 3, 1, tzinfo=UTC),
        )
    )
    topic = {name: app_settings.topic(declared) for name, declared in TOPICS.items()}
    # A case is found again in the DLQ by (source topic, key digest, value digest): all distinct.
    # One the terminal stage finds (via_repartition) holds its forward: found by event and
    # customer.
    expected = {
        (topic[c.topic], digest(c.key or None), digest(c.value)): c
        for c in cases
        if not c.via_repartition
    }
    by_event = {
        (orjson.loads(c.value)["event_id"], orjson.loads(c.value)["customer_id"]): c
        for c in cases
        if c.via_repartition
    }
    assert len(expected) + len(by_event) == len(cases)

    def sends(case):
        first = [(topic[case.topic], case.key, case.first, [])] if case.first else []
        return [*first, (topic[case.topic], case.key, case.value, list(case.headers))]

    # Phase 1: transactions, the bad ones spread through the good ones.
    records = list(schedule(items, labels=False))
    good_ids = [i.event["event_id"] for i in items]
    good_ids += [orjson.loads(c.first)["event_id"] for c in cases if c.first]
    good = [[(topic["transactions"], r.key.encode(), r.value, [])] for r in records]
    bad = [sends(c) for c in cases if c.topic != "labels"]
    with BulkProducer(app_settings) as producer:
        for group in interleave(good, bad):
            for name, key, value, headers in group:
                producer.produce(name, key, value, headers)
    phase1 = read_topic(kafka_bootstrap, app_settings.topic("scores"), expect=len(good_ids))
    assert len(phase1) >= len(good_ids), f"{len(phase1)} scores; worker:\n{worker.tail()}"

    # Phase 2, once the stream is past them: labels, the bad ones among labels for the good
    # events (which must be applied, not dead-lettered).
    good_labels = [
        [(topic["labels"], r.key.encode(), r.value, [])]
        for r in schedule(items)
        if r.topic == "labels"
    ]
    assert len(good_labels) == N_GOOD
    bad_labels = [sends(c) for c in cases if c.topic == "labels"]
    with BulkProducer(app_settings) as producer:
        for group in interleave(good_labels, bad_labels):
            for name, key, value, headers in group:
                producer.produce(name, key, value, headers)
    dlq = read_topic(
        kafka_bootstrap, app_settings.topic("transactions.dlq"), expect=len(cases), settle=5
    )
    scores = read_topic(kafka_bootstrap, app_settings.topic("scores"), expect=len(good_ids))

    # Every good event scored exactly once; nothing else scored.
    per_event = Counter(orjson.loads(m.value())["event_id"] for m in scores)
    assert set(per_event) == set(good_ids)
    assert max(per_event.values()) == 1, per_event.most_common(3)

    # One dead letter per bad record, each with its case's reason and original bytes.
    assert len(dlq) == len(cases), Counter(orjson.loads(m.value())["reason"] for m in dlq)
    seen = set()
    for message in dlq:
        letter = orjson.loads(message.value())
        validate("dead_letter", letter)
        key = base64.b64decode(letter["key_b64"]) if letter["key_b64"] else None
        key_digest = letter.get("key_sha256", digest(key))
        kept = original_value(letter)
        value_digest = letter.get("value_sha256", digest(kept))
        case = expected.get((letter["source"]["topic"], key_digest, value_digest))
        if case is None and letter["source"]["topic"] == topic["by-terminal"] and kept:
            fwd = forward_view(kept)
            case = by_event.get((fwd["event_id"], fwd["customer_id"]))
        assert case is not None, (letter["reason"], letter["message"], key)
        assert letter["reason"] == case.reason, (case.name, letter["message"])
        assert letter["message"]
        seen.add(case.name)
        if case.via_repartition:
            assert key == orjson.loads(case.value)["terminal_id"].encode()
            assert dict(message.headers() or [])["dlq.reason"] == case.reason.encode()
            continue
        kept_headers = [(n, base64.b64decode(v) if v else b"") for n, v in letter["headers"]]
        assert kept_headers == list(case.headers[: len(kept_headers)])
        assert letter.get("headers_dropped", 0) == len(case.headers) - len(kept_headers)
        if case.value is not None and len(case.value) > KEEP_BYTES:
            assert kept == case.value[:KEEP_BYTES]
            assert letter["value_bytes"] == len(case.value)
        else:
            assert kept == case.value
        assert (message.key() or None) == (case.key[:KEEP_KEY_BYTES] if case.key else None)
        assert dict(message.headers() or [])["dlq.reason"] == case.reason.encode()
    assert seen == {c.name for c in cases}

    # The worker never stopped: same process, alive, healthy, counting every reason.
    want = Counter(c.reason for c in cases)
    deadline = time.monotonic() + 30
    while True:
        counted = {r: n for r, n in dead_letter_counts(port).items() if n}
        if counted == want or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert counted == want
    assert worker.running, worker.tail()
    assert get(port, "/healthz")[0] == 200
    assert "exiting without committing" not in worker.log_text()


def test_odd_but_valid_records_are_scored(worker, app_settings, kafka_bootstrap):
    """What the corpus format cannot say (it lists dead letters): lower-case ``t``/``z`` times,
    garbage and oversized headers on a good transaction, Kafka timestamps in 1970 and 3000 are
    all scored, with nothing dead-lettered."""
    base = {"customer_id": "odd-c", "terminal_id": "odd-t", "amount": 12.5, "schema_version": 1}
    big = [("big", b"A" * 4_000)] * 200
    garbage = [("trace", b"\xff\x00\xfe"), ("", b"\x00"), ("empty", b"")]
    sends = [  # (event_id, event_time, headers, kafka timestamp ms)
        ("odd-lower-t", "2026-03-01t10:00:00Z", None, 0),
        ("odd-lower-z", "2026-03-01T10:00:01z", None, 0),
        ("odd-lower-tz", "2026-03-01t10:00:02z", None, 0),
        ("odd-garbage-headers", "2026-03-01T10:00:03Z", garbage, 0),
        ("odd-big-headers", "2026-03-01T10:00:04Z", big, 0),
        ("odd-ts-1970", "2026-03-01T10:00:05Z", None, 1),
        ("odd-ts-3000", "2026-03-01T10:00:06Z", None, 32_503_680_000_000),
    ]
    with BulkProducer(app_settings) as producer:
        for event_id, event_time, headers, stamp in sends:
            value = orjson.dumps({"event_id": event_id, "event_time": event_time, **base})
            producer.produce(app_settings.topic("transactions"), b"odd-c", value, headers, stamp)
    scores = read_topic(kafka_bootstrap, app_settings.topic("scores"), expect=len(sends))
    per_event = Counter(orjson.loads(m.value())["event_id"] for m in scores)
    assert per_event == Counter(e for e, *_ in sends), worker.tail()
    dlq = read_topic(kafka_bootstrap, app_settings.topic("transactions.dlq"), expect=0, settle=3)
    assert dlq == [], [orjson.loads(m.value())["message"] for m in dlq]
    assert worker.running, worker.tail()
