"""Log output: JSON lines carry the scoring fields; text lines stay readable; the per-event
scoring log costs nothing above DEBUG."""

import json
import logging

import numpy as np
import pytest

from stream_app.config import Settings
from stream_app.logs import configure_logging, log_scores
from stream_app.scoring.envelope import ScoredEvent
from stream_app.scoring.model import BatchScores


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def batch() -> tuple[list[ScoredEvent], BatchScores]:
    events = [
        ScoredEvent("e1", "c1", "t1", "2018-04-01T00:00:00+00:00", 0.0),
        ScoredEvent("e2", "c2", "t2", "2018-04-01T00:00:01+00:00", 0.0),
    ]
    scores = BatchScores(
        score=np.array([0.91, 0.02]),
        decision=np.array(["review", "approve"]),
        std=np.zeros(2),
        low=np.zeros(2),
        high=np.zeros(2),
        top_index=np.zeros((2, 1), dtype=np.intp),
        contribution=np.zeros((2, 1)),
        feature_hash=["aa" * 16, "bb" * 16],
    )
    return events, scores


def test_json_lines_carry_event_id_model_version_and_feature_hash(capsys, restore_logging):
    configure_logging(Settings(log_format="json", log_level="DEBUG"))
    events, scores = batch()
    log_scores(logging.getLogger("stream_app.scored"), events, scores, "v7")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(r["event_id"], r["model_version"], r["feature_hash"]) for r in lines] == [
        ("e1", "v7", "aa" * 16),
        ("e2", "v7", "bb" * 16),
    ]
    first = lines[0]
    assert first["level"] == "DEBUG" and first["logger"] == "stream_app.scored"
    assert first["score"] == 0.91 and first["decision"] == "review"
    assert first["message"] == f"scored e1: 0.9100 review (model v7, features {'aa' * 16})"
    assert {"time", "pid"} <= first.keys()


def test_text_lines_are_for_people(capsys, restore_logging):
    configure_logging(Settings(log_format="text", log_level="INFO"))
    logging.getLogger("stream_app.worker").info("last 30 s: scored %s", "1,234")
    (line,) = capsys.readouterr().err.splitlines()
    assert line.endswith("[INFO] stream_app.worker: last 30 s: scored 1,234")
    assert not line.startswith("{")


def test_scoring_log_is_off_at_info(capsys, restore_logging):
    configure_logging(Settings(log_format="json", log_level="INFO"))
    assert not logging.getLogger("stream_app.scored").isEnabledFor(logging.DEBUG)
    events, scores = batch()
    log_scores(logging.getLogger("stream_app.scored"), events, scores, "v7")
    assert capsys.readouterr().err == ""
