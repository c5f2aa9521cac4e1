"""The fraud-handbook CSV source: exact events, date filter, limit, clear errors."""

from __future__ import annotations

import gzip
import os
from datetime import date
from pathlib import Path

import pytest

from stream_app.config import REPO_ROOT
from stream_app.exceptions import DatasetError
from stream_app.sources.handbook_csv import read_csv_events

HEADER = (
    "TRANSACTION_ID,TX_DATETIME,CUSTOMER_ID,TERMINAL_ID,TX_AMOUNT,"
    "TX_TIME_SECONDS,TX_TIME_DAYS,TX_FRAUD,TX_FRAUD_SCENARIO"
)
ROWS = [
    "0,2018-04-01 00:00:31,596,3156,57.16,31,0,0,0",
    "1,2018-04-01 23:59:59,4961,3412,81.51,86399,0,1,2",
    "2,2018-04-02 00:00:00,2,1365,146.0,86400,1,0,0",
    "3,2018-04-02 12:30:00,4128,8737,264.49,131400,1,1,1",
    "4,2018-04-03 08:00:05,927,9906,5.5,201605,2,1,3",
]


def event(event_id: str, when: str, customer: str, terminal: str, amount: float) -> dict:
    return {
        "event_id": event_id,
        "event_time": when,
        "customer_id": customer,
        "terminal_id": terminal,
        "amount": amount,
        "schema_version": 1,
    }


EXPECTED = [
    (event("0", "2018-04-01T00:00:31+00:00", "596", "3156", 57.16), 0, 0),
    (event("1", "2018-04-01T23:59:59+00:00", "4961", "3412", 81.51), 1, 2),
    (event("2", "2018-04-02T00:00:00+00:00", "2", "1365", 146.0), 0, 0),
    (event("3", "2018-04-02T12:30:00+00:00", "4128", "8737", 264.49), 1, 1),
    (event("4", "2018-04-03T08:00:05+00:00", "927", "9906", 5.5), 1, 3),
]


def write(path: Path, lines: list[str]) -> Path:
    text = "\n".join(lines) + "\n"
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(params=["transactions.csv", "transactions.csv.gz"])
def tiny(request, tmp_path) -> Path:
    return write(tmp_path / request.param, [HEADER, *ROWS])


def as_tuples(items) -> list[tuple[dict, int, int]]:
    return [(x.event, x.label, x.scenario) for x in items]


def test_exact_events(tiny):
    assert as_tuples(read_csv_events(tiny)) == EXPECTED


def test_small_chunks_give_the_same_events(tiny):
    assert as_tuples(read_csv_events(tiny, chunk_rows=2)) == EXPECTED


def test_date_filter_is_inclusive_on_days(tiny):
    assert as_tuples(read_csv_events(tiny, date_from=date(2018, 4, 2))) == EXPECTED[2:]
    assert as_tuples(read_csv_events(tiny, date_to=date(2018, 4, 1))) == EXPECTED[:2]
    one_day = read_csv_events(tiny, date_from=date(2018, 4, 2), date_to=date(2018, 4, 2))
    assert as_tuples(one_day) == EXPECTED[2:4]


def test_limit(tiny):
    assert as_tuples(read_csv_events(tiny, limit=3)) == EXPECTED[:3]
    assert as_tuples(read_csv_events(tiny, date_from=date(2018, 4, 2), limit=1)) == EXPECTED[2:3]


def test_without_scenario_column(tmp_path):
    header = HEADER.rsplit(",", 1)[0]
    path = write(tmp_path / "t.csv", [header, *(r.rsplit(",", 1)[0] for r in ROWS)])
    items = list(read_csv_events(path))
    assert [x.event for x in items] == [e for e, _, _ in EXPECTED]
    assert [x.scenario for x in items] == [x.label for x in items]


def test_missing_file(tmp_path):
    with pytest.raises(DatasetError) as info:
        read_csv_events(tmp_path / "nope.csv.gz")
    message = str(info.value)
    assert "nope.csv.gz not found" in message
    assert "../shared/datasets/fraud-handbook/" in message
    assert "--csv" in message


