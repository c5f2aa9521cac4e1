"""The client without a broker: typed records match the schemas, the publisher validates, keys
and reports as the worker expects, option mistakes are refused with a message."""

import dataclasses
import types
import typing
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from stream_app.client import (
    DeliveryFailed,
    DriftRecord,
    Evaluation,
    InvalidRecord,
    MetricsRecord,
    Publisher,
    Reason,
    RecordRejected,
    ScoreEnvelope,
    ShadowScore,
    StreamClient,
    Subscription,
)
from stream_app.client.evaluate import _bound
from stream_app.client.records import RECORD_TYPES, parse
from stream_app.config import Settings
from stream_app.evaluation.report import ReportFiles
from stream_app.exceptions import ConfigError
from stream_app.io.partitioning import expected_partition
from stream_app.io.schemas import load_schema

SETTINGS = Settings(kafka_bootstrap_servers="127.0.0.1:1", topic_prefix="u.", partitions=6)


# --- typed records against their JSON Schemas ---------------------------------------------


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _optional(tp: object) -> bool:
    union = isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union
    return union and type(None) in typing.get_args(tp)


def _check_object(cls: type, schema: dict) -> None:
    """``cls`` has exactly the schema's properties; the required ones without a default and not
    optional, the others defaulting to None; nested objects checked the same way."""
    fields = _fields(cls)
    hints = typing.get_type_hints(cls)
    assert set(fields) == set(schema["properties"]), cls.__name__
    for name, field in fields.items():
        required = name in schema.get("required", [])
        has_default = field.default is not dataclasses.MISSING
        sub = schema["properties"][name]
        nullable = "null" in (sub["type"] if isinstance(sub.get("type"), list) else [])
        assert required != has_default, (cls.__name__, name)
        assert (required and not nullable) != _optional(hints[name]), (cls.__name__, name)
        target = hints[name]
        if _optional(target):  # an optional nested object: check the object
            (target,) = [a for a in typing.get_args(target) if a is not type(None)]
        if sub.get("type") == "object" and "properties" in sub:
            _check_object(target, sub)
        elif sub.get("type") == "array" and "properties" in sub.get("items", {}):
            (item,) = {a for a in typing.get_args(target) if a is not Ellipsis}
            _check_object(item, sub["items"])
        if "enum" in sub and typing.get_origin(target) is typing.Literal:
            assert set(typing.get_args(target)) == set(sub["enum"]), (cls.__name__, name)


@pytest.mark.parametrize("record_type", list(RECORD_TYPES.values()), ids=list(RECORD_TYPES))
def test_each_record_type_has_its_schemas_fields(record_type):
    _check_object(record_type, load_schema(record_type.schema))


def envelope(**changes):
    base = {
        "event_id": "e1",
        "customer_id": "c1",
        "terminal_id": "t1",
        "event_time": "2026-03-01T10:00:00+00:00",
        "score": 0.25,
        "decision": "approve",
        "uncertainty": {"method": "logit_delta", "std": 0.01, "interval": [0.2, 0.3]},
        "explanation": {
            "method": "linear_exact",
            "contributions": [{"feature": "TX_AMOUNT", "value": 12.5, "contribution": 0.4}],
        },
        "model_version": "v1",
        "model_sha256": "a" * 64,
        "training_data_tag": "tag",
        "feature_hash": "b" * 32,
        "scored_at": "2026-03-01T10:00:01.5+00:00",
        "latency_ms": 3,
    }
    base.update(changes)
    return base


