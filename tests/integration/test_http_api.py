"""The worker's HTTP API on the real broker (issue 17, items 1 and 2): interactive queries and
synchronous scoring, with one worker and with two.

One worker (module fixture) is fed a generated stream with its labels (up to the last
transaction's time, so every label is applied); then:

* every customer's and terminal's query equals the offline builder's features of its latest
  transaction (exactly), with the event time it reflects and the stage at the log end;
* a what-if score carries exactly the offline features of the same history plus the
  transaction, and leaves both states as they were;
* ``record=true`` answers with the envelope the stream published (found once on ``scores``),
  equal to the what-if asked just before; recording it again is the stream's ``duplicate_event``;
  no envelope within the timeout is a 504 naming where the transaction was published;
* bad input gets 422 with the dead-letter reason codes, on both paths;
* ``/openapi.json``'s schemas validate the envelopes of both paths and the stream's.

Two workers (and a third that joins): a query or a what-if asked of the worker that does not own
the key is forwarded to the one that does (same answer from both), and during the rebalance the
third one causes the answer is 503 with ``Retry-After``, never a 200 with other values.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import fastjsonschema
import numpy as np
import orjson
import pytest

from stream_app.client.http import HttpClient, NotFound, RecordTimeout, Rejected
from stream_app.config import REPO_ROOT, Settings
from stream_app.features.definitions import FEATURE_NAMES
from stream_app.features.state import CUSTOMER_FEATURES, TERMINAL_FEATURES
from stream_app.io.partitioning import expected_partition
from stream_app.io.schemas import validate
from stream_app.sources.schedule import LabelledTransaction
from tests.faults.harness import Stream, Worker, make_stream, publish, read_all, worker_env
from tests.integration.conftest import free_port, isolated_env
from tests.kafka_reader import end_offsets, processed_by, wait_processed

pytestmark = pytest.mark.integration

PARTITIONS = 3
CUSTOMER_COLUMNS = [FEATURE_NAMES.index(n) for n in CUSTOMER_FEATURES]
TERMINAL_COLUMNS = [FEATURE_NAMES.index(n) for n in TERMINAL_FEATURES]


@dataclass
class Setup:
    worker: Worker
    settings: Settings
    stream: Stream
    url: str
    bootstrap: str


def _settings(env: dict[str, str]) -> Settings:
    return Settings(
        kafka_bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"],
        topic_prefix=env["STREAM_APP_TOPIC_PREFIX"],
        app_id=env["STREAM_APP_APP_ID"],
        partitions=PARTITIONS,
    )


def _up_to_last_transaction(stream: Stream) -> list:
    """The stream's records up to its last transaction: the labels known by then."""
    records = stream.records
    last = max(i for i, r in enumerate(records) if r.topic == "transactions")
    return records[: last + 1]


def _url(worker: Worker) -> str:
    return f"http://127.0.0.1:{worker.web_port}"


