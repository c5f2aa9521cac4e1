"""The two worker stages as plain logic (dict tables): same features as the offline builder,
bad input to dead letters, replays not double-counted, labels applied."""

import dataclasses
from datetime import UTC, datetime

import numpy as np
import orjson
import pytest

from stream_app.features.definitions import FEATURE_NAMES
from stream_app.features.offline import build_features
from stream_app.features.state import CustomerState, Retention, state_view
from stream_app.io.deadletter import Reason, SourcePosition
from stream_app.io.schemas import validate
from stream_app.pipeline.customer_stage import CustomerStage, InputRecord
from stream_app.pipeline.forward import encode_forward, forward_view
from stream_app.pipeline.scoring_stage import ScoringStage
from stream_app.scoring.model import ScoringModel
from stream_app.sources.schedule import batch_from_events, schedule
from stream_app.sources.simulator import simulate

RET = Retention.for_lateness(3600.0)


def run_stages(records, model, batch=50, canary=None, outputs=None):
    """Push (topic, key, value) records through both stages like the worker does (``canary``:
    (model, share) deciding for that share of customers; ``outputs``: a list that gets each
    scoring output)."""
    customers, terminals = {}, {}
    s1 = CustomerStage(customers, RET, 3600.0, 65_536)
    s2 = ScoringStage(terminals, model, RET, "labels", 65_536, emit_features=True)
    if canary is not None:
        s2.use_canary(*canary)
    offsets = {}
    envelopes, dead = [], []
    stage2_in = []
    for i in range(0, len(records), batch):
        chunk = []
        for topic, key, value in records[i : i + batch]:
            off = offsets[topic] = offsets.get(topic, -1) + 1
            rec = InputRecord(key, value, SourcePosition(topic, 0, off, 1000))
            (chunk if topic == "transactions" else stage2_in).append(rec)
        out1 = s1.process(chunk)
        dead += out1.dead_letters
        for fwd in out1.forwards:
            off = offsets["by"] = offsets.get("by", -1) + 1
            stage2_in.append(InputRecord(fwd.key, fwd.value, SourcePosition("by", 0, off, 1000)))
        out2 = s2.process(stage2_in)
        if outputs is not None:
            outputs.append(out2)
        stage2_in = []
        dead += out2.dead_letters
        envelopes += [orjson.loads(v) for _, v in out2.scores]
    return envelopes, dead, customers, terminals


def transaction_records(items):
    """Stage-1 input records of simulated ``items``, at offsets 0, 1, ... of one partition."""
    return [
        InputRecord(
            i.event["customer_id"].encode(),
            orjson.dumps(i.event),
            SourcePosition("transactions", 0, n, 0),
        )
        for n, i in enumerate(items)
    ]


@pytest.fixture
def model(model_dir):
    return ScoringModel.load(model_dir)


@pytest.fixture
def stream():
    return list(
        simulate(
            n_customers=40, n_terminals=50, days=45, seed=5, start=datetime(2018, 4, 1, tzinfo=UTC)
        )
    )


def test_live_stages_equal_offline_builder(model, stream):
    records = [(r.topic, r.key.encode(), r.value) for r in schedule(stream)]
    envelopes, dead, _, _ = run_stages(records, model)
    assert dead == []
    assert len(envelopes) == len(stream)
    batch = batch_from_events(stream)
    offline = build_features(batch)
    by_id = {e["event_id"]: e for e in envelopes}
    live = np.array([[by_id[eid]["features"][n] for n in FEATURE_NAMES] for eid in batch.event_id])
    np.testing.assert_allclose(live, offline, rtol=0, atol=1e-9)
    validate("score_envelope", envelopes[0])


def test_bad_records_become_dead_letters_and_good_ones_are_scored(model, stream):
    good = [
        ("transactions", item.event["customer_id"].encode(), orjson.dumps(item.event))
        for item in stream[:30]
    ]
    bad = [
        ("transactions", b"1", b"{broken"),
        ("transactions", b"1", None),
        ("transactions", b"wrong-key", orjson.dumps(stream[0].event | {"event_id": "x1"})),
        ("labels", b"t", b'{"label": 1}'),
    ]
    records = good[:10] + bad[:2] + good[10:20] + bad[2:] + good[20:]
    envelopes, dead, _, _ = run_stages(records, model, batch=7)
    assert sorted(e["event_id"] for e in envelopes) == sorted(
        i.event["event_id"] for i in stream[:30]
    )
    assert [d.rejection.reason for d in dead] == [
        Reason.INVALID_JSON,
        Reason.EMPTY_VALUE,
        Reason.KEY_MISMATCH,
        Reason.MISSING_FIELD,
    ]