def test_parse_gives_typed_nested_objects():
    score = parse(ScoreEnvelope, orjson.dumps(envelope()))
    assert score.score == 0.25 and score.decision == "approve"
    assert score.uncertainty.interval == (0.2, 0.3)
    assert score.explanation.contributions[0].feature == "TX_AMOUNT"
    assert score.latency_ms == 3.0 and isinstance(score.latency_ms, float)
    assert score.event_at == datetime(2026, 3, 1, 10, tzinfo=UTC)
    assert score.features is None
    shadow = parse(
        ShadowScore,
        orjson.dumps(
            {
                "challenger": envelope(score=0.9, decision="decline"),
                "champion_version": "v0",
                "champion_score": 0.25,
                "champion_decision": "approve",
                "agree": False,
            }
        ),
    )
    assert shadow.challenger.decision == "decline" and shadow.score_delta is None
    drift = parse(
        DriftRecord,
        orjson.dumps(
            {
                "statistic": "psi",
                "subject": "score",
                "value": 0.3,
                "threshold": 0.2,
                "alert": True,
                "model_version": "v1",
                "window": {
                    "start": "2026-03-01T00:00:00Z",
                    "end": "2026-03-02T00:00:00Z",
                    "events": 10,
                },
            }
        ),
    )
    assert drift.alert and drift.window.events == 10
    metrics = parse(
        MetricsRecord,
        orjson.dumps(
            {
                "model_version": "v1",
                "granularity": "event_day",
                "period": "2026-03-01",
                "labels": 5,
                "metrics": {"auc_roc": None, "brier": 0.1},
            }
        ),
    )
    assert metrics.metrics.auc_roc is None and metrics.metrics.brier == 0.1


def test_a_record_off_its_schema_raises_with_its_position():
    with pytest.raises(InvalidRecord, match=r"scores\[2\]@7: not a valid score_envelope") as err:
        parse(ScoreEnvelope, orjson.dumps(envelope(score=1.5)), "scores", 2, 7)
    assert "on_invalid='skip'" in str(err.value)
    with pytest.raises(InvalidRecord, match="not JSON"):
        parse(ScoreEnvelope, b"{nope")


# --- the publisher --------------------------------------------------------------------------


class FakeMessage:
    def __init__(self, topic, key, partition, offset):
        self._topic, self._key, self._partition, self._offset = topic, key, partition, offset

    def topic(self):
        return self._topic

    def partition(self):
        return self._partition

    def offset(self):
        return self._offset

    def key(self):
        return self._key


class FakeProducer:
    """librdkafka's producer as BulkProducer uses it; partitions keys by murmur2 over 6, as
    ``partitioner=murmur2_random`` does, and fails records whose topic is in ``fail``."""

    def __init__(self, config, fail=()):
        self.config = config
        self.fail = set(fail)
        self.sent = []
        self.queued = []

    def produce(self, topic, value=None, key=None, on_delivery=None, **extra):
        raw_key = key.encode() if isinstance(key, str) else key
        self.sent.append((topic, raw_key, value))
        self.queued.append((topic, raw_key, on_delivery))

    def poll(self, timeout=0):
        return 0

    def flush(self, timeout=0):
        for i, (topic, key, callback) in enumerate(self.queued):
            err = "broker says no" if topic in self.fail else None
            callback(err, FakeMessage(topic, key, expected_partition(key, 6), i))
        self.queued = []
        return 0


def publisher(fail=()):
    made = []

    def factory(config):
        made.append(FakeProducer(config, fail))
        return made[-1]

    return Publisher(SETTINGS, producer_factory=factory), made


NOW = datetime.now(UTC).replace(microsecond=0)


def tx(i, **changes):
    event = {
        "event_id": f"e{i}",
        "event_time": (NOW - timedelta(hours=1)).isoformat(),
        "customer_id": f"c{i % 3}",
        "terminal_id": f"t{i % 5}",
        "amount": 10.0 + i,
        "schema_version": 1,
    }
    event.update(changes)
    return event


