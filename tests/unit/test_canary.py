"""The canary (issue 16, item 1) as plain logic: which customers it decides for, how a change of
share moves them, the scoring stage's two arms in one micro-batch, the serving file's and the
assignment's canary, and the worker's models following it."""

import asyncio
import hashlib
from datetime import UTC, datetime

import numpy as np
import orjson
import pytest

from stream_app.config import Settings
from stream_app.exceptions import ModelIntegrityError, ModelNotFoundError
from stream_app.io.schemas import validate
from stream_app.monitoring.metrics import WorkerMetrics
from stream_app.scoring.assignment import (
    Assignment,
    AssignmentError,
    ModelRef,
    Published,
    decode,
    encode,
    from_serving,
    to_serving,
)
from stream_app.scoring.canary import CanarySpec, canary_rows, in_canary, parse_share
from stream_app.scoring.model import ScoringModel
from stream_app.scoring.serving import promote, read_serving, rollback, set_canary
from stream_app.scoring.shadow import in_sample
from stream_app.sources.schedule import schedule
from stream_app.sources.simulator import simulate
from stream_app.worker.live import LiveModels
from tests.unit.conftest import make_version
from tests.unit.test_stages import run_stages

IDS = [str(i) for i in range(100_000)]


def test_the_canary_is_the_customers_whose_hash_is_below_the_share():
    limit = 0.05 * 2**32

    def place(c):
        digest = hashlib.blake2b(c.encode(), digest_size=4, person=b"canary").digest()
        return int.from_bytes(digest, "big")

    expected = [i for i, c in enumerate(IDS) if place(c) < limit]
    assert canary_rows(IDS, 0.05) == expected
    assert [i for i, c in enumerate(IDS) if in_canary(c, 0.05)] == expected
    assert canary_rows(IDS, 0.0) == [] and canary_rows(IDS, 1.0) == list(range(len(IDS)))
    # 100,000 customers: the share of them within a tenth of a point of the setting
    assert abs(len(expected) / len(IDS) - 0.05) < 0.001


def test_a_larger_share_only_adds_customers_and_a_smaller_only_takes_some_back():
    at = {share: set(canary_rows(IDS, share)) for share in (0.01, 0.05, 0.10, 0.5)}
    assert at[0.01] < at[0.05] < at[0.10] < at[0.5]
    # the fewest moves: going from 5 % to 10 % moves exactly the customers between the two
    moved = at[0.10] - at[0.05]
    assert len(moved) == len(at[0.10]) - len(at[0.05])


def test_the_canary_is_independent_of_the_shadow_sample():
    shadow = {c for c in IDS if in_sample(c, 0.10)}
    canary = {c for c in IDS if in_canary(c, 0.05)}
    overlap = len(shadow & canary) / len(IDS)
    assert abs(overlap - 0.10 * 0.05) < 0.001  # not nested: about the product of the two
    assert not canary <= shadow


@pytest.mark.parametrize(
    ("text", "share"), [("5%", 0.05), ("0.05", 0.05), (" 12.5 % ".replace(" ", ""), 0.125)]
)
def test_parse_share_reads_percentages_and_fractions(text, share):
    assert parse_share(text) == share


@pytest.mark.parametrize("text", ["five", "120%", "-1", "1.5"])
def test_parse_share_refuses_what_is_not_a_share(text):
    with pytest.raises(ValueError, match=r"share|outside"):
        parse_share(text)


@pytest.mark.parametrize(
    "data", [{"version": "", "share": 0.1}, {"version": "v", "share": 2}, {"version": "v"}]
)
def test_a_canary_object_off_its_shape_is_refused(data):
    with pytest.raises(ModelIntegrityError, match="canary"):
        CanarySpec.of(data)


# --- the scoring stage's two arms ---------------------------------------------------------------


@pytest.fixture
def two_models(tmp_path):
    champion = ScoringModel.load(make_version(tmp_path, "logreg"))
    canary = ScoringModel.load(make_version(tmp_path, "logreg", seed=1, name="v-canary"))
    return champion, canary


