"""The bad-input corpus (tests/data/bad_inputs/) without a broker: every case gets exactly its
reason code from the decoders and from the two stages, good records around it are scored, and
each dead letter keeps the original bytes."""

import base64
import hashlib
from collections import Counter

import orjson
import pytest

from stream_app.features.state import CustomerState, Retention
from stream_app.io.codecs import decode_label, decode_transaction
from stream_app.io.deadletter import (
    KEEP_BYTES,
    KEEP_KEY_BYTES,
    MAX_MESSAGE_CHARS,
    Reason,
    Rejection,
    SourcePosition,
    dead_letter_message,
    dead_letter_record,
    encode_dead_letter,
    original_value,
)
from stream_app.io.schemas import validate
from stream_app.pipeline.customer_stage import CustomerStage, InputRecord
from stream_app.pipeline.forward import ForwardError, decode_forward, forward_view
from stream_app.pipeline.scoring_stage import ScoringStage, forward_rejection
from stream_app.scoring.model import ScoringModel
from tests.bad_input_corpus import CORPUS_DIR, listed_files, load_corpus

CASES = load_corpus()
MAX_BYTES = 65_536
RET = Retention.for_lateness(3600.0)
# Reasons a stage gives after decoding succeeded (the key, the customer's or terminal's state).
STAGE_REASONS = {
    "null_key",
    "key_mismatch",
    "duplicate_event",
    "too_late",
    "unknown_event",
    "event_id_reused",
    "label_mismatch",
}


def test_corpus_covers_every_reason_and_both_topics():
    kinds = {(c.topic, c.kind) for c in CASES}
    assert len(kinds) == len(CASES) >= 25
    reasons = Counter(c.reason for c in CASES)
    # Every code an input can cause has an example; processing_error only comes from a bug, and
    # misrouted_key only with STREAM_APP_MISROUTED_KEYS=dead_letter (test_misrouted_keys.py).
    assert set(reasons) == {r.value for r in Reason} - {"processing_error", "misrouted_key"}
    assert {c.topic for c in CASES} == {"transactions", "by-terminal", "labels"}
    label_reasons = {c.reason for c in CASES if c.topic == "labels"}
    assert {"unknown_event", "null_key", "key_mismatch", "non_finite_number"} <= label_reasons
    assert {"label_mismatch", "duplicate_key", "bad_timestamp"} <= label_reasons
    # Labels come after every transaction (the unknown-event ones need the stream's progress).
    topics = [c.topic for c in CASES]
    order = ["transactions", "by-terminal", "labels"]
    assert topics == sorted(topics, key=order.index)
    on_disk = {str(p.relative_to(CORPUS_DIR)) for p in CORPUS_DIR.rglob("*.bin")}
    assert on_disk == listed_files()


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.reason not in STAGE_REASONS], ids=lambda c: c.name
)
def test_decoders_give_each_case_its_reason(case):
    got = decoder(case.topic)(case.value, MAX_BYTES)
    assert isinstance(got, Rejection), got
    assert got.reason.value == case.reason, got.message
    assert got.message


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.reason in STAGE_REASONS], ids=lambda c: c.name
)
def test_stage_cases_decode_cleanly(case):
    """Their values are valid: what rejects them is the key or the state, not the decoder."""
    assert not isinstance(decoder(case.topic)(case.value, MAX_BYTES), Rejection)


def decode_by_terminal(raw: bytes | None, max_bytes: int) -> object:
    """What the terminal stage makes of a record of the repartition topic."""
    try:
        return decode_forward(raw)
    except ForwardError as exc:
        return forward_rejection(raw, exc)


def decoder(topic: str):
    return {
        "transactions": decode_transaction,
        "labels": decode_label,
        "by-terminal": decode_by_terminal,
    }[topic]