def test_transactions_and_labels_are_keyed_partitioned_and_reported():
    pub, made = publisher()
    assert made[0].config["partitioner"] == "murmur2_random"
    decoded = pub.send_transaction(tx(1))
    assert decoded.customer_id == "c1" and decoded.amount == 11.0
    pub.send_label(
        {
            "event_id": "e1",
            "customer_id": "c1",
            "terminal_id": "t1",
            "event_time": tx(1)["event_time"],
            "label": 1,
            "label_time": NOW.isoformat(),
        }
    )
    raw = orjson.dumps(tx(2))
    pub.send_transaction(raw)  # bytes are sent exactly as given
    report = pub.flush()
    assert [(t, k) for t, k, _ in made[0].sent] == [
        ("u.transactions", b"c1"),
        ("u.labels", b"t1"),
        ("u.transactions", b"c2"),
    ]
    assert made[0].sent[2][2] == raw
    assert report.delivered == 3 and report.rejected == []
    assert {d.event_id for d in report.deliveries} == {"e1", "e2"}
    for delivery in report.deliveries:
        assert delivery.ok and delivery.partition == expected_partition(delivery.key.encode(), 6)
    assert report.partitions("u.labels") == {"t1": expected_partition(b"t1", 6)}
    assert pub.flush().deliveries == []  # each flush reports what came since the last one


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"amount": -5}, Reason.OUT_OF_RANGE),
        ({"amount": "12"}, Reason.WRONG_TYPE),
        ({"event_time": "yesterday"}, Reason.BAD_TIMESTAMP),
        ({"event_time": "2999-01-01T00:00:00Z"}, Reason.BAD_TIMESTAMP),
        ({"customer_id": "has space"}, Reason.INVALID_ID),
        ({"surprise": True}, Reason.UNKNOWN_FIELD),
        ({"schema_version": 9}, Reason.UNSUPPORTED_SCHEMA_VERSION),
    ],
)
def test_a_record_the_worker_would_dead_letter_raises_its_reason_and_is_not_sent(changes, reason):
    pub, made = publisher()
    with pytest.raises(RecordRejected) as err:
        pub.send_transaction(tx(7, **changes))
    assert err.value.reason is reason
    assert err.value.event_id == "e7" and err.value.kind == "transaction"
    assert f"({reason.value})" in str(err.value) and "was not sent" in str(err.value)
    assert made[0].sent == []
    assert pub.flush().rejected == [err.value]


def test_a_missing_field_and_bytes_that_are_not_json():
    pub, _ = publisher()
    event = tx(3)
    del event["amount"]
    with pytest.raises(RecordRejected, match=r"transaction 'e3' rejected \(missing_field\)"):
        pub.send_transaction(event)
    with pytest.raises(RecordRejected) as err:
        pub.send_label(b"{not json")
    assert err.value.reason is Reason.INVALID_JSON and err.value.event_id is None
    with pytest.raises(RecordRejected) as err:
        pub.send_transaction(tx(4, amount=object()))
    assert err.value.reason is Reason.WRONG_TYPE and "cannot be written as JSON" in str(err.value)


def test_a_label_before_its_transaction_is_rejected():
    pub, _ = publisher()
    label = {
        "event_id": "e1",
        "customer_id": "c1",
        "terminal_id": "t1",
        "event_time": NOW.isoformat(),
        "label": 0,
        "label_time": (NOW - timedelta(days=1)).isoformat(),
    }
    with pytest.raises(RecordRejected, match="before the transaction's event_time") as err:
        pub.send_label(label)
    assert err.value.reason is Reason.BAD_TIMESTAMP


def test_a_batch_sends_the_good_records_and_returns_one_error_per_bad_one():
    pub, made = publisher()
    events = [tx(0), tx(1, amount=-1), tx(2), tx(3, event_id=""), tx(4)]
    rejected = pub.send_transactions(events)
    assert [(e.index, e.reason) for e in rejected] == [
        (1, Reason.OUT_OF_RANGE),
        (3, Reason.INVALID_ID),
    ]
    assert "transaction #1 'e1' rejected (out_of_range)" in str(rejected[0])
    assert [k for _, k, _ in made[0].sent] == [b"c0", b"c2", b"c1"]
    report = pub.flush()
    assert report.delivered == 3 and len(report.rejected) == 2


