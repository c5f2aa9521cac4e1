"""The model assignment: its record on the control topic, URI fetch and SHA-256 checks into a
worker's own models directory, and LiveModels applying it (or refusing it) between batches."""

import asyncio
import functools
import hashlib
import http.server
import shutil
import threading

import orjson
import pytest

from stream_app.config import Settings
from stream_app.monitoring.metrics import WorkerMetrics
from stream_app.scoring.artifacts import (
    REASON_FETCH,
    REASON_MANIFEST,
    REASON_SHA256,
    ArtifactRefused,
    child_uri,
    fetch_bytes,
    materialise,
)
from stream_app.scoring.assignment import (
    Assignment,
    AssignmentError,
    ModelRef,
    Published,
    decode,
    encode,
    from_serving,
    model_ref,
    to_serving,
)
from stream_app.scoring.model import ScoringModel
from stream_app.scoring.serving import Serving
from stream_app.worker.live import LiveModels
from tests.unit.conftest import make_version
from tests.unit.test_serving import FakeStage

A64, B64, C64 = "a" * 64, "b" * 64, "c" * 64
TAMPERED_SHA256 = "d121be3103007b41edf96f8262925f8c7d61894afe9a041843b631f69445bc57"  # b"tampered"
AUDIT = {
    "role": "champion",
    "version": "v2",
    "previous": "v1",
    "action": "promote",
    "at": "2026-11-23T12:05:00+00:00",
    "by": "ann@box",
}


# --- the record -------------------------------------------------------------------------------


def test_record_bytes_are_exact_and_round_trip() -> None:
    assignment = Assignment(
        group="fraud",
        champion=ModelRef("v2", "http://models.local/m/v2/", A64, B64),
        challenger=ModelRef("v1", "file:///shared/m/v1/", C64, A64),
        audit=AUDIT,
        history=({"action": "promote", "role": "champion", "version": "v1", "by": "bo@vm"},),
    )
    value = encode(assignment)
    assert value == (
        b'{"schema":1,"group":"fraud",'
        b'"champion":{"version":"v2","uri":"http://models.local/m/v2/","sha256":"'
        + A64.encode()
        + b'","manifest_sha256":"'
        + B64.encode()
        + b'"},'
        b'"challenger":{"version":"v1","uri":"file:///shared/m/v1/","sha256":"'
        + C64.encode()
        + b'","manifest_sha256":"'
        + A64.encode()
        + b'"},'
        b'"canary":null,'
        b'"audit":{"role":"champion","version":"v2","previous":"v1","action":"promote",'
        b'"at":"2026-11-23T12:05:00+00:00","by":"ann@box"},'
        b'"history":[{"action":"promote","role":"champion","version":"v1","by":"bo@vm"}]}'
    )
    assert decode(value) == assignment
    assert decode(value).versions() == {"champion": "v2", "challenger": "v1"}


def test_decode_normalises_digests_and_keeps_a_canary_for_later() -> None:
    value = orjson.dumps(
        {
            "schema": 1,
            "group": "g",
            "champion": {
                "version": "v",
                "uri": "/m/v/",
                "sha256": "AB" * 32,
                "manifest_sha256": B64,
            },
            "challenger": None,
            "canary": {"version": "v3", "share": 0.05},
            "audit": AUDIT,
            "history": [],
            "future_field": 1,
        }
    )
    a = decode(value)
    assert a.champion.sha256 == "ab" * 32 and a.challenger is None
    assert a.canary == {"version": "v3", "share": 0.05}


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"schema": 2}, "schema 2 is not 1: written by another version"),
        ({"group": ""}, "group must be a non-empty string"),
        ({"champion": None}, "champion must be an object, got None"),
        (
            {"champion": {"version": "v", "uri": "u", "sha256": "x", "manifest_sha256": B64}},
            "champion.sha256 must be 64 hex digits, got 'x'",
        ),
        (
            {"challenger": {"version": "v", "uri": "", "sha256": A64, "manifest_sha256": B64}},
            "challenger.uri must be a non-empty string, got ''",
        ),
        ({"canary": 0.1}, "canary must be an object or null, got 0.1"),
    ],
)
def test_decode_says_what_is_wrong(change: dict, match: str) -> None:
    good = orjson.loads(encode(Assignment("g", ModelRef("v", "/m/v/", A64, B64), audit=AUDIT)))
    with pytest.raises(AssignmentError, match=match):
        decode(orjson.dumps(good | change))
    with pytest.raises(AssignmentError, match="not JSON"):
        decode(b"{nope")