def test_replayed_offsets_are_rescored_but_not_recounted(model, stream):
    customers = {}
    stage = CustomerStage(customers, RET, 3600.0, 65_536)
    items = [i for i in stream if i.event["customer_id"] == stream[0].event["customer_id"]][:5]
    recs = transaction_records(items)
    first = stage.process(recs)
    again = stage.process(recs[2:])  # a restart re-reads offsets 2..4
    assert again.replayed == 3
    stage.flush()
    assert len(state_view(customers[items[0].event["customer_id"]], CustomerState)["t"]) == 5
    assert [f.value for f in again.forwards] == [f.value for f in first.forwards[2:]]


def test_too_late_event_goes_to_dead_letters(model):
    stage = CustomerStage({}, RET, 3600.0, 65_536)

    def rec(off, time):
        body = {
            "event_id": f"e{off}",
            "event_time": time,
            "customer_id": "c",
            "terminal_id": "t",
            "amount": 1.0,
            "schema_version": 1,
        }
        return InputRecord(b"c", orjson.dumps(body), SourcePosition("transactions", 0, off, 0))

    out = stage.process(
        [
            rec(0, "2018-04-02T12:00:00Z"),
            rec(1, "2018-04-02T11:30:00Z"),
            rec(2, "2018-04-02T10:00:00Z"),
        ]
    )
    assert len(out.forwards) == 2
    assert [d.rejection.reason for d in out.dead_letters] == [Reason.TOO_LATE]


def test_worker_stats_summary_counts_and_resets():
    from stream_app.worker.stats import WorkerStats

    stats = WorkerStats()
    assert stats.summary() is None
    stats.add(consumed=10, scored=8, dead_letters=2)
    stats.add(scored=2, labels_applied=3)
    line = stats.summary()
    assert "consumed 10" in line and "scored 10" in line and "dead letters 2" in line
    assert "labels applied 3" in line and "labels unmatched 0" in line
    assert stats.summary() is None


def test_out_of_order_within_lateness_is_placed_at_event_time():
    stage = CustomerStage({}, RET, 3600.0, 65_536)

    def rec(off, time, amount):
        body = {
            "event_id": f"e{off}",
            "event_time": time,
            "customer_id": "c",
            "terminal_id": "t",
            "amount": amount,
            "schema_version": 1,
        }
        return InputRecord(b"c", orjson.dumps(body), SourcePosition("transactions", 0, off, 0))

    out = stage.process(
        [
            rec(0, "2018-04-02T12:00:00Z", 10.0),
            rec(1, "2018-04-02T11:30:00Z", 20.0),  # 30 min late: inside the allowed hour
            rec(2, "2018-04-03T11:45:00Z", 40.0),
        ]
    )
    assert out.dead_letters == []
    feats = [forward_view(f.value)["features"] for f in out.forwards]
    # The late event sees only what is at or before its own time: itself.
    assert feats[1]["CUSTOMER_ID_NB_TX_1DAY_WINDOW"] == 1.0
    assert feats[1]["CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW"] == 20.0
    # 2018-04-03T11:45: the 1-day window (04-02T11:45, 04-03T11:45] holds 12:00 and 11:45.
    assert feats[2]["CUSTOMER_ID_NB_TX_1DAY_WINDOW"] == 2.0
    assert feats[2]["CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW"] == 25.0
    assert feats[2]["CUSTOMER_ID_NB_TX_7DAY_WINDOW"] == 3.0


