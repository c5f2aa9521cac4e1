"""served_frame: labels joined to served scores, range and handbook-protocol filtering."""

from datetime import UTC, date, datetime

import orjson
import pytest

from stream_app.evaluation.served_scores import (
    LABELS,
    SCORES,
    SHADOW,
    ServedData,
    _take,
    served_frame,
)
from stream_app.exceptions import DatasetError

DAY = 86_400.0
T0 = datetime(2018, 8, 8, tzinfo=UTC).timestamp()  # first test day


def envelope(event_id, version, score, customer="c"):
    return {
        "event_id": event_id,
        "model_version": version,
        "model_sha256": "a" * 64,
        "training_data_tag": "tag",
        "score": score,
        "customer_id": customer,
    }


def label(event_id, customer, ts, value):
    iso = datetime.fromtimestamp(ts, UTC).isoformat()
    return orjson.dumps(
        {
            "event_id": event_id,
            "customer_id": customer,
            "terminal_id": "t",
            "event_time": iso,
            "label": value,
            "label_time": iso,
        }
    )


def data_with(rows):
    """rows: (event id, customer, ts, label, champion score or None, challenger score or None)"""
    data = ServedData()
    for event_id, customer, ts, y, champ, chall in rows:
        _take(data, LABELS, label(event_id, customer, ts, y), 65_536)
        if champ is not None:
            _take(data, SCORES, orjson.dumps(envelope(event_id, "champ", champ)), 65_536)
        if chall is not None:
            shadow = {"challenger": envelope(event_id, "chall", chall)}
            _take(data, SHADOW, orjson.dumps(shadow), 65_536)
    return data


def test_range_and_both_models():
    data = data_with(
        [
            ("before", "a", T0 - 1, 0, 0.1, 0.2),
            ("x", "a", T0 + 10, 1, 0.9, 0.8),
            ("y", "b", T0 + DAY, 0, 0.3, 0.4),
            ("no-shadow", "b", T0 + DAY, 0, 0.3, None),  # every model must have scored it
            ("after", "b", T0 + 2 * DAY, 0, 0.3, 0.1),
        ]
    )
    _take(data, SCORES, b"{broken", 65_536)
    frame, models, counts = served_frame(data, date(2018, 8, 8), date(2018, 8, 9))
    assert [m.version for m in models] == ["champ", "chall"]
    assert [m.role for m in models] == ["champion", "challenger"]
    assert frame.event_id.tolist() == ["x", "y"]
    assert frame[models[0].column].tolist() == [0.9, 0.3]
    assert frame[models[1].column].tolist() == [0.8, 0.4]
    assert frame.label.tolist() == [1, 0]
    assert counts == {"labelled_in_range": 3, "evaluated": 2, "labels": 5}
    assert data.undecodable == 1


def test_handbook_protocol_drops_known_compromised_cards():
    data = data_with(
        [
            ("train-fraud", "k", T0 - 14 * DAY + 5, 1, None, None),  # training week: known
            # Delay-period fraud on day 7 of the protocol (train start = T0 - 14 days): known from
            # test day 1 on (test day d adds day 6 + d, the labels known by then).
            ("delay-fraud", "d", T0 - 7 * DAY + 5, 1, None, None),
            ("k-test", "k", T0 + 5, 1, 0.9, None),
            ("d-day0", "d", T0 + 6, 0, 0.2, None),  # day 0 knows delay days up to day 6 only
            ("d-day1", "d", T0 + DAY + 6, 1, 0.7, None),
            ("fresh", "f", T0 + 7, 1, 0.6, None),
        ]
    )
    frame, _, counts = served_frame(data, date(2018, 8, 8), date(2018, 8, 9), True)
    assert sorted(frame.event_id) == ["d-day0", "fresh"]
    assert counts["evaluated"] == 2


def test_errors_say_what_is_missing():
    with pytest.raises(DatasetError, match="no labels"):
        served_frame(ServedData(), date(2018, 8, 8), date(2018, 8, 9))
    data = data_with([("x", "a", T0, 1, 0.5, None)])
    with pytest.raises(DatasetError, match="no labelled, served events"):
        served_frame(data, date(2018, 9, 8), date(2018, 9, 9))