def run_corpus(model):
    """Every case (and its ``first``) through both stages, in corpus order, one per batch."""
    customers, terminals = {}, {}
    s1 = CustomerStage(customers, RET, 3600.0, MAX_BYTES)
    s2 = ScoringStage(terminals, model, RET, "labels", MAX_BYTES)
    offsets = Counter()

    def record(topic, key, value, headers=()):
        offsets[topic] += 1
        return InputRecord(key, value, SourcePosition(topic, 0, offsets[topic], 1000), headers)

    dead, scored = [], []
    for case in CASES:
        records = [record(case.topic, case.key, case.first)] if case.first else []
        records.append(record(case.topic, case.key, case.value, case.headers))
        for rec in records:
            if case.topic == "transactions":
                out1 = s1.process([rec])
                dead += out1.dead_letters
                stage2 = [record("by", f.key, f.value) for f in out1.forwards]
            elif case.topic == "by-terminal":
                stage2 = [record("by", rec.key, rec.value, rec.headers)]
            else:
                stage2 = [rec]
            out2 = s2.process(stage2)
            dead += out2.dead_letters
            scored += [orjson.loads(v)["event_id"] for _, v in out2.scores]
    return dead, scored, {k: v.value for k, v in s1.states.cache.items()}


def test_stages_dead_letter_every_case_with_its_reason_and_score_the_good_ones(model_dir):
    dead, scored, customers = run_corpus(ScoringModel.load(model_dir))
    assert scored == ["corpus-dup-1", "corpus-late-1", "corpus-reuse-1"]  # each first, once
    assert [d.rejection.reason.value for d in dead] == [c.reason for c in CASES]
    # The duplicates did not enter the window (the features stay as without them).
    state = customers["corpus-dup"]
    assert (state["t"], state["a"], state["i"]) == ([1772445600.0], [25.0], ["corpus-dup-1"])
    for item, case in zip(dead, CASES, strict=True):
        if case.via_repartition:  # the forward of the case's value, keyed by its terminal
            fwd, tx = forward_view(item.record.value), orjson.loads(case.value)
            assert {k: fwd[k] for k in ("event_id", "customer_id", "terminal_id")} == {
                k: tx[k] for k in ("event_id", "customer_id", "terminal_id")
            }
            assert item.record.key == tx["terminal_id"].encode()
            assert "at partition" in item.rejection.message
            continue
        assert item.record.value == case.value and item.record.key == case.key
        assert tuple(item.record.headers) == case.headers
        letter = dead_letter_record(
            item.rejection, item.record.position, item.record.key, item.record.value
        )
        validate("dead_letter", letter)
        assert len(encode_dead_letter(letter)) < 500_000
        assert letter["reason"] == case.reason
        if case.value is not None and len(case.value) > KEEP_BYTES:
            assert original_value(letter) == case.value[:KEEP_BYTES]
            assert letter["value_bytes"] == len(case.value)
            assert letter["value_sha256"] == hashlib.sha256(case.value).hexdigest()
        else:
            assert original_value(letter) == case.value
            assert "value_bytes" not in letter


def test_dead_letter_of_a_huge_record_fits_one_kafka_request():
    value, key = b"v" * 990_000, b"k" * 300_000
    letter = dead_letter_record(
        Rejection(Reason.TOO_LARGE, "m" * 5_000), SourcePosition("t", 0, 1), key, value
    )
    validate("dead_letter", letter)
    assert len(encode_dead_letter(letter)) < 750_000  # the producer's limit is 1,000,000
    assert letter["key_bytes"] == 300_000 and len(original_value(letter) or b"") == KEEP_BYTES
    assert base64.b64decode(letter["key_b64"]) == key[:KEEP_KEY_BYTES]
    assert len(letter["message"]) == MAX_MESSAGE_CHARS