def test_the_canary_decides_for_its_customers_and_the_champion_for_the_others(two_models):
    champion, canary = two_models
    stream = list(
        simulate(
            n_customers=300,
            n_terminals=100,
            days=20,
            seed=3,
            start=datetime(2018, 4, 1, tzinfo=UTC),
        )
    )
    records = [(r.topic, r.key.encode(), r.value) for r in schedule(stream, labels=False)]
    plain, _, _, _ = run_stages(records, champion)
    split, _, _, _ = run_stages(records, champion, canary=(canary, 0.2))
    assert [e["event_id"] for e in split] == [e["event_id"] for e in plain]  # the batch's order
    on = {e["customer_id"] for e in split if e["route"] == "canary"}
    assert on == {e["customer_id"] for e in split if in_canary(e["customer_id"], 0.2)}
    assert 0.1 < len(on) / len({e["customer_id"] for e in split}) < 0.3
    for before, after in zip(plain, split, strict=True):
        validate("score_envelope", after)
        assert after["champion_version"] == champion.version
        assert after["canary_version"] == canary.version
        assert after["feature_hash"] == before["feature_hash"]  # the same features either way
        if after["customer_id"] in on:
            assert after["route"] == "canary" and after["model_version"] == canary.version
            X = np.array([[after["features"][f] for f in canary.features]])
            assert after["score"] == pytest.approx(float(canary.predict(X)[0]), abs=1e-12)
        else:
            assert after["route"] == "champion"
            same = ("model_version", "decision", "training_data_tag", "event_time", "features")
            assert {k: after[k] for k in same} == {k: before[k] for k in same}
            assert after["score"] == pytest.approx(before["score"], rel=1e-9, abs=1e-15)
    assert all(e["route"] == "champion" and e["canary_version"] is None for e in plain)


def test_the_shadow_and_the_drift_window_get_only_the_champions_rows(two_models):
    champion, canary = two_models
    stream = list(simulate(n_customers=60, n_terminals=20, n_events=400, seed=2))
    records = [(r.topic, r.key.encode(), r.value) for r in schedule(stream, labels=False)]
    outputs = []
    envelopes, _, _, _ = run_stages(records, champion, canary=(canary, 0.3), outputs=outputs)
    handed = [e.event_id for out in outputs for e in out.events]
    assert handed == [e["event_id"] for e in envelopes if e["route"] == "champion"]
    assert (
        sum(out.canary_scored for out in outputs)
        == sum(e["route"] == "canary" for e in envelopes)
        > 0
    )
    for out in outputs:
        if out.X is not None:
            assert out.X.shape[0] == len(out.events) == len(out.champion.score) == len(out.event_ts)


# --- serving.json and the assignment ----------------------------------------------------------


@pytest.fixture
def registry(tmp_path):
    root = tmp_path / "models"
    make_version(root, "logreg")
    make_version(root, "logreg", seed=1, name="v-hgb")
    promote(root, "v-logreg")
    return root


def test_a_canary_makes_its_version_the_challenger_and_records_both_shares(registry):
    serving = set_canary(registry, "v-hgb", 0.05, by="ana@host", audit={"id": "x", "reason": "r"})
    assert serving.challenger == "v-hgb"
    assert serving.canary == {"version": "v-hgb", "share": 0.05}
    entry = serving.history[-1]
    assert entry | {"at": None} == {
        "role": "canary",
        "version": "v-hgb",
        "previous": None,
        "action": "canary",
        "share": 0.05,
        "previous_share": 0.0,
        "challenger_before": None,
        "at": None,
        "by": "ana@host",
        "id": "x",
        "reason": "r",
    }
    assert read_serving(registry) == serving
    wider = set_canary(registry, "v-hgb", 0.10)
    assert wider.history[-1]["previous_share"] == 0.05 and wider.canary["share"] == 0.10
    off = set_canary(registry, None, 0.0)
    assert off.canary is None and off.challenger == "v-hgb"  # the shadow goes on
    with pytest.raises(ModelNotFoundError, match="No canary"):
        set_canary(registry, None, 0.0)


def test_the_champion_cannot_be_its_own_canary(registry):
    with pytest.raises(ModelIntegrityError, match="is the champion"):
        set_canary(registry, "v-logreg", 0.05)


def test_promoting_the_canary_or_replacing_the_challenger_ends_the_canary(registry):
    set_canary(registry, "v-hgb", 0.05)
    assert promote(registry, "v-hgb").canary is None  # promoted: it serves everyone
    set_canary(registry, "v-logreg", 0.05)  # the old champion as the canary now
    assert promote(registry, None, "challenger").canary is None


def test_rolling_the_challenger_back_undoes_the_canarys_install(registry):
    set_canary(registry, "v-hgb", 0.05)  # no challenger before: the canary installed it
    back = rollback(registry, "challenger")
    assert back.challenger is None and back.canary is None
    assert back.history[-1]["previous"] == "v-hgb"