def test_terminal_eviction_waits_for_the_lagging_source_partition(model):
    """Two customer partitions progress unevenly: the lagging one's event still sees the
    terminal samples its 30-day window needs (eviction follows the low watermark)."""
    day = 86_400.0
    t0 = datetime(2018, 4, 1, tzinfo=UTC).timestamp()

    def fwd(eid, ts, source, offset, partition=0, terminal="T"):
        value = encode_forward(
            eid, "2018-04-01T00:00:00Z", ts, "c", terminal, 0.0, source, 0, [0.0] * 9
        )
        return InputRecord(terminal.encode(), value, SourcePosition("by", partition, offset, 0))

    # Source 0 runs ahead to day 42 while source 1 is still at day 1.5. Evicting from the
    # terminal's newest time (day 42 - 37 days - 1 hour) would drop days 0, 1.5 and 2.
    records = [
        fwd("old", t0, 0, 0),
        fwd("p1-early", t0 + 1.5 * day, 1, 1),
        fwd("p0-now", t0 + 2 * day, 0, 2),
        fwd("p0-late", t0 + 42 * day, 0, 3),
        fwd("p1", t0 + 38 * day, 1, 4),
    ]
    stage = ScoringStage({}, model, RET, "labels", 65_536, emit_features=True, source_partitions=2)
    out = stage.process(records)
    env = {orjson.loads(v)["event_id"]: orjson.loads(v) for _, v in out.scores}
    # p1 at day 38: the 30-day terminal window after the 7-day delay is (day 1, day 31].
    assert env["p1"]["features"]["TERMINAL_ID_NB_TX_30DAY_WINDOW"] == 2.0
    assert stage.eviction_horizon(0) == t0 + 38 * day  # the low watermark
    assert stage.eviction_horizon(5) == float("-inf")  # nothing seen: evict nothing
    capped = ScoringStage(
        {}, model, RET, "labels", 65_536, source_partitions=2, max_source_skew_s=3 * day
    )
    capped.process(records)
    assert capped.eviction_horizon(0) == t0 + 39 * day  # at most 3 days behind


def test_terminal_eviction_watermark_is_per_input_partition(model):
    """The lag that matters is inside the terminal's own input partition: another input
    partition having seen source 1 at day 42 must not let terminal U (on input partition 1,
    where source 1 is still at day 3) evict what its lagging day-38 event needs."""
    day = 86_400.0
    t0 = datetime(2018, 4, 1, tzinfo=UTC).timestamp()

    def fwd(eid, ts, source, partition, offset, terminal):
        value = encode_forward(
            eid, "2018-04-01T00:00:00Z", ts, "c", terminal, 0.0, source, 0, [0.0] * 9
        )
        return InputRecord(terminal.encode(), value, SourcePosition("by", partition, offset, 0))

    records = [
        # Input partition 0 (terminal T) is consumed far ahead on both sources.
        fwd("t0", t0 + 41 * day, 0, 0, 0, "T"),
        fwd("t1", t0 + 42 * day, 1, 0, 1, "T"),
        # Input partition 1 (terminal U): source 1 lags at day 3, source 0 is at day 40.
        fwd("u-old", t0, 0, 1, 0, "U"),
        fwd("u-early", t0 + 1.5 * day, 1, 1, 1, "U"),
        fwd("u-now", t0 + 2 * day, 0, 1, 2, "U"),
        fwd("u-3", t0 + 3 * day, 1, 1, 3, "U"),
        fwd("u-late", t0 + 40 * day, 0, 1, 4, "U"),
        fwd("u-lagging", t0 + 38 * day, 1, 1, 5, "U"),
    ]
    stage = ScoringStage({}, model, RET, "labels", 65_536, emit_features=True, source_partitions=2)
    out = stage.process(records)
    env = {orjson.loads(v)["event_id"]: orjson.loads(v) for _, v in out.scores}
    # u-lagging at day 38: terminal window (day 1, day 31] holds days 1.5, 2 and 3.
    assert env["u-lagging"]["features"]["TERMINAL_ID_NB_TX_30DAY_WINDOW"] == 3.0
    assert stage.eviction_horizon(0) == t0 + 41 * day
    assert stage.eviction_horizon(1) == t0 + 38 * day


def tx_record(off, eid, time, amount, customer="c"):
    body = {
        "event_id": eid,
        "event_time": time,
        "customer_id": customer,
        "terminal_id": "t",
        "amount": amount,
        "schema_version": 1,
    }
    return InputRecord(
        customer.encode(), orjson.dumps(body), SourcePosition("transactions", 0, off, 0)
    )


