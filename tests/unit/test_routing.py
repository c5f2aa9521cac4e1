"""Records on the wrong partition for their key: the partitioner maths, the reroute copy, and the
stages' handling (a misrouted record never touches the state of the partition it was read on; its
rerouted copy is known by its first position, so reading the copy twice counts it once)."""

import doctest

import orjson

import stream_app.io.partitioning as partitioning
from stream_app.features.state import CustomerState, Retention
from stream_app.io.deadletter import Reason, SourcePosition
from stream_app.io.partitioning import (
    ORIGIN_HEADER,
    crc32_partition,
    expected_partition,
    guess_partitioner,
    header,
    origin_value,
    parse_origin,
    producer_name,
)
from stream_app.io.records import InputRecord
from stream_app.pipeline.customer_stage import CustomerStage
from stream_app.pipeline.routing import Reroute, Routing

RET = Retention.for_lateness(3600.0)
N = 6


def test_partitioning_docstring_examples_hold():
    assert doctest.testmod(partitioning).failed == 0


def test_murmur2_and_crc32_partitions_exact():
    # murmur2 as Java's DefaultPartitioner computes it (toPositive(murmur2(key)) % n); CRC32 as
    # librdkafka's consistent_random (zlib's CRC-32)
    assert [expected_partition(k, N) for k in (b"21", b"c42", b"customer-7")] == [0, 0, 1]
    assert [crc32_partition(k, N) for k in (b"21", b"c42", b"customer-7")] == [4, 0, 2]
    assert expected_partition(b"c42", 1) == 0


def test_guess_names_crc32_when_it_explains_the_partition():
    assert "CRC32" in guess_partitioner(b"21", N, 4)
    assert "another partitioner" in guess_partitioner(b"21", N, 5)


def test_origin_round_trip_and_malformed_values():
    assert origin_value("it.transactions", 3, 1207) == b"it.transactions/3/1207"
    assert parse_origin(b"it.a/b/3/1207") == ("it.a/b", 3, 1207)
    assert parse_origin(b"nonsense") is None
    assert parse_origin(b"t/x/1") is None
    assert parse_origin(None) is None


def test_headers_lookup_takes_the_last_and_names_the_producer():
    headers = [("a", b"1"), ("client-id", b"svc"), ("a", b"2")]
    assert header(headers, "a") == b"2"
    assert header({"a": b"3"}, "a") == b"3"
    assert header(None, "a") is None
    assert producer_name(headers) == "svc"
    assert producer_name([("producer", b"p")]) == "p"
    assert producer_name([]) is None


def tx(event_id: str, customer: str, when: str, amount: float = 10.0) -> bytes:
    return orjson.dumps(
        {
            "event_id": event_id,
            "event_time": when,
            "customer_id": customer,
            "terminal_id": "t1",
            "amount": amount,
            "schema_version": 1,
        }
    )


def record(topic, key, value, partition, offset, headers=()):
    return InputRecord(key, value, SourcePosition(topic, partition, offset, 1000), list(headers))


def stage(states, reroute_topic="transactions.rerouted"):
    return CustomerStage(
        states,
        RET,
        3600.0,
        65_536,
        topic_index={"transactions": 0, "transactions.rerouted": 1},
        routing=Routing(N, reroute_topic),
    )


def test_misrouted_transaction_is_copied_to_its_partition_and_applied_there_once():
    key = b"21"  # belongs on partition 0
    states: dict = {}
    s = stage(states)
    wrong = record("transactions", key, tx("e1", "21", "2026-03-01T10:00:00Z"), 4, 17)
    out = s.process([wrong])
    assert out.forwards == [] and out.dead_letters == [] and len(out.misrouted) == 1
    (copy,) = out.reroutes
    assert isinstance(copy, Reroute)
    assert (copy.topic, copy.partition, copy.key) == ("transactions.rerouted", 0, key)
    assert copy.value == wrong.value and copy.timestamp == 1000
    assert copy.headers == [(ORIGIN_HEADER, b"transactions/4/17")]
    s.flush()
    assert states == {}  # partition 4's state never saw it
    # The copy, read on partition 0 of the reroute topic: applied under its first position.
    read = record("transactions.rerouted", key, copy.value, 0, 0, copy.headers)
    out = s.process([read])
    assert len(out.forwards) == 1 and out.reroutes == [] and out.replayed == 0
    # The same copy again (a crash before the commit), at another offset: a replay, not a
    # second sample.
    again = record("transactions.rerouted", key, copy.value, 0, 1, copy.headers)
    out = s.process([again])
    assert len(out.forwards) == 1 and out.replayed == 1
    s.flush()
    (raw,) = states.values()
    state = CustomerState.decode(raw) if isinstance(raw, bytes) else raw
    assert len(state.t) == 1