# --- from serving.json, and back ----------------------------------------------------------------


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A registry with v-logreg and v-hgb: the directory workers fetch from."""
    root = tmp_path_factory.mktemp("shared") / "models"
    make_version(root, "logreg")
    make_version(root, "hgb")
    return root


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_model_ref_names_the_uri_and_both_digests(source) -> None:
    ref = model_ref(source, "v-hgb", "https://models.example/registry/")
    manifest = orjson.loads((source / "v-hgb" / "manifest.json").read_bytes())
    assert ref == ModelRef(
        "v-hgb",
        "https://models.example/registry/v-hgb/",
        manifest["sha256"],
        digest(source / "v-hgb" / "manifest.json"),
    )
    assert manifest["sha256"] == digest(source / "v-hgb" / "model.joblib")


def test_from_serving_takes_the_latest_history_entry_as_audit(source) -> None:
    history = [
        {
            "role": "champion",
            "version": "v-logreg",
            "previous": None,
            "action": "promote",
            "at": "t1",
        },
        dict(AUDIT, version="v-hgb", previous="v-logreg", at="t2"),
    ]
    serving = Serving("v-hgb", "v-logreg", "t2", history)
    a = from_serving(serving, source, "fraud", "file:///shared/models", by="cli@host")
    assert a.group == "fraud"
    assert a.champion == model_ref(source, "v-hgb", "file:///shared/models")
    assert a.challenger.uri == "file:///shared/models/v-logreg/"
    assert a.audit == dict(AUDIT, version="v-hgb", previous="v-logreg", at="t2")  # its own "by"
    assert a.history == (history[0],)  # an entry without "by" is not attributed to anyone
    back = to_serving(a)
    assert (back.champion, back.challenger, back.updated_at) == ("v-hgb", "v-logreg", "t2")
    assert back.history == history
    # a role whose version is unchanged keeps the published reference as it was
    kept = ModelRef("v-logreg", "http://elsewhere/v-logreg/", A64, B64)
    again = from_serving(
        serving, source, "fraud", "file:///x", previous=Assignment("fraud", a.champion, kept)
    )
    assert again.challenger is kept and again.champion == a.champion


# --- fetch by URI, verify, then cache ------------------------------------------------------------


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_registry(source):
    """``source`` served over HTTP by the standard library's server, on a free port."""
    handler = functools.partial(QuietHandler, directory=str(source))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_child_uri_and_fetch_bytes_by_path_and_file_uri(source) -> None:
    assert child_uri("http://h/m/v-1/", "model.joblib") == "http://h/m/v-1/model.joblib"
    assert child_uri("file:///s/m/v1", "a b.json") == "file:///s/m/v1/a%20b.json"
    assert child_uri("/s/m/v-1", "manifest.json") == "/s/m/v-1/manifest.json"
    manifest = (source / "v-hgb" / "manifest.json").read_bytes()
    assert fetch_bytes(str(source / "v-hgb" / "manifest.json"), 5) == manifest
    assert fetch_bytes((source / "v-hgb" / "manifest.json").as_uri(), 5) == manifest
    with pytest.raises(ArtifactRefused, match="only file://, plain paths and http") as info:
        fetch_bytes("s3://bucket/m", 5)
    assert info.value.reason == REASON_FETCH


@pytest.mark.parametrize("scheme", ["file", "path", "http"])
def test_fetch_into_the_cache_then_reuse_it(source, http_registry, tmp_path, scheme) -> None:
    base = {"file": source.as_uri(), "path": str(source), "http": http_registry}[scheme]
    ref = model_ref(source, "v-hgb", base)
    cache = tmp_path / "worker-models"
    path, fetched = materialise(ref, cache, timeout=10)
    assert (path, fetched) == (cache / "v-hgb", True)
    for name in ("manifest.json", "model.joblib"):
        assert (path / name).read_bytes() == (source / "v-hgb" / name).read_bytes()
    assert sorted(p.name for p in cache.iterdir()) == ["v-hgb"]  # no temporary left
    assert materialise(ref, cache, timeout=10) == (cache / "v-hgb", False)  # checked, not fetched
    assert ScoringModel.load(path).sha256 == ref.sha256


def test_http_404_is_a_fetch_failure(source, http_registry, tmp_path) -> None:
    ref = model_ref(source, "v-hgb", http_registry)
    missing = ModelRef("v-gone", http_registry + "v-gone/", ref.sha256, ref.manifest_sha256)
    with pytest.raises(
        ArtifactRefused, match=r"cannot fetch http://.*/v-gone/manifest.json: HTTP 404"
    ) as info:
        materialise(missing, tmp_path / "cache", timeout=10)
    assert info.value.reason == REASON_FETCH
    assert not (tmp_path / "cache" / "v-gone").exists()


def test_a_tampered_source_is_refused_and_nothing_is_cached(source, tmp_path) -> None:
    bad = shutil.copytree(source, tmp_path / "bad")
    ref = model_ref(source, "v-hgb", bad.as_uri())
    (bad / "v-hgb" / "model.joblib").write_bytes(b"tampered")
    cache = tmp_path / "cache"
    with pytest.raises(ArtifactRefused) as info:
        materialise(ref, cache, timeout=10)
    assert info.value.reason == REASON_SHA256
    assert str(info.value) == (
        f"{bad.as_uri()}/v-hgb/model.joblib has SHA-256 {TAMPERED_SHA256} but its manifest and "
        f"the assignment say {ref.sha256}"
    )
    assert not cache.exists() or list(cache.iterdir()) == []