def test_missing_columns(tmp_path):
    path = write(
        tmp_path / "t.csv", ["TRANSACTION_ID,TX_DATETIME,TX_AMOUNT", "0,2018-04-01 00:00:00,1.0"]
    )
    with pytest.raises(DatasetError, match=r"lacks column.*CUSTOMER_ID, TERMINAL_ID, TX_FRAUD"):
        read_csv_events(path)


def test_empty_range(tiny):
    with pytest.raises(DatasetError, match=r"no transactions .* between 2019-01-01 and the end"):
        list(read_csv_events(tiny, date_from=date(2019, 1, 1)))
    with pytest.raises(DatasetError, match="range is empty"):
        read_csv_events(tiny, date_from=date(2018, 4, 3), date_to=date(2018, 4, 1))


def test_empty_and_broken_files(tmp_path):
    with pytest.raises(DatasetError, match="empty"):
        read_csv_events(write(tmp_path / "e.csv", [""]))
    header_only = write(tmp_path / "h.csv", [HEADER])
    with pytest.raises(DatasetError, match="no transactions"):
        list(read_csv_events(header_only))
    bad_gz = tmp_path / "bad.csv.gz"
    bad_gz.write_bytes(b"not gzip at all")
    with pytest.raises(DatasetError, match="could not be read"):
        read_csv_events(bad_gz)


def test_bad_values(tmp_path):
    unsorted = write(tmp_path / "u.csv", [HEADER, ROWS[2], ROWS[0]])
    with pytest.raises(DatasetError, match="not sorted by TX_DATETIME"):
        list(read_csv_events(unsorted))
    bad_time = write(
        tmp_path / "t.csv", [HEADER, ROWS[0].replace("2018-04-01 00:00:31", "yesterday")]
    )
    with pytest.raises(DatasetError, match="TX_DATETIME"):
        list(read_csv_events(bad_time))
    bad_label = write(tmp_path / "l.csv", [HEADER, "0,2018-04-01 00:00:31,596,3156,57.16,31,0,7,0"])
    with pytest.raises(DatasetError, match="TX_FRAUD must be 0 or 1"):
        list(read_csv_events(bad_label))
    bad_amount = write(tmp_path / "a.csv", [HEADER, ROWS[0].replace("57.16", "lots")])
    with pytest.raises(DatasetError):
        list(read_csv_events(bad_amount))


# --- the real dataset -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def handbook_csv() -> Path:
    """The real handbook CSV: $FRAUD_HANDBOOK_DIR or <repo>/../shared/...; fails when absent."""
    env = os.environ.get("FRAUD_HANDBOOK_DIR")
    directory = Path(env) if env else REPO_ROOT.parent / "shared" / "datasets" / "fraud-handbook"
    path = directory / "transactions.csv.gz"
    if not path.is_file():
        pytest.fail(
            f"the fraud-handbook dataset is missing: {path} not found. It lives in "
            "../shared/datasets/fraud-handbook/ beside the repository; set FRAUD_HANDBOOK_DIR "
            "to its directory"
        )
    return path


@pytest.mark.dataset
def test_handbook_first_rows(handbook_csv):
    items = list(read_csv_events(handbook_csv, limit=3))
    assert [x.event for x in items] == [
        event("0", "2018-04-01T00:00:31+00:00", "596", "3156", 57.16),
        event("1", "2018-04-01T00:02:10+00:00", "4961", "3412", 81.51),
        event("2", "2018-04-01T00:07:56+00:00", "2", "1365", 146.0),
    ]


@pytest.mark.dataset
def test_handbook_training_week(handbook_csv):
    """The handbook's training week, 2018-07-25 .. 2018-07-31."""
    items = list(
        read_csv_events(handbook_csv, date_from=date(2018, 7, 25), date_to=date(2018, 7, 31))
    )
    assert len(items) == 67_240
    assert items[0].event["event_id"] == "1102483"
    assert items[-1].event["event_id"] == "1169722"
    assert items[0].event["event_time"].startswith("2018-07-25T")
    assert items[-1].event["event_time"].startswith("2018-07-31T")
    scenario_1 = [x for x in items if x.scenario == 1]
    assert scenario_1
    assert all(x.event["amount"] > 220 and x.label == 1 for x in scenario_1)
