"""Topic evaluation: range bounds and the selection of history and scored rows."""

from datetime import UTC, datetime

import pytest

from stream_app.evaluation.topic_range import Bound, TopicRead, select_range
from stream_app.exceptions import ConfigError, DatasetError
from stream_app.io.codecs import Transaction

DAY = 86_400.0
T0 = datetime(2026, 3, 10, tzinfo=UTC).timestamp()


def test_bound_parse():
    assert Bound.parse("42") == Bound(offset=42, text="42")
    assert Bound.parse("2026-03-10").time == T0
    # A day as --to is the whole day.
    end = Bound.parse("2026-03-10", end=True)
    assert end.admits_to(T0 + DAY - 0.001, 0) and not end.admits_to(T0 + DAY, 0)
    assert Bound.parse("2026-03-10T06:00:00").time == T0 + 6 * 3600  # naive means UTC
    assert Bound.parse("2026-03-10T07:00:00+01:00").time == T0 + 6 * 3600
    with pytest.raises(ConfigError, match="neither an offset"):
        Bound.parse("last tuesday")


def _read(rows):
    records = [(ts, p, off, Transaction(eid, "", ts, "c", "t", 1.0)) for eid, ts, p, off in rows]
    return TopicRead(sorted(records, key=lambda r: r[:3]), {"b": 1, "c": 0}, 0, 0)


def test_select_by_time_keeps_history_within_days():
    read = _read(
        [
            ("old", T0 - 40 * DAY, 0, 0),
            ("a", T0 - 2 * DAY, 1, 0),
            ("b", T0 + 10, 0, 1),
            ("c", T0 + DAY - 1, 1, 1),
            ("later", T0 + 3 * DAY, 0, 2),
        ]
    )
    batch, rows, unlabelled = select_range(
        read, Bound.parse("2026-03-10"), Bound.parse("2026-03-10", end=True), 37
    )
    assert list(batch.event_id) == ["a", "b", "c"]
    assert [batch.event_id[i] for i in rows] == ["b", "c"]
    assert batch.label.tolist() == [0, 1, 0]
    assert unlabelled == 1  # "a" has no label (scored as 0 in the window state)


def test_select_by_offsets_in_every_partition():
    read = _read(
        [
            ("p0-0", T0, 0, 0),
            ("p1-0", T0 + 1, 1, 0),
            ("p0-1", T0 + 2, 0, 1),
            ("p1-1", T0 + 3, 1, 1),
            ("p0-2", T0 + 4, 0, 2),
        ]
    )
    batch, rows, _ = select_range(read, Bound.parse("1"), Bound.parse("1", end=True), 37)
    assert [batch.event_id[i] for i in rows] == ["p0-1", "p1-1"]
    assert list(batch.event_id) == ["p0-0", "p1-0", "p0-1", "p1-1"]  # earlier ones: history
    with pytest.raises(DatasetError, match="nothing to score"):
        select_range(read, Bound.parse("7"), Bound.parse("9", end=True), 37)