def test_the_kafka_record_of_a_dead_letter_fits_whatever_the_input_carried():
    # Oversized everything: value, key and 200 headers of 10 KB (more than any broker accepts).
    value, key = b"v" * 1_000_000, b"k" * 1_000_000
    headers = [(f"h{i}", bytes([65 + i % 26]) * 10_000) for i in range(200)]
    kafka_key, kafka_value, kafka_headers = dead_letter_message(
        Rejection(Reason.TOO_LARGE, "m"), SourcePosition("t", 0, 1), key, value, headers
    )
    letter = orjson.loads(kafka_value)
    validate("dead_letter", letter)
    kept = [(name, base64.b64decode(b64)) for name, b64 in letter["headers"]]
    assert kept == headers[:6]  # 6 x (2 + 10,000) bytes fit in 65,536, the 7th does not
    assert letter["headers_dropped"] == 194
    assert kafka_headers == [*headers[:6], ("dlq.reason", b"too_large")]
    assert kafka_key == key[:KEEP_KEY_BYTES]
    total = len(kafka_key) + len(kafka_value) + sum(len(n) + len(v) for n, v in kafka_headers)
    assert total < 600_000  # the producer's limit is 1,000,000


def test_a_dead_letter_of_an_ordinary_record_keeps_key_and_headers_whole():
    headers = [("trace", b"abc"), ("empty", None)]
    kafka_key, kafka_value, kafka_headers = dead_letter_message(
        Rejection(Reason.INVALID_JSON, "m"), SourcePosition("t", 2, 7), b"c1", b"{", headers
    )
    letter = orjson.loads(kafka_value)
    assert kafka_key == b"c1"
    assert kafka_headers == [("trace", b"abc"), ("empty", b""), ("dlq.reason", b"invalid_json")]
    assert letter["headers"] == [["trace", "YWJj"], ["empty", None]]
    assert "headers_dropped" not in letter and "key_bytes" not in letter


def tx(event_id, time, amount=10.0, customer="c"):
    return orjson.dumps(
        {
            "event_id": event_id,
            "event_time": time,
            "customer_id": customer,
            "terminal_id": "t",
            "amount": amount,
            "schema_version": 1,
        }
    )


def test_a_duplicate_changes_no_feature_and_a_replay_is_still_a_replay():
    times = [f"2026-03-0{d}T10:00:00Z" for d in range(1, 6)]
    events = [(f"e{i}", t, 10.0 * (i + 1)) for i, t in enumerate(times)]

    def run(values):
        stage = CustomerStage({}, RET, 3600.0, MAX_BYTES)
        recs = [
            InputRecord(b"c", v, SourcePosition("transactions", 0, n, 0))
            for n, v in enumerate(values)
        ]
        return stage, recs, stage.process(recs)

    clean = [tx(*e) for e in events]
    # e1 sent again; e0 again with another amount, two days behind (a duplicate, not too late).
    with_dups = [*clean[:3], tx("e1", times[1], 20.0), tx("e0", times[0], 999.0), *clean[3:]]
    _, _, want = run(clean)
    stage, recs, got = run(with_dups)
    assert [d.rejection.reason for d in got.dead_letters] == [Reason.DUPLICATE_EVENT] * 2

    def features(out):
        return [(f.key, forward_view(f.value)["features"]) for f in out.forwards]

    assert features(got) == features(want)
    again = stage.process(recs[2:])  # a restart re-reads offsets 2..6: replays, not duplicates,
    assert again.replayed == 3  # but the duplicates at 3 and 4 are dead-lettered again
    assert [(d.record.position.offset, d.rejection) for d in again.dead_letters] == [
        (d.record.position.offset, d.rejection) for d in got.dead_letters
    ]
    assert features(again) == features(got)[2:]


def test_state_written_before_ids_were_kept_still_loads():
    state = CustomerState({"t": [1.0, 2.0], "a": [5.0, 6.0], "o": 7})
    assert state.value["i"] == [None, None] and not state.holds(2.0, "e1")
    assert state.apply(3.0, 1.0, 8, 100.0, "e1") and state.holds(3.0, "e1")
    assert not state.holds(2.0, "e1")  # an event is its id at its time
    assert state.value["i"] == [None, None, "e1"]
    state.apply(101.5, 1.0, 9, 100.0, "e2")  # evicts through 1.5: the ids follow the times
    assert state.value["t"] == [2.0, 3.0, 101.5] and state.value["i"] == [None, "e1", "e2"]