def test_a_failed_delivery_raises_with_the_report():
    pub, _ = publisher(fail={"u.labels"})
    pub.send_transaction(tx(1))
    pub.send_label(
        {
            "event_id": "e1",
            "customer_id": "c1",
            "terminal_id": "t1",
            "event_time": tx(1)["event_time"],
            "label": 0,
            "label_time": NOW.isoformat(),
        }
    )
    with pytest.raises(DeliveryFailed, match=r"1 of 2 records failed.*e1 on u\.labels") as err:
        pub.flush()
    assert [d.ok for d in err.value.report.deliveries] == [True, False]


# --- subscriptions and evaluations: arguments --------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"group": "g", "start": 5}, "a group resumes from its committed offsets"),
        ({"group": "g", "until_end": True}, "until_end needs every partition"),
        ({"limit": 0}, "limit must be at least 1"),
        ({"timeout": -1}, "timeout must not be negative"),
        ({"on_invalid": "ignore"}, "on_invalid must be"),
    ],
)
def test_subscription_options_that_cannot_work_are_refused(options, message):
    with pytest.raises(ConfigError, match=message):
        Subscription(ScoreEnvelope, SETTINGS, **options)


def test_the_stream_client_binds_settings_and_record_types():
    client = StreamClient(SETTINGS, topic_prefix="other.")
    assert client.settings.topic("scores") == "other.scores"
    assert client.scores().topic == "other.scores"
    assert client.shadow_scores().topic == "other.scores.shadow"
    assert client.drift().record_type is DriftRecord
    assert client.metrics(start="earliest").start == "earliest"


def test_range_bounds_are_offsets_days_or_aware_times():
    assert _bound(10, end=False).offset == 10
    day_end = _bound(date(2026, 3, 5), end=True)
    assert day_end.time == pytest.approx(datetime(2026, 3, 6, tzinfo=UTC).timestamp() - 1e-6)
    assert (
        _bound(datetime(2026, 3, 4, 12, tzinfo=UTC), end=False).time
        == datetime(2026, 3, 4, 12, tzinfo=UTC).timestamp()
    )
    assert (
        _bound("2026-03-04T00:00:00", end=False).time
        == datetime(2026, 3, 4, tzinfo=UTC).timestamp()
    )
    with pytest.raises(ConfigError, match="no time zone"):
        _bound(datetime(2026, 3, 4), end=False)  # noqa: DTZ001
    with pytest.raises(ConfigError, match="negative"):
        _bound(-1, end=False)


def test_an_evaluation_reads_the_metrics_document():
    document = {
        "range": {"rows": 40},
        "source": {"topic": "t"},
        "champion": "v1",
        "models": [{"version": "v1", "role": "champion"}, {"version": "v2", "role": "challenger"}],
        "metrics": {
            "v1": {
                "auc_roc": 0.9,
                "average_precision": 0.5,
                "card_precision_at_100": 0.02,
                "n": 40,
                "frauds": 3,
            },
            "v2": {
                "auc_roc": float("nan"),
                "average_precision": None,
                "card_precision_at_100": 0.0,
                "n": 40,
                "frauds": 0,
            },
        },
    }
    files = ReportFiles(Path("s"), Path("m"), Path("r"), document)
    evaluation = Evaluation.from_files(files)
    assert evaluation.champion_metrics.auc_roc == 0.9
    assert evaluation.champion_metrics.frauds == 3 and evaluation.rows == 40
    assert evaluation.models["v2"].auc_roc is None and evaluation.models["v2"].role == "challenger"