def customer_features(out):
    return [
        {k: v for k, v in forward_view(f.value)["features"].items() if k.startswith("CUSTOMER_")}
        for f in out.forwards
    ]


def test_replayed_record_is_forwarded_with_its_first_features_despite_a_same_second_event():
    """Issue #6 as the rebalance test met it (events 4825 and 4826 of customer 5): the customer's
    next event, at the same second, was applied before the re-read; it stays out of the windows."""
    stage = CustomerStage({}, RET, 3600.0, 65_536)
    recs = [
        tx_record(0, "e0", "2018-04-02T09:00:00Z", 100.0),
        tx_record(1, "e1", "2018-04-03T13:02:26Z", 10.0),
        tx_record(2, "e2", "2018-04-03T13:02:26Z", 30.0),  # same second, next in the stream
        tx_record(3, "e3", "2018-04-03T18:00:00Z", 50.0),
    ]
    first = stage.process(recs)
    again = stage.process(recs[1:])  # a rebalance: offsets 1..3 were not committed
    assert again.replayed == 3 and again.dead_letters == []
    assert [f.value for f in again.forwards] == [f.value for f in first.forwards[1:]]
    n1, a1, n7, a7 = (
        "CUSTOMER_ID_NB_TX_1DAY_WINDOW",
        "CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW",
        "CUSTOMER_ID_NB_TX_7DAY_WINDOW",
        "CUSTOMER_ID_AVG_AMOUNT_7DAY_WINDOW",
    )
    got = customer_features(again)
    assert [(g[n1], g[a1], g[n7], g[a7]) for g in got] == [
        (1.0, 10.0, 2.0, 55.0),  # e1: not e2 (was 2, 20.0, 3, 46.67 before the fix)
        (2.0, 20.0, 3.0, 140 / 3),  # e2: e1 and itself
        (3.0, 30.0, 4.0, 47.5),  # e3
    ]


def test_replays_with_several_ties_and_late_events_repeat_the_first_features():
    """Many same-second events and some late ones (within the allowed lateness), re-read from
    every kind of point: each re-forward equals the first forward, byte for byte."""
    rng = np.random.default_rng(6)
    t0 = datetime(2018, 4, 2, tzinfo=UTC).timestamp()
    recs, newest = [], {}
    for off in range(600):
        cust = f"c{rng.integers(3)}"
        ts = newest.get(cust, t0) + float(rng.choice([0, 0, 0, 1, 600, 40_000]))
        if rng.random() < 0.1:
            ts -= float(rng.integers(1, 3600))  # late, within the hour allowed
        newest[cust] = max(newest.get(cust, t0), ts)
        time = datetime.fromtimestamp(ts, UTC).isoformat()
        recs.append(tx_record(off, f"e{off}", time, float(rng.integers(1, 500)), cust))
    table: dict = {}
    stage = CustomerStage(table, RET, 3600.0, 65_536)
    first = []
    for start in range(0, len(recs), 25):
        first += [f.value for f in stage.process(recs[start : start + 25]).forwards]
        replay_from = int(rng.integers(0, start + 1))  # a crash: not committed since then
        again = stage.process(recs[replay_from : start + 25])
        assert again.dead_letters == [] and again.replayed == start + 25 - replay_from
        assert [f.value for f in again.forwards] == first[replay_from:]
    assert len(first) == len(recs)
    stage.flush()
    views = [state_view(value, CustomerState) for value in table.values()]
    assert any(v["q"] != sorted(v["q"]) for v in views)  # late samples were replayed over
    ties = sum(len(v["t"]) - len(set(v["t"])) for v in views)
    assert ties > 100