def test_a_changed_manifest_is_refused(source, tmp_path) -> None:
    bad = shutil.copytree(source, tmp_path / "bad")
    ref = model_ref(source, "v-hgb", bad.as_uri())
    manifest = orjson.loads((bad / "v-hgb" / "manifest.json").read_bytes())
    manifest["thresholds"]["decline"] = 0.99  # same artifact, other decisions
    (bad / "v-hgb" / "manifest.json").write_bytes(orjson.dumps(manifest))
    with pytest.raises(
        ArtifactRefused, match=r"manifest.json has SHA-256 .* but the assignment"
    ) as info:
        materialise(ref, tmp_path / "cache", timeout=10)
    assert info.value.reason == REASON_MANIFEST


def test_a_tampered_cache_is_refused_and_kept_as_evidence(source, tmp_path) -> None:
    ref = model_ref(source, "v-hgb", source.as_uri())
    cache = tmp_path / "cache"
    path, _ = materialise(ref, cache, timeout=10)
    (path / "model.joblib").write_bytes(b"tampered")
    with pytest.raises(ArtifactRefused) as info:
        materialise(ref, cache, timeout=10)
    assert info.value.reason == REASON_SHA256
    assert str(info.value) == (
        f"{path}/model.joblib has SHA-256 {TAMPERED_SHA256} but its manifest and the assignment "
        f"say {ref.sha256} (the copy in this worker's models directory; it is kept as it is: "
        f"delete {path} to fetch the version again from {ref.uri})"
    )
    assert (path / "model.joblib").read_bytes() == b"tampered"
    shutil.rmtree(path)  # what the message says to do
    assert materialise(ref, cache, timeout=10) == (path, True)


# --- a worker applies it --------------------------------------------------------------------------


def test_live_models_follow_the_assignment_and_refuse_a_tampered_copy(source, tmp_path) -> None:
    cache = shutil.copytree(source, tmp_path / "worker-models")
    settings = Settings(models_dir=cache, drift_enabled=False)
    stage, metrics = FakeStage(), WorkerMetrics()
    live = LiveModels(
        settings,
        ScoringModel.load(cache / "v-logreg"),
        None,
        stage,
        metrics,
        frozenset({"champion", "challenger"}),
    )
    base = source.as_uri()
    logreg, hgb = model_ref(source, "v-logreg", base), model_ref(source, "v-hgb", base)

    def fetch(ref):
        return materialise(ref, cache, timeout=10)[0]

    def published(offset, champion, challenger=None):
        return Published(Assignment("g", champion, challenger, audit=AUDIT), offset)

    async def scenario():
        assert await live.follow_assignment(published(0, hgb), fetch) == [
            "champion v-logreg -> v-hgb"
        ]
        assert live.in_step() == {"champion": True, "challenger": True}
        (cache / "v-logreg" / "model.joblib").write_bytes(b"tampered")
        assert await live.follow_assignment(published(1, logreg, hgb), fetch) == [
            "challenger None -> v-hgb"
        ]
        assert live.champion.version == "v-hgb"  # refused: still serving
        assert live.in_step() == {"champion": False, "challenger": True}
        state = live.assignment_state()
        assert state["ok"] is True and state["in_step"] is False
        assert state["serving"] == {"champion": "v-hgb", "challenger": "v-hgb"}
        assert state["assigned"] == {"champion": "v-logreg", "challenger": "v-hgb"}
        assert state["refused"]["champion"]["reason"] == REASON_SHA256
        assert f"SHA-256 {TAMPERED_SHA256}" in state["detail"]
        # within the retry interval the same refusal is not tried again
        assert await live.follow_assignment(published(1, logreg, hgb), fetch, retry_s=60) == []
        assert await live.follow_assignment(published(1, logreg, hgb), fetch, retry_s=0) == []
        shutil.rmtree(cache / "v-logreg")  # the operator deletes the bad copy: fetched again
        assert await live.follow_assignment(published(1, logreg, hgb), fetch, retry_s=0) == [
            "champion v-hgb -> v-logreg"
        ]
        assert live.in_step() == {"champion": True, "challenger": True}
        assert "refused" not in live.assignment_state()

    asyncio.run(scenario())
    text = metrics.render().decode()
    assert 'stream_app_model_refused_total{reason="sha256_mismatch",role="champion"} 2.0' in text
    assert 'stream_app_model_serving{role="champion",version="v-logreg"} 1.0' in text
    assert 'stream_app_model_serving{role="challenger",version="v-hgb"} 1.0' in text
    assert 'stream_app_model_serving{role="champion",version="v-hgb"}' not in text
    assert 'stream_app_model_assigned{role="champion",version="v-logreg"} 1.0' in text
    assert 'stream_app_model_in_step{role="champion"} 1.0' in text
