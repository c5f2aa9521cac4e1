"""models/serving.json: promote and rollback (verified first, atomic), which version a worker
starts with, change detection, and LiveModels swapping between batches."""

import asyncio
import os
import shutil

import orjson
import pytest

from stream_app.config import Settings
from stream_app.exceptions import ModelIntegrityError, ModelNotFoundError
from stream_app.monitoring.metrics import WorkerMetrics
from stream_app.scoring.model import ScoringModel
from stream_app.scoring.serving import (
    ServingWatcher,
    promote,
    read_serving,
    rollback,
    served_version,
    serving_path,
)
from stream_app.worker.live import LiveModels
from tests.unit.conftest import make_version


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    root = tmp_path_factory.mktemp("registry") / "models"
    make_version(root, "logreg")
    make_version(root, "hgb")
    return root  # versions v-logreg, v-hgb (v-logreg is the newest by name)


@pytest.fixture
def registry(template, tmp_path):
    return shutil.copytree(template, tmp_path / "models")


def test_promote_and_rollback_keep_a_history(registry):
    assert read_serving(registry) is None
    s = promote(registry, "v-hgb")
    assert (s.champion, s.challenger) == ("v-hgb", None)
    assert s.history[-1] | {"at": None} == {
        "role": "champion",
        "version": "v-hgb",
        "previous": "v-logreg",  # what a worker served without the file: the newest
        "action": "promote",
        "at": None,
    }
    s = promote(registry, "v-logreg", "challenger")
    assert (s.champion, s.challenger) == ("v-hgb", "v-logreg")
    s = rollback(registry)  # champion back to what v-hgb replaced
    assert (s.champion, s.challenger) == ("v-logreg", "v-logreg")
    s = rollback(registry, "challenger")  # the challenger replaced nothing: no challenger
    assert s.challenger is None
    on_disk = orjson.loads(serving_path(registry).read_bytes())
    assert on_disk["champion"] == "v-logreg" and on_disk["challenger"] is None
    assert [h["action"] for h in on_disk["history"]] == [
        "promote",
        "promote",
        "rollback",
        "rollback",
    ]
    with pytest.raises(ModelNotFoundError, match="No earlier champion"):
        rollback(registry)  # v-logreg came back by a rollback, not a promotion


def test_a_tampered_version_is_not_promoted_and_the_file_is_unchanged(registry):
    promote(registry, "v-logreg")
    before = serving_path(registry).read_bytes()
    artifact = registry / "v-hgb" / "model.joblib"
    artifact.write_bytes(artifact.read_bytes()[:-10])
    with pytest.raises(ModelIntegrityError, match="SHA-256"):
        promote(registry, "v-hgb")
    with pytest.raises(ModelNotFoundError, match="not found"):
        promote(registry, "v-nope")
    with pytest.raises(ModelNotFoundError, match="champion is always needed"):
        promote(registry, None)
    assert serving_path(registry).read_bytes() == before
    assert not [p for p in registry.iterdir() if p.name.startswith(".serving-")]


def test_served_version_pinned_then_file_then_newest(registry):
    assert served_version(registry, "champion", None) == "v-logreg"
    assert served_version(registry, "challenger", None) is None
    promote(registry, "v-hgb")
    promote(registry, "v-logreg", "challenger")
    assert served_version(registry, "champion", None) == "v-hgb"
    assert served_version(registry, "challenger", None) == "v-logreg"
    assert served_version(registry, "champion", "v-logreg") == "v-logreg"


def test_malformed_serving_file_is_a_clear_error(registry):
    serving_path(registry).write_text("{oops")
    with pytest.raises(ModelIntegrityError, match="not valid JSON"):
        read_serving(registry)
    serving_path(registry).write_text('{"champion": 3}')
    with pytest.raises(ModelIntegrityError, match="string or null"):
        read_serving(registry)


def test_watcher_reports_each_change_once(registry):
    watcher = ServingWatcher(registry)
    assert watcher.changed() is None
    promote(registry, "v-hgb")
    assert watcher.changed().champion == "v-hgb"
    assert watcher.changed() is None
    promote(registry, "v-logreg")
    assert watcher.changed().champion == "v-logreg"


class FakeStage:
    def __init__(self):
        self.calls = []

    def use_models(self, champion, extra_features):
        self.calls.append((champion.version, tuple(extra_features)))

    def use_canary(self, canary, share=0.0):
        self.canary = (canary.version, share) if canary is not None else None


def live_models(registry, follow):
    settings = Settings(models_dir=registry, drift_enabled=True)
    stage, metrics = FakeStage(), WorkerMetrics()
    champion = ScoringModel.load(registry / "v-logreg")
    return LiveModels(settings, champion, None, stage, metrics, frozenset(follow)), stage, metrics


def test_live_models_follow_promotions_and_refuse_bad_versions(registry):
    live, stage, metrics = live_models(registry, {"champion", "challenger"})
    old_drift = live.drift

    async def scenario():
        changes = await live.follow_serving(promote(registry, "v-hgb"))
        assert changes == ["champion v-logreg -> v-hgb"]
        assert live.champion.version == "v-hgb" and live.drift is not old_drift
        assert live.drift is not None

        changes = await live.follow_serving(promote(registry, "v-logreg", "challenger"))
        assert changes == ["challenger None -> v-logreg"]
        assert live.challenger.version == "v-logreg"
        scorer = live.shadow

        # a version broken after its promotion is refused at load: nothing changes
        shutil.copytree(registry / "v-hgb", registry / "v-hgb2")
        manifest = orjson.loads((registry / "v-hgb2" / "manifest.json").read_bytes())
        (registry / "v-hgb2" / "manifest.json").write_bytes(
            orjson.dumps(manifest | {"version": "v-hgb2"})
        )
        serving = promote(registry, "v-hgb2", "challenger")
        (registry / "v-hgb2" / "model.joblib").write_bytes(b"tampered")
        assert await live.follow_serving(serving) == []
        assert live.shadow is scorer and not scorer.closed

        changes = await live.follow_serving(rollback(registry, "challenger"))
        assert changes == []  # rollback goes back to v-logreg: already served
        changes = await live.follow_serving(promote(registry, None, "challenger"))
        assert changes == ["challenger v-logreg -> None"] and live.shadow is None
        assert scorer.closed

    asyncio.run(scenario())
    assert stage.calls[-1] == ("v-hgb", ())
    assert ("v-hgb", tuple(live.champion.features)) in stage.calls  # with the challenger's
    info = [
        line for line in metrics.render().decode().splitlines() if line.startswith("stream_app_")
    ]
    assert any(
        line.startswith('stream_app_model_info{sha256="') and "v-hgb" in line for line in info
    )
    assert "stream_app_challenger_info 1.0" in info  # cleared: no labels


def test_pinned_roles_ignore_promotions(registry):
    live, stage, _ = live_models(registry, set())
    assert stage.calls == [("v-logreg", ())]  # set up once
    assert asyncio.run(live.follow_serving(promote(registry, "v-hgb"))) == []
    assert live.champion.version == "v-logreg" and stage.calls == [("v-logreg", ())]


def test_promote_write_is_atomic_rename(registry, monkeypatch):
    calls = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append((a, b)), real(a, b)))
    promote(registry, "v-hgb")
    ((tmp, final),) = calls
    assert str(final) == str(serving_path(registry)) and ".serving-" in str(tmp)