def test_rebalance_streams_records_read_again_get_the_offline_features():
    """The fault test's stream (tests/faults/test_rebalance.py), its first 30 customers' events,
    all applied, then every record read again (the state holds every later event, e.g. event 4826
    of customer 5 at the second of 4825): each re-forward carries the offline builder's customer
    features (which depend on the customer's own events only)."""
    stream = simulate(
        n_customers=300,
        n_terminals=300,
        n_events=12_000,
        seed=20260605,
        start=datetime(2026, 3, 1, tzinfo=UTC),
    )
    items = [i for i in stream if int(i.event["customer_id"]) < 30]
    batch = batch_from_events(items)
    offline = build_features(dataclasses.replace(batch, label=None))
    names = [n for n in FEATURE_NAMES if n.startswith("CUSTOMER_ID_")]
    columns = [FEATURE_NAMES.index(n) for n in names]
    stage = CustomerStage({}, RET, 3600.0, 65_536)
    recs = transaction_records(items)
    for start in range(0, len(recs), 500):
        stage.process(recs[start : start + 500])
    again = []
    for start in range(0, len(recs), 500):
        out = stage.process(recs[start : start + 500])
        assert out.replayed == len(out.forwards) == len(recs[start : start + 500])
        again += customer_features(out)
    live = np.array([[f[n] for n in names] for f in again])
    k = list(batch.event_id).index("sim20260605-4825")
    assert batch.event_id[k + 1] == "sim20260605-4826" and batch.ts[k] == batch.ts[k + 1]
    np.testing.assert_array_equal(live, offline[:, columns])


def dead_letter_outcomes(out):
    return [
        (d.record.position.offset, d.rejection.reason, d.rejection.message)
        for d in out.dead_letters
    ]


def states(stage):
    """Every customer state the stage holds, as its JSON view."""
    return {key: state.value for key, state in stage.states.cache.items()}


def reread_everything_before(stage, table, recs, first, dead_offset):
    """Re-read the stream from every offset up to ``dead_offset`` (a crash or a rebalance before
    the commit): each time the same forwards as the first time, byte for byte, the same dead
    letters (the dead-lettered record again, same reason and message), and no state change."""
    before = states(stage)
    for start in range(dead_offset + 1):
        again = stage.process(recs[start:])
        assert [f.value for f in again.forwards] == [
            f.value for f in first.forwards if forward_view(f.value)["source_offset"] >= start
        ]
        assert dead_letter_outcomes(again) == dead_letter_outcomes(first)
        assert again.replayed == len(recs) - start - 1
        assert states(stage) == before


DUPLICATE_STREAM = [
    tx_record(0, "e0", "2018-04-02T09:00:00Z", 100.0),
    tx_record(1, "e1", "2018-04-02T10:00:00Z", 10.0),
    tx_record(2, "e1", "2018-04-02T10:00:00Z", 10.0),  # e1 sent again
    tx_record(3, "e2", "2018-04-02T11:00:00Z", 50.0),
]
TOO_LATE_STREAM = [
    tx_record(0, "e0", "2018-04-02T12:00:00Z", 10.0),
    tx_record(1, "e1", "2018-04-02T11:30:00Z", 20.0),  # late, within the hour: applied
    tx_record(2, "e2", "2018-04-02T10:00:00Z", 30.0),  # two hours behind 12:00: too late
    tx_record(3, "e3", "2018-04-02T13:00:00Z", 40.0),
]


@pytest.mark.parametrize(
    ("recs", "reason", "message", "forwarded", "newest"),
    [
        (
            DUPLICATE_STREAM,
            Reason.DUPLICATE_EVENT,
            "event_id 'e1' at 2018-04-02T10:00:00Z was already applied for customer 'c' (sent "
            "again at a new offset); it is scored once.",
            ["e0", "e1", "e2"],
            "2018-04-02T10:00:00Z",
        ),
        (
            TOO_LATE_STREAM,
            Reason.TOO_LATE,
            "event_time 2018-04-02T10:00:00Z is 7200 s behind the customer's latest event; the "
            "allowed lateness is 3600 s.",
            ["e0", "e1", "e3"],
            "2018-04-02T12:00:00Z",
        ),
    ],
    ids=["duplicate", "too_late"],
)
def test_a_dead_lettered_record_read_again_is_dead_lettered_again_not_forwarded(
    recs, reason, message, forwarded, newest
):
    """Offset 2 is dead-lettered by a decision on the customer's state; offset 3 is applied after
    it. Before the fix a re-read of offset 2 took the replay path and was forwarded: the
    duplicate with e1's features (e1 scored twice), the too-late event with the state's."""
    table: dict = {}
    stage = CustomerStage(table, RET, 3600.0, 65_536)
    first = stage.process(recs)
    assert dead_letter_outcomes(first) == [(2, reason, message)]
    assert [forward_view(f.value)["event_id"] for f in first.forwards] == forwarded
    reread_everything_before(stage, table, recs, first, 2)
    newest_ts = datetime.fromisoformat(newest).timestamp()
    stage.flush()
    assert state_view(table["c"], CustomerState)["d"] == [[0, 2, reason.value, newest_ts]]