def test_the_assignment_carries_the_canary_both_ways(registry):
    serving = set_canary(registry, "v-hgb", 0.05)
    assignment = from_serving(serving, registry, "group", "file:///models/")
    assert assignment.canary == {"version": "v-hgb", "share": 0.05}
    again = decode(encode(assignment))
    assert again.canary_spec() == CanarySpec("v-hgb", 0.05)
    assert to_serving(again).canary == {"version": "v-hgb", "share": 0.05}
    broken = orjson.loads(encode(assignment))
    broken["canary"]["share"] = 1.5
    with pytest.raises(AssignmentError, match="share"):
        decode(orjson.dumps(broken))


# --- the worker's models follow it ----------------------------------------------------------


class Stage:
    def __init__(self):
        self.canary = None

    def use_models(self, champion, extra_features):
        pass

    def use_canary(self, canary, share=0.0):
        self.canary = (canary.version, share) if canary is not None else None


def ref(version):
    return ModelRef(version, f"file:///m/{version}/", "a" * 64, "b" * 64)


def test_live_models_turn_the_canary_on_and_off_with_the_assignment(two_models, tmp_path):
    champion, challenger = two_models
    settings = Settings(models_dir=tmp_path, drift_enabled=False)
    stage = Stage()
    metrics = WorkerMetrics()
    live = LiveModels(settings, champion, None, stage, metrics, frozenset({"champion"}))

    def assigned(offset, canary):
        return Published(
            Assignment("g", ref(champion.version), ref(challenger.version), canary), offset
        )

    async def run():
        live.use_challenger(challenger)  # pinned challenger: the version the canary names
        await live.follow_assignment(
            assigned(1, {"version": challenger.version, "share": 0.05}), lambda r: tmp_path
        )
        assert stage.canary == (challenger.version, 0.05) and live.canary_active
        assert live.assignment_state()["canary"] == {
            "version": challenger.version,
            "share": 0.05,
            "active": True,
            "pinned": False,
        }
        assert (
            metrics.registry.get_sample_value(
                "stream_app_canary_share", {"version": challenger.version}
            )
            == 0.05
        )
        await live.follow_assignment(
            assigned(2, {"version": "other", "share": 0.05}), lambda r: tmp_path
        )
        assert stage.canary is None and not live.canary_active
        assert f"NOT on: this worker's challenger is {challenger.version}" in live.canary_detail
        await live.follow_assignment(assigned(3, None), lambda r: tmp_path)
        assert stage.canary is None and live.canary_detail == "no canary"
        assert (
            metrics.registry.get_sample_value(
                "stream_app_canary_share", {"version": challenger.version}
            )
            is None
        )

    asyncio.run(run())


def test_the_setting_pins_the_share_for_whatever_challenger_is_served(two_models, tmp_path):
    champion, challenger = two_models
    settings = Settings(models_dir=tmp_path, drift_enabled=False, canary_share=0.2)
    stage = Stage()
    live = LiveModels(settings, champion, challenger, stage, WorkerMetrics(), frozenset())
    assert stage.canary == (challenger.version, 0.2)
    assert live.canary_arm() == (challenger, 0.2)  # what the HTTP API's what-if uses
    assert not live.use_canary_spec(None)  # the assignment's canary is ignored
    assert stage.canary == (challenger.version, 0.2)
    live.use_challenger(None)
    assert stage.canary is None and live.canary_arm() is None


def test_a_what_if_is_decided_by_the_arm_the_stream_would_use(two_models):
    from stream_app.api.scoring import deciding_model, score_envelope
    from stream_app.features.definitions import FEATURE_NAMES
    from stream_app.io.codecs import Transaction

    champion, canary = two_models
    on = next(c for c in IDS if in_canary(c, 0.05))
    off = next(c for c in IDS if not in_canary(c, 0.05))
    assert deciding_model(champion, (canary, 0.05), on) == ("canary", canary)
    assert deciding_model(champion, (canary, 0.05), off) == ("champion", champion)
    assert deciding_model(champion, None, on) == ("champion", champion)
    tx = Transaction("e1", "2026-05-01T00:00:00+00:00", 1_777_593_600.0, on, "t1", 12.5)
    route, model = deciding_model(champion, (canary, 0.05), on)
    envelope = score_envelope(
        model,
        tx,
        [1.0] * len(FEATURE_NAMES),
        0.0,
        route=route,
        champion_version=champion.version,
        canary_version=canary.version,
    )
    validate("score_envelope", envelope)
    assert (envelope["route"], envelope["model_version"], envelope["champion_version"]) == (
        "canary",
        canary.version,
        champion.version,
    )
