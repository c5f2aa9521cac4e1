"""Shadow scoring: records, the bounded hand-off, and the challenger's scores."""

import asyncio

import numpy as np
import orjson
import pytest

from stream_app.io.schemas import validator
from stream_app.scoring.envelope import ScoredEvent
from stream_app.scoring.model import ScoringModel
from stream_app.scoring.shadow import ShadowJob, ShadowScorer, shadow_records
from tests.unit.conftest import make_version


@pytest.fixture
def champion(model_dir):
    return ScoringModel.load(model_dir)


@pytest.fixture
def challenger_dir(tmp_path):
    return make_version(tmp_path / "c", "hgb", seed=3)


@pytest.fixture
def challenger(challenger_dir):
    return ScoringModel.load(challenger_dir)


def _job(champion, n=7, seed=5):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(champion.features))) * 3 + 10
    events = [ScoredEvent(f"e{i}", f"c{i}", f"t{i}", "2018-04-01T00:00:00Z", 0.0) for i in range(n)]
    return ShadowJob.of(events, X, champion.version, champion.score_batch(X))


def test_shadow_records_carry_both_answers(champion, challenger):
    job = _job(champion)
    scorer = ShadowScorer(challenger)
    pairs = scorer.score(job)
    expected = challenger.predict(job.X)
    validate = validator("shadow_score")
    assert [k for k, _ in pairs] == [f"c{i}".encode() for i in range(7)]
    for i, (_, value) in enumerate(pairs):
        record = orjson.loads(value)
        validate(record)
        assert record["challenger"]["event_id"] == f"e{i}"
        assert record["challenger"]["model_version"] == challenger.version
        assert record["challenger"]["score"] == expected[i]
        assert record["champion_version"] == champion.version
        assert record["champion_score"] == job.champion_score[i]
        assert record["champion_decision"] == job.champion_decision[i]
        assert record["agree"] == (record["challenger"]["decision"] == job.champion_decision[i])
        assert record["score_delta"] == expected[i] - job.champion_score[i]
    agreed = sum(orjson.loads(v)["agree"] for _, v in pairs)
    assert (scorer.counts.scored, scorer.counts.agreed) == (7, agreed)


def test_shadow_records_agreement_flag():
    envelopes = [{"score": 0.2, "decision": "approve"}, {"score": 0.6, "decision": "review"}]
    records = shadow_records(
        envelopes, "v1", np.array([0.1, 0.95]), np.array(["approve", "decline"])
    )
    assert [r["agree"] for r in records] == [True, False]
    assert [r["score_delta"] for r in records] == [pytest.approx(0.1), pytest.approx(-0.35)]


def test_offer_never_blocks_and_counts_skipped(champion, challenger):
    async def scenario():
        scorer = ShadowScorer(challenger, max_pending=2)
        results = [scorer.offer(_job(champion, n=3, seed=s)) for s in range(4)]
        return results, scorer.counts.skipped, scorer.queue.qsize()

    results, skipped, queued = asyncio.run(scenario())
    assert results == [True, True, False, False]
    assert (skipped, queued) == (6, 2)


@pytest.mark.parametrize("own_process", [False, True], ids=["thread", "process"])
def test_run_scores_queued_jobs_in_order(champion, challenger, challenger_dir, own_process):
    sent: list[tuple[bytes, bytes]] = []

    async def send(key, value):
        sent.append((key, value))

    async def scenario():
        scorer = ShadowScorer(
            challenger, max_pending=4, version_dir=challenger_dir if own_process else None
        )
        jobs = [_job(champion, n=3, seed=s) for s in range(3)]
        for job in jobs:
            assert scorer.offer(job)
        task = asyncio.create_task(scorer.run(send))
        await asyncio.wait_for(scorer.queue.join(), 60)
        task.cancel()
        scorer.close()
        assert (scorer.counts.scored, scorer.counts.skipped) == (9, 0)
        return jobs

    jobs = asyncio.run(scenario())
    records = [orjson.loads(v) for _, v in sent]
    expected = challenger.predict(np.vstack([j.X for j in jobs]))
    # The three queued jobs were merged into one call; records keep the input order.
    assert [r["challenger"]["event_id"] for r in records] == [
        e.event_id for j in jobs for e in j.events
    ]
    assert [r["challenger"]["score"] for r in records] == pytest.approx(
        expected.tolist(), abs=1e-12
    )
    assert [r["champion_score"] for r in records] == [
        s for j in jobs for s in j.champion_score.tolist()
    ]


def test_merge_keeps_rows_aligned(champion):
    a, b = _job(champion, n=2, seed=1), _job(champion, n=3, seed=2)
    merged = ShadowJob.merge([a, b])
    assert merged.X.shape == (5, len(champion.features))
    assert np.array_equal(merged.X, np.vstack([a.X, b.X]))
    assert merged.champion_decision.tolist() == (
        a.champion_decision.tolist() + b.champion_decision.tolist()
    )
    assert ShadowJob.merge([a]) is a