def _wait_ready(workers: list[Worker], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(w.readyz()[0] == 200 for w in workers):
            return
        time.sleep(0.3)
    raise AssertionError(f"workers not ready: {[w.readyz() for w in workers]}")


@pytest.fixture(scope="module")
def setup(kafka_bootstrap, models_dir, champion_version, tmp_path_factory) -> Iterator[Setup]:
    home = tmp_path_factory.mktemp("http-api")
    env = worker_env(isolated_env(kafka_bootstrap, models_dir, champion_version, home, "api"))
    settings = _settings(env)
    stream = make_stream(800, seed=17, n_customers=40, n_terminals=60, labels=True)
    worker = Worker(home / "w1", env)
    worker.start()
    try:
        worker.wait_ready()
        publish(settings, _up_to_last_transaction(stream))
        wait_processed(kafka_bootstrap, timeout=180, **processed_by(settings))
        _wait_ready([worker])
        yield Setup(worker, settings, stream, _url(worker), kafka_bootstrap)
    finally:
        worker.stop()


def _last_rows(stream: Stream, field: str) -> dict[str, tuple[str, np.ndarray]]:
    """Per customer (or terminal) id: (event_time, offline feature row) of its last event."""
    offline = stream.offline
    last: dict[str, tuple[str, np.ndarray]] = {}
    for item in stream.items:  # event-time order: the last one wins
        event = item.event
        last[event[field]] = (event["event_time"], offline[event["event_id"]])
    return last


def _same_time(a: str | None, b: str) -> bool:
    assert a is not None
    return datetime.fromisoformat(a) == datetime.fromisoformat(b)


def test_queries_equal_the_offline_builder(setup: Setup):
    stream, settings = setup.stream, setup.settings
    ends = end_offsets(setup.bootstrap, settings.topic("transactions"))
    checked = 0
    with HttpClient(setup.url) as api:
        for entity, field, columns, ask in (
            ("customer", "customer_id", CUSTOMER_COLUMNS, api.customer_features),
            ("terminal", "terminal_id", TERMINAL_COLUMNS, api.terminal_features),
        ):
            for key, (event_time, row) in _last_rows(stream, field).items():
                view = ask(key)
                assert view.entity == entity and view.id == key
                assert view.partition == expected_partition(key.encode(), PARTITIONS)
                assert _same_time(view.event_time, event_time), (key, view.event_time)
                assert _same_time(view.features_at, event_time)
                expected = dict(
                    zip(
                        CUSTOMER_FEATURES if entity == "customer" else TERMINAL_FEATURES,
                        row[columns].tolist(),
                        strict=True,
                    )
                )
                assert view.features == expected, (entity, key, view.features, expected)
                assert view.offsets and all(o["offset"] >= 0 for o in view.offsets)
                assert view.served_by == setup.url
                if entity == "customer":
                    assert {o["topic"] for o in view.offsets} == {settings.topic("transactions")}
                    (position,) = [
                        s for s in view.stage if s["topic"] == settings.topic("transactions")
                    ]
                    assert position["next_offset"] == ends[view.partition]
                    assert position["lag"] == 0
                checked += 1
        with pytest.raises(NotFound) as missing:
            api.customer_features("nobody-has-this-id")
        assert missing.value.reason == "unknown_entity"
    print(f"\n{checked} entity queries equal to the offline builder's features")
    assert checked == len({i.event["customer_id"] for i in stream.items}) + len(
        {i.event["terminal_id"] for i in stream.items}
    )


def _transaction(stream: Stream, seconds_after_last: float, event_id: str) -> dict:
    """A new transaction of the busiest customer at its busiest terminal, after the stream."""
    items = stream.items
    last = datetime.fromisoformat(items[-1].event["event_time"])
    customers = [i.event["customer_id"] for i in items]
    customer = max(set(customers), key=customers.count)
    terminals = [i.event["terminal_id"] for i in items if i.event["customer_id"] == customer]
    terminal = max(set(terminals), key=terminals.count)
    when = (last + timedelta(seconds=seconds_after_last)).isoformat().replace("+00:00", "Z")
    return {
        "event_id": event_id,
        "event_time": when,
        "customer_id": customer,
        "terminal_id": terminal,
        "amount": 77.7,
        "schema_version": 1,
    }


def _offline_row(stream: Stream, tx: dict) -> list[float]:
    """The offline builder's features of ``tx`` after the whole stream."""
    extended = Stream([*stream.items, LabelledTransaction(tx, 0)], labels=True)
    return extended.offline[tx["event_id"]].tolist()


def _views(api: HttpClient, tx: dict) -> tuple[dict, dict]:
    def strip(view):
        return {k: v for k, v in view.__dict__.items() if k not in ("as_of", "stage")}

    return (
        strip(api.customer_features(tx["customer_id"], samples=True)),
        strip(api.terminal_features(tx["terminal_id"], samples=True)),
    )


def test_what_if_scores_the_offline_features_and_changes_nothing(setup: Setup):
    tx = _transaction(setup.stream, 1.0, "what-if-1")
    with HttpClient(setup.url) as api:
        before = _views(api, tx)
        first = api.score(tx, features=True)
        second = api.score(tx)
        after = _views(api, tx)
    assert first.mode == "what-if"
    validate("score_envelope", first.envelope)
    assert first.envelope["event_id"] == "what-if-1"
    features = [first.envelope["features"][name] for name in FEATURE_NAMES]
    assert features == _offline_row(setup.stream, tx)
    assert (
        second.score == first.score
        and second.envelope["feature_hash"] == first.envelope["feature_hash"]
    )
    assert after == before
    assert "what-if-1" not in {s["event_id"] for s in after[0]["samples"]}
    print(f"\nwhat-if {first.decision} {first.score:.4f}; states unchanged")


def test_record_true_answers_with_the_streams_envelope(setup: Setup):
    tx = _transaction(setup.stream, 2.0, "recorded-1")
    with HttpClient(setup.url, timeout=30) as api:
        what_if = api.score(tx, features=True)
        started = time.monotonic()
        recorded = api.score(tx, record=True, timeout=20)
        took = time.monotonic() - started
        customer = api.customer_features(tx["customer_id"], samples=True)
        with pytest.raises(Rejected) as again:
            api.score(tx, record=True, timeout=20)
        with pytest.raises(Rejected) as what_if_again:
            api.score(tx)
        with pytest.raises(RecordTimeout) as late:  # published, but not scored within 1 ms
            api.score(_transaction(setup.stream, 2.5, "recorded-2"), record=True, timeout=0.001)
    assert recorded.mode == "recorded"
    validate("score_envelope", recorded.envelope)
    assert recorded.envelope["event_id"] == "recorded-1"
    assert recorded.envelope["features"] == what_if.envelope["features"]
    assert recorded.score == what_if.score
    assert recorded.envelope["feature_hash"] == what_if.envelope["feature_hash"]
    on_topic = [
        orjson.loads(m.value)
        for m in read_all(setup.bootstrap, setup.settings.topic("scores"))
        if orjson.loads(m.value)["event_id"] == "recorded-1"
    ]
    assert len(on_topic) == 1 and on_topic[0] == recorded.envelope
    assert _same_time(customer.event_time, tx["event_time"])
    assert "recorded-1" in {s["event_id"] for s in customer.samples or []}
    assert again.value.reason == "duplicate_event"
    assert what_if_again.value.reason == "duplicate_event"
    assert late.value.status == 504 and late.value.reason == "record_timeout"
    assert "partition" in late.value.message and "offset" in late.value.message
    print(f"\nrecorded and answered in {took * 1000:.0f} ms: {recorded.decision}")


GOOD = {
    "event_id": "bad-1",
    "event_time": "2026-03-02T00:00:00Z",
    "customer_id": "c1",
    "terminal_id": "t1",
    "amount": 5,
    "schema_version": 1,
}


def _with(**changes) -> bytes:
    body = {**GOOD, **changes}
    return orjson.dumps({k: v for k, v in body.items() if v is not None})


BAD = [
    (b"{not json", "invalid_json"),
    (b"", "empty_value"),
    (b"[1,2,3]", "not_an_object"),
    (b"\xff\xfe\xfd", "not_utf8"),
    (_with(amount=None), "missing_field"),
    (_with(amount="12"), "wrong_type"),
    (_with(amount=-5), "out_of_range"),
    (_with(event_time="yesterday"), "bad_timestamp"),
    (_with(event_time="1971-03-01T00:00:00Z"), "bad_timestamp"),
    (_with(schema_version=9), "unsupported_schema_version"),
    (_with(surprise=True), "unknown_field"),
    (_with(event_id="bad id"), "invalid_id"),
    (b'{"event_id":"a","event_id":"b"}', "duplicate_key"),
    (b"x" * 70_000, "too_large"),
]


def test_invalid_input_gets_422_with_the_dead_letter_reason(setup: Setup):
    problem = fastjsonschema.compile(_openapi(setup)["components"]["schemas"]["Problem"])
    seen = []
    for record in (False, True):
        for body, reason in BAD:
            status, _headers, payload = _post(setup.url, body, record)
            answer = orjson.loads(payload)
            assert (status, answer["reason"]) == (422, reason), (body[:60], answer)
            problem(answer)
            assert answer["message"]
            seen.append(reason)
    print(f"\n{len(seen)} bad bodies: 422 with {len(set(seen))} reason codes")


def _post(url: str, body: bytes, record: bool = False) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(
        f"{url}/v1/score" + ("?record=true" if record else ""),
        data=body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    return _open(request)


def _open(request) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _openapi(setup: Setup) -> dict:
    with HttpClient(setup.url) as api:
        return api.openapi()


def test_openapi_document_validates_both_paths_envelopes(setup: Setup):
    document = _openapi(setup)
    assert document["openapi"] == "3.1.0"
    assert set(document["paths"]) >= {
        "/v1/customers/{id}/features",
        "/v1/terminals/{id}/features",
        "/v1/score",
        "/openapi.json",
    }
    schemas = document["components"]["schemas"]
    envelope = fastjsonschema.compile(schemas["ScoreEnvelope"])
    transaction = fastjsonschema.compile(schemas["Transaction"])
    customer_view = fastjsonschema.compile(schemas["CustomerFeatures"])
    tx = _transaction(setup.stream, 3.0, "openapi-1")
    transaction(tx)
    with HttpClient(setup.url) as api:
        envelope(api.score(tx).envelope)
        envelope(api.score(tx, features=True).envelope)
        status, _, body = _open(
            urllib.request.Request(f"{setup.url}/v1/customers/{tx['customer_id']}/features")
        )
        assert status == 200
        customer_view(orjson.loads(body))
    streamed = read_all(setup.bootstrap, setup.settings.topic("scores"))
    assert streamed
    for message in streamed[:200]:
        envelope(orjson.loads(message.value))
    with pytest.raises(fastjsonschema.JsonSchemaValueException):
        envelope({**orjson.loads(streamed[0].value), "score": 2.0})


def test_the_readme_example_runs(setup: Setup):
    """The fenced python block of the README's "Ask the live state" section, against the
    worker (its URL for the README's default one)."""
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("## Ask the live state / score synchronously", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the section should hold one python example"
    code = blocks[0].replace("http://127.0.0.1:6066", setup.url)
    exec(compile(code, "README.md (Ask the live state)", "exec"), {})


# --- two workers -----------------------------------------------------------------------------


def _get(url: str) -> tuple[int, dict, bytes]:
    return _open(urllib.request.Request(url))


def test_two_workers_forward_and_answer_503_during_a_rebalance(
    kafka_bootstrap, models_dir, champion_version, tmp_path
):
    env = worker_env(isolated_env(kafka_bootstrap, models_dir, champion_version, tmp_path, "api2"))
    settings = _settings(env)
    stream = make_stream(300, seed=29, n_customers=30, n_terminals=40)
    workers = [
        Worker(
            tmp_path / name,
            {
                **env,
                "STREAM_APP_WEB_PORT": str(free_port()),
                "STREAM_APP_STATE_DIR": str(tmp_path / name / "state"),
            },
        )
        for name in ("w1", "w2", "w3")
    ]
    w1, w2, w3 = workers
    urls = [_url(w) for w in workers]
    try:
        for w in (w1, w2):
            w.start()
            w.wait_ready()
        time.sleep(5)  # the second join's rebalance settles
        _wait_ready([w1, w2])
        publish(settings, stream.records)
        wait_processed(kafka_bootstrap, timeout=120, **processed_by(settings))
        _wait_ready([w1, w2])
        last = _last_rows(stream, "customer_id")
        expected = {
            key: dict(zip(CUSTOMER_FEATURES, row[CUSTOMER_COLUMNS].tolist(), strict=True))
            for key, (_, row) in last.items()
        }
        # Every customer asked of both workers: one owner answers both, the same body.
        forwarded = {urls[0]: 0, urls[1]: 0}
        owners: dict[str, str] = {}
        for key in expected:
            answers = []
            for asked in urls[:2]:
                status, _headers, body = _get(f"{asked}/v1/customers/{key}/features")
                assert status == 200, (asked, key, body)
                view = orjson.loads(body)
                assert view["features"] == expected[key]
                answers.append(view)
                if view["served_by"] != asked:
                    forwarded[asked] += 1
            assert answers[0]["served_by"] == answers[1]["served_by"]
            assert answers[0]["offsets"] == answers[1]["offsets"]
            owners[key] = answers[0]["served_by"]
        assert all(n > 0 for n in forwarded.values()), forwarded
        # A what-if whose customer and terminal live on different workers: the same envelope
        # (but for its timing) whichever worker is asked, with the offline features.
        terminal_owner = {}
        for item in stream.items:
            t = item.event["terminal_id"]
            if t not in terminal_owner:
                status, _, body = _get(f"{urls[0]}/v1/terminals/{t}/features")
                assert status == 200
                terminal_owner[t] = orjson.loads(body)["served_by"]
        customer, terminal = next(
            (c, t) for c in owners for t in terminal_owner if owners[c] != terminal_owner[t]
        )
        when = datetime.fromisoformat(stream.items[-1].event["event_time"]) + timedelta(seconds=1)
        tx = {
            "event_id": "split-1",
            "event_time": when.isoformat().replace("+00:00", "Z"),
            "customer_id": customer,
            "terminal_id": terminal,
            "amount": 250.0,
            "schema_version": 1,
        }
        results = []
        for url in urls[:2]:
            with HttpClient(url) as api:
                results.append(api.score(tx, features=True).envelope)
        assert results[0]["features"] == results[1]["features"]
        assert results[0]["score"] == results[1]["score"]
        assert [results[0]["features"][n] for n in FEATURE_NAMES] == _offline_row(stream, tx)

        # A third worker joins: while the group rebalances, 503 + Retry-After, never other data.
        keys = list(expected)[:6]
        seen: list[tuple[int, str | None, str]] = []
        wrong: list[str] = []
        stop = threading.Event()

        def poll() -> None:
            while not stop.is_set():
                for key in keys:
                    for url in urls[:2]:
                        status, headers, body = _get(f"{url}/v1/customers/{key}/features")
                        seen.append((status, headers.get("Retry-After"), url))
                        if status == 200 and orjson.loads(body)["features"] != expected[key]:
                            wrong.append(f"{url} {key}: {body[:200]!r}")
                time.sleep(0.01)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        w3.start()
        w3.wait_ready()
        time.sleep(3)
        _wait_ready([w1, w2, w3])
        time.sleep(2)
        stop.set()
        poller.join(30)
        after = {}
        for key in expected:
            status, _, body = _get(f"{urls[2]}/v1/customers/{key}/features")
            assert status == 200, body
            view = orjson.loads(body)
            assert view["features"] == expected[key]
            after[key] = view["served_by"]
    finally:
        for w in workers:
            w.stop()
    unavailable = [s for s in seen if s[0] == 503]
    other = [s for s in seen if s[0] not in (200, 503)]
    print(
        f"\n{len(expected)} customers asked of both workers: forwarded {forwarded}; during the "
        f"third worker's join {len(seen)} queries, {len(unavailable)} answered 503 "
        f"(Retry-After {sorted({s[1] for s in unavailable})}), others 200 with the same values; "
        f"owners after: {sorted(set(after.values()))}"
    )
    assert not wrong, wrong[:3]
    assert not other, other[:5]
    assert unavailable, "no 503 seen during the rebalance"
    assert all(s[1] is not None and int(s[1]) >= 1 for s in unavailable)
    assert urls[2] in after.values()