def test_a_copy_rerouted_again_keeps_its_first_origin():
    s = stage({})
    value = tx("e1", "21", "2026-03-01T10:00:00Z")
    headers = [(ORIGIN_HEADER, b"transactions/4/17")]
    out = s.process([record("transactions.rerouted", b"21", value, 3, 5, headers)])
    (copy,) = out.reroutes
    assert copy.partition == 0 and copy.headers == headers


def test_dead_letter_mode_rejects_with_misrouted_key():
    s = stage({}, reroute_topic=None)
    out = s.process([record("transactions", b"21", tx("e1", "21", "2026-03-01T10:00:00Z"), 4, 0)])
    assert out.reroutes == [] and out.forwards == []
    (dead,) = out.dead_letters
    assert dead.rejection.reason is Reason.MISROUTED_KEY
    assert "belongs on partition 0 of transactions" in dead.rejection.message
    assert "partitioner=murmur2_random" in dead.rejection.message


def test_right_partition_is_processed_as_before():
    s = stage({})
    out = s.process([record("transactions", b"21", tx("e1", "21", "2026-03-01T10:00:00Z"), 0, 0)])
    assert len(out.forwards) == 1 and out.misrouted == [] and out.reroutes == []


def test_scoring_stage_reroutes_misrouted_labels_and_forwards_and_knows_a_copy_by_its_origin(
    model_dir,
):
    from stream_app.pipeline.forward import encode_forward
    from stream_app.pipeline.scoring_stage import ScoringStage
    from stream_app.scoring.model import ScoringModel

    terminals: dict = {}
    s2 = ScoringStage(
        terminals,
        ScoringModel.load(model_dir),
        RET,
        "labels",
        65_536,
        topic_index={"by": 0},
        label_routing=Routing(N, "labels.rerouted"),
        forward_routing=Routing(N, "by"),
    )
    key = b"21"  # a terminal id that belongs on partition 0
    features = [0.0] * 9
    fwd = encode_forward(
        "e1", "2026-03-01T10:00:00Z", 1772359200.0, "c1", "21", 0.0, 0, 0, features
    )
    label = orjson.dumps(
        {
            "event_id": "e1",
            "customer_id": "c1",
            "terminal_id": "21",
            "event_time": "2026-03-01T10:00:00Z",
            "label": 1,
            "label_time": "2026-03-08T10:00:00Z",
            "schema_version": 1,
        }
    )
    out = s2.process([record("by", key, fwd, 3, 40), record("labels", key, label, 5, 7)])
    assert out.scores == [] and out.dead_letters == []
    assert [(r.topic, r.partition) for r in out.reroutes] == [("by", 0), ("labels.rerouted", 0)]
    assert [r.headers for r in out.reroutes] == [
        [(ORIGIN_HEADER, b"by/3/40")],
        [(ORIGIN_HEADER, b"labels/5/7")],
    ]
    assert terminals == {}
    # The forward's copy on partition 0, read twice (a crash before the commit): scored both
    # times (at-least-once), counted once in the terminal's window.
    fwd_copy = out.reroutes[0]
    out = s2.process([record("by", key, fwd, 0, 90, fwd_copy.headers)])
    assert len(out.scores) == 1 and out.replayed == 0
    out = s2.process([record("by", key, fwd, 0, 91, fwd_copy.headers)])
    assert len(out.scores) == 1 and out.replayed == 1
    # The label's copy, read on the reroute topic: applied to the terminal's state there.
    out = s2.process(
        [record("labels.rerouted", key, label, 0, 0, [(ORIGIN_HEADER, b"labels/5/7")])]
    )
    assert out.labels.applied == 1 and out.reroutes == []
