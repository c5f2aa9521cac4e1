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
def challenger(tmp_path):
    return ScoringModel.load(make_version(tmp_path / "c", "hgb", seed=3))


def _job(champion, n=7, seed=5):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(champion.features))) * 3 + 10
    events = [ScoredEvent(f"e{i}", f"c{i}", f"t{i}", "2018-04-01T00:00:00Z", 0.0) for i in range(n)]
    return ShadowJob(events, X, champion.version, champion.score_batch(X))


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
        assert record["champion_score"] == job.champion.score[i]
        assert record["champion_decision"] == job.champion.decision[i]
        assert record["agree"] == (record["challenger"]["decision"] == job.champion.decision[i])
        assert record["score_delta"] == expected[i] - job.champion.score[i]
    agreed = sum(orjson.loads(v)["agree"] for _, v in pairs)
    assert (scorer.counts.scored, scorer.counts.agreed) == (7, agreed)


def test_shadow_records_agreement_flag():
    from stream_app.scoring.model import BatchScores

    champion = BatchScores(
        score=np.array([0.1, 0.95]),
        decision=np.array(["approve", "decline"]),
        std=np.zeros(2),
        low=np.zeros(2),
        high=np.zeros(2),
        top_index=np.zeros((2, 1), dtype=np.intp),
        contribution=np.zeros((2, 1)),
        feature_hash=["a", "b"],
    )
    envelopes = [{"score": 0.2, "decision": "approve"}, {"score": 0.6, "decision": "review"}]
    records = shadow_records(envelopes, "v1", champion)
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


def test_run_scores_queued_jobs_in_order(champion, challenger):
    sent: list[tuple[bytes, bytes]] = []

    async def send(key, value):
        sent.append((key, value))

    async def scenario():
        scorer = ShadowScorer(challenger, max_pending=4)
        jobs = [_job(champion, n=3, seed=s) for s in range(3)]
        for job in jobs:
            assert scorer.offer(job)
        task = asyncio.create_task(scorer.run(send))
        await asyncio.wait_for(scorer.queue.join(), 10)
        task.cancel()
        scorer.close()
        return jobs

    jobs = asyncio.run(scenario())
    scores = [orjson.loads(v)["challenger"]["score"] for _, v in sent]
    expected = np.concatenate([challenger.predict(j.X) for j in jobs]).tolist()
    assert scores == expected
