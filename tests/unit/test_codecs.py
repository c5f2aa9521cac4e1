"""Boundary decoding: each kind of bad input gets its own reason code; good input passes."""

import orjson
import pytest

from stream_app.io.codecs import Label, Transaction, decode_label, decode_transaction
from stream_app.io.deadletter import (
    Reason,
    Rejection,
    SourcePosition,
    dead_letter_record,
    original_value,
)
from stream_app.io.schemas import validate

NOW = 1_800_000_000.0
GOOD = {
    "event_id": "e1",
    "event_time": "2018-04-01T00:00:31Z",
    "customer_id": "596",
    "terminal_id": "3156",
    "amount": 57.16,
    "schema_version": 1,
}


def tx(**changes):
    body = {**GOOD, **changes}
    return orjson.dumps({k: v for k, v in body.items() if v is not ...})


def test_good_transaction_decodes_with_epoch_time():
    got = decode_transaction(tx(), now=NOW)
    assert got == Transaction("e1", "2018-04-01T00:00:31Z", 1522540831.0, "596", "3156", 57.16)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, Reason.EMPTY_VALUE),
        (b"", Reason.EMPTY_VALUE),
        (b"\xff\xfe{", Reason.NOT_UTF8),
        (b"{not json", Reason.INVALID_JSON),
        (b"[1, 2]", Reason.NOT_AN_OBJECT),
        (b"x" * 70_000, Reason.TOO_LARGE),
        (tx(amount="12"), Reason.WRONG_TYPE),
        (tx(amount=-1), Reason.OUT_OF_RANGE),
        (tx(customer_id=...), Reason.MISSING_FIELD),
        (tx(extra_field=1), Reason.UNKNOWN_FIELD),
        (tx(event_id="a b"), Reason.INVALID_ID),
        (tx(schema_version=2), Reason.UNSUPPORTED_SCHEMA_VERSION),
        (tx(event_time="2018-04-01 00:00:31"), Reason.BAD_TIMESTAMP),
        (tx(event_time="2018-04-01T00:00:31"), Reason.BAD_TIMESTAMP),
        (tx(event_time="1990-01-01T00:00:00Z"), Reason.BAD_TIMESTAMP),
        (tx(event_time="2099-01-01T00:00:00Z"), Reason.BAD_TIMESTAMP),
        (tx(event_time="2018-02-30T00:00:00Z"), Reason.BAD_TIMESTAMP),
    ],
)
def test_bad_transactions_are_rejected_with_reason(raw, reason):
    got = decode_transaction(raw, max_bytes=65_536, now=NOW)
    assert isinstance(got, Rejection)
    assert got.reason is reason
    assert got.message


def test_label_decodes():
    raw = orjson.dumps(
        {
            "event_id": "e1",
            "customer_id": "1",
            "terminal_id": "2",
            "event_time": "2018-04-01T00:00:00Z",
            "label": 1,
            "label_time": "2018-04-08T00:00:00Z",
            "schema_version": 1,
        }
    )
    got = decode_label(raw, now=NOW)
    assert got == Label("e1", "1", "2", "2018-04-01T00:00:00Z", 1522540800.0, 1, 1523145600.0)
    bad = decode_label(raw.replace(b'"label":1', b'"label":2'), now=NOW)
    assert isinstance(bad, Rejection) and bad.reason is Reason.OUT_OF_RANGE


def test_dead_letter_keeps_original_bytes_and_is_schema_valid():
    raw = b"\x00\xffbinary"
    record = dead_letter_record(
        Rejection(Reason.NOT_UTF8, "nope"),
        SourcePosition("transactions", 3, 42, 1000),
        b"k",
        raw,
        [("h", b"v"), ("n", None)],
    )
    validate("dead_letter", record)
    assert original_value(record) == raw
    assert record["source"] == {
        "topic": "transactions",
        "partition": 3,
        "offset": 42,
        "timestamp_ms": 1000,
    }
    assert record["headers"] == [["h", "dg=="], ["n", None]]


def test_reason_enum_matches_schema():
    from stream_app.io.schemas import load_schema

    declared = load_schema("dead_letter")["properties"]["reason"]["enum"]
    assert sorted(declared) == sorted(r.value for r in Reason)


# --- the fast path gives the full path's answer ----------------------------------------------


def _mutations(base: dict) -> list[bytes]:
    """Valid and invalid variants of ``base``: every field dropped, retyped, stretched, and
    times in other valid and invalid shapes."""
    out = [orjson.dumps(base)]
    odd_values = [
        None, True, 1, 1.5, -1, 2_000_000, "", " ", "x" * 200, "é", "a b", [], {}, "1",
        "2018-04-01T00:00:31z", "2018-04-01t00:00:31Z", "2018-04-01 00:00:31Z",
        "2018-04-01T00:00:31+0000", "2018-04-01T00:00:31.123456789+02:00",
        "2018-04-01T24:00:00Z", "2018-02-30T00:00:00Z", "2018-04-01T00:00:60Z",
        "1999-12-31T23:59:59Z", "2099-01-01T00:00:00Z", "2018-04-01T00:00:31",
    ]  # fmt: skip
    for field in base:
        out.append(orjson.dumps({k: v for k, v in base.items() if k != field}))
        for value in odd_values:
            out.append(orjson.dumps({**base, field: value}))
    out.append(orjson.dumps({**base, "extra": 1}))
    out.append(orjson.dumps({**base, "features": {"F1": 1.0}}))
    out.append(orjson.dumps({k: base[k] for k in reversed(list(base))}))  # another key order
    return out


LABEL = {
    "event_id": "e1",
    "customer_id": "596",
    "terminal_id": "3156",
    "event_time": "2018-04-01T00:00:31Z",
    "label": 1,
    "label_time": "2018-04-08T00:00:31+00:00",
    "schema_version": 1,
}


def test_the_fast_transaction_path_agrees_with_the_full_one_on_every_variant():
    from stream_app.io.codecs import _decode_transaction, _fast_transaction

    variants = _mutations(GOOD)
    fast_taken = 0
    for raw in variants:
        full = _decode_transaction(raw, 65_536, NOW)
        assert decode_transaction(raw, now=NOW) == full, raw
        fast = _fast_transaction(orjson.loads(raw), NOW)
        if fast is not None:
            fast_taken += 1
            assert fast == full, raw  # the fast path accepts only what the full one accepts
    assert fast_taken >= 3  # the plain, reordered and a few re-valued variants went fast


def test_the_fast_label_path_agrees_with_the_full_one_on_every_variant():
    from stream_app.io.codecs import _decode_label, _fast_label

    unversioned = orjson.dumps({k: v for k, v in LABEL.items() if k != "schema_version"})
    variants = [*_mutations(LABEL), unversioned]
    fast_taken = 0
    for raw in variants:
        full = _decode_label(raw, 65_536, NOW)
        assert decode_label(raw, now=NOW) == full, raw
        fast = _fast_label(orjson.loads(raw), NOW)
        if fast is not None:
            fast_taken += 1
            assert fast == full, raw
    assert fast_taken >= 3


def test_the_fast_path_is_taken_by_the_corpus_good_records_only():
    from stream_app.io.codecs import _decode_transaction
    from tests.bad_input_corpus import load_corpus

    for case in load_corpus():
        if case.topic != "transactions":
            continue
        assert decode_transaction(case.value, 65_536, NOW) == _decode_transaction(
            case.value, 65_536, NOW
        ), case.name