def label(event_id, time, fraud=1, terminal="t"):
    return orjson.dumps(
        {
            "event_id": event_id,
            "customer_id": "c",
            "terminal_id": terminal,
            "event_time": time,
            "label": fraud,
            "label_time": "2026-03-20T00:00:00Z",
            "schema_version": 1,
        }
    )


def test_early_labels_wait_and_labels_behind_the_stream_are_unknown(model_dir):
    model = ScoringModel.load(model_dir)
    customers, terminals = {}, {}
    s1 = CustomerStage(customers, RET, 3600.0, MAX_BYTES)
    s2 = ScoringStage(terminals, model, RET, "labels", MAX_BYTES, source_partitions=1)
    offsets = Counter()

    def send(topic, value, key=b"t"):
        offsets[topic] += 1
        rec = InputRecord(key, value, SourcePosition(topic, 0, offsets[topic], 0))
        if topic == "transactions":
            fwd = s1.process([rec]).forwards
            return s2.process([InputRecord(f.key, f.value, rec.position) for f in fwd])
        return s2.process([rec])

    # Nothing seen yet: any label may be early.
    out = send("labels", label("x0", "2026-01-01T00:00:00Z"))
    assert out.dead_letters == [] and out.labels.pending_or_unknown == 1
    send("transactions", tx("e1", "2026-03-10T12:00:00Z"), b"c")
    # 30 minutes behind the stream (inside the lateness): may still come, waits pending.
    out = send("labels", label("e0", "2026-03-10T11:30:00Z"))
    assert out.dead_letters == [] and out.labels.pending_or_unknown == 1
    # 2 hours behind: its transaction would have come before e1. Fraud or genuine: unknown.
    for fraud in (1, 0):
        out = send("labels", label("never", "2026-03-10T10:00:00Z", fraud))
        assert [d.rejection.reason for d in out.dead_letters] == [Reason.UNKNOWN_EVENT]
    assert "never" not in s2.states.get("t").p
    # A known event's label is applied; the early one applies when its transaction arrives.
    assert send("labels", label("e1", "2026-03-10T12:00:00Z")).labels.applied == 1
    send("transactions", tx("e0", "2026-03-10T11:30:00Z"), b"c")
    assert s2.states.get("t").value["f"] == [1.0, 1.0]
    assert s2.states.get("t").p == {"x0": 1767225600.0}


def test_unknown_label_horizon_waits_for_every_source_partition(model_dir):
    """With a transactions partition not seen yet, only events older than the retention are
    unknown: the unseen partition may still bring the transaction."""
    model = ScoringModel.load(model_dir)
    stage = ScoringStage({}, model, RET, "labels", MAX_BYTES, source_partitions=2)
    s1 = CustomerStage({}, RET, 3600.0, MAX_BYTES)
    fwd = s1.process(
        [InputRecord(b"c", tx("e1", "2026-03-10T12:00:00Z"), SourcePosition("tx", 0, 0, 0))]
    ).forwards
    stage.process([InputRecord(f.key, f.value, SourcePosition("by", 0, 0, 0)) for f in fwd])
    t_e1 = 1773144000.0
    assert stage.label_horizon(0) == t_e1 - 7 * 86_400 - RET.terminal_s  # skew cap
    assert stage.label_horizon(1) == float("-inf")
    recent = stage.process(
        [InputRecord(b"t", label("n1", "2026-03-09T00:00:00Z"), SourcePosition("labels", 0, 1))]
    )
    assert recent.dead_letters == [] and recent.labels.pending_or_unknown == 1
    old = stage.process(
        [InputRecord(b"t", label("n2", "2026-01-01T00:00:00Z"), SourcePosition("labels", 0, 2))]
    )
    assert [d.rejection.reason for d in old.dead_letters] == [Reason.UNKNOWN_EVENT]