def test_the_readme_client_section_has_examples_that_compile_and_use_the_public_names():
    """The examples run against a broker in tests/integration/test_client.py; here: they exist,
    compile, and import only what ``stream_app.client`` exports."""
    import re

    import stream_app.client
    from stream_app.config import REPO_ROOT

    text = (REPO_ROOT / "README.md").read_text()
    section = re.search(r"^## Python client\n(.*?)(?=^## )", text, flags=re.MULTILINE | re.DOTALL)
    assert section is not None
    blocks = re.findall(r"^```python\n(.*?)^```", section.group(1), flags=re.MULTILINE | re.DOTALL)
    assert len(blocks) >= 4
    for block in blocks:
        compile(block, "README.md", "exec")
        for names in re.findall(r"^from stream_app\.client import (.+)$", block, re.MULTILINE):
            for name in names.split(","):
                assert name.strip() in stream_app.client.__all__, name


def test_a_metrics_record_with_route_calibration_and_slices_is_typed():
    from stream_app.client.records import MetricsRecord

    quality = {"auc_roc": 0.9, "average_precision": 0.5, "precision_at_k": 0.4, "brier": 0.01}
    calibration = {
        "ece": 0.125,
        "bins": [{"lo": 0.0, "hi": 0.1, "n": 8, "mean_score": 0.05, "fraud_rate": 0.0}],
    }
    raw = orjson.dumps(
        {
            "model_version": "v1-logreg",
            "granularity": "event_day",
            "period": "2018-08-08",
            "labels": 8,
            "metrics": quality,
            "route": "shadow",
            "calibration": calibration,
            "slices": {
                "hour": {"night": {"labels": 8, "metrics": quality, "calibration": calibration}}
            },
        }
    )
    record = parse(MetricsRecord, raw)
    assert record.route == "shadow"
    assert record.calibration is not None and record.calibration.ece == 0.125
    assert record.calibration.bins[0].n == 8
    assert record.slices is not None
    night = record.slices["hour"]["night"]
    assert (night.labels, night.metrics.auc_roc, night.calibration.bins[0].hi) == (8, 0.9, 0.1)
    older = parse(
        MetricsRecord,
        orjson.dumps(
            {
                k: v
                for k, v in orjson.loads(raw).items()
                if k not in ("route", "calibration", "slices")
            }
        ),
    )
    assert (older.route, older.calibration, older.slices) == (None, None, None)


class _RacingConsumer:
    """A consumer of a 2-partition topic on which the worker writes while a subscription opens:
    each partition's end moves from 10 to 15 as soon as the time lookup has been answered (no
    record was at or after the start time when it looked), and partition 1 has one at 3."""

    def __init__(self) -> None:
        self.looked_up = False
        self.assigned: list = []

    def list_topics(self, name: str, timeout: float) -> types.SimpleNamespace:
        partitions = {0: object(), 1: object()}
        return types.SimpleNamespace(
            topics={name: types.SimpleNamespace(error=None, partitions=partitions)}
        )

    def offsets_for_times(self, tps: list, timeout: float) -> list:
        self.looked_up = True
        first_at_or_after = {0: -1, 1: 3}  # -1: none
        return [
            types.SimpleNamespace(partition=tp.partition, offset=first_at_or_after[tp.partition])
            for tp in tps
        ]

    def get_watermark_offsets(self, tp: object, timeout: float, cached: bool) -> tuple[int, int]:
        return (0, 15 if self.looked_up else 10)

    def assign(self, assignment: list) -> None:
        self.assigned = [(tp.partition, tp.offset) for tp in assignment]


def test_a_subscription_from_a_time_reads_what_is_written_while_it_opens():
    """start=datetime: a partition with nothing at or after the time starts at its end as it was
    before the time lookup. Reading the end after it skipped whatever the worker wrote in
    between (CI: the README example got 5 of 20 scores)."""
    subscription = Subscription(ScoreEnvelope, Settings(), start=datetime(2026, 1, 1, tzinfo=UTC))
    consumer = _RacingConsumer()
    subscription._consumer = consumer
    subscription._assign()
    assert consumer.assigned == [(0, 10), (1, 3)]