def test_a_dead_letter_alone_in_its_batch_is_remembered_across_batches():
    """The customer's only record in a batch is dead-lettered: its state is written back all the
    same, so a later re-read (another batch, after a restart) still finds the decision."""
    table: dict = {}
    stage = CustomerStage(table, RET, 3600.0, 65_536)
    recs = [
        tx_record(0, "e0", "2018-04-02T12:00:00Z", 10.0),
        tx_record(1, "e0", "2018-04-02T12:00:00Z", 10.0),
        tx_record(2, "e1", "2018-04-02T12:30:00Z", 20.0),
    ]
    outs = []
    for rec in recs:
        outs.append(stage.process([rec]))
        stage.flush()  # a checkpoint after every batch
    assert [len(o.forwards) for o in outs] == [1, 0, 1]
    restarted = CustomerStage(dict(table), RET, 3600.0, 65_536)
    again = restarted.process(recs[1:])
    assert dead_letter_outcomes(again) == dead_letter_outcomes(outs[1])
    assert [f.value for f in again.forwards] == [f.value for f in outs[2].forwards]
    noon = datetime(2018, 4, 2, 12, tzinfo=UTC).timestamp()
    assert state_view(table["c"], CustomerState)["d"] == [[0, 1, "duplicate_event", noon]]
    # Re-read before anything after it was applied (not yet seen): decided afresh, kept once.
    assert dead_letter_outcomes(stage.process(recs[1:2])) == dead_letter_outcomes(outs[1])
    stage.flush()
    assert len(state_view(table["c"], CustomerState)["d"]) == 1


def test_a_label_taken_after_a_later_forward_on_its_partition_is_counted_late(model):
    """What ``stream_app_labels_late_total`` counts: a label known at or before a transaction
    already scored on its input partition (that score lacked it; the offline one has it)."""
    t0 = datetime(2026, 3, 20, tzinfo=UTC).timestamp()

    def fwd(eid, ts, offset, partition=0):
        value = encode_forward(eid, "2026-03-20T00:00:00Z", ts, "c", "T", 0.0, 0, 0, [0.0] * 9)
        return InputRecord(b"T", value, SourcePosition("by", partition, offset, 0))

    def lab(eid, known, offset, partition=0):
        value = orjson.dumps(
            {
                "event_id": eid,
                "customer_id": "c",
                "terminal_id": "T",
                "event_time": "2026-03-20T00:00:00Z",
                "label": 1,
                "label_time": datetime.fromtimestamp(known, UTC).isoformat(),
                "schema_version": 1,
            }
        )
        return InputRecord(b"T", value, SourcePosition("labels", partition, offset, 0))

    stage = ScoringStage({}, model, RET, "labels", 65_536)
    assert stage.process([fwd("a", t0 + 100, 0)]).labels.late == 0
    # known at the forward's time and before it: late; after it, or on another partition: not
    out = stage.process(
        [
            lab("x", t0 + 100, 0),
            lab("y", t0 + 50, 1),
            lab("z", t0 + 101, 2),
            lab("w", t0 + 10, 0, 1),
        ]
    )
    assert (out.labels.late, out.labels.pending_or_unknown, out.dead_letters) == (2, 4, [])
    # in one batch, in the order taken: the label before the forward is on time
    out = stage.process([lab("v", t0 + 200, 3), fwd("b", t0 + 300, 1), lab("u", t0 + 250, 4)])
    assert out.labels.late == 1
    stage.forget_order()  # a rebalance: the partitions are read again from their commits
    assert stage.process([lab("t", t0 + 250, 5)]).labels.late == 0
