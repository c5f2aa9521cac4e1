"""Read the fraud-handbook CSV as transaction events with their labels.

The file (``transactions.csv.gz`` in ``../shared/datasets/fraud-handbook/``, see its README) has
one row per payment, sorted by ``TX_DATETIME``. It is read with pandas in chunks (gz or plain),
so memory stays flat, and reading stops at the first chunk past ``date_to``.

Each row becomes ``LabelledTransaction(event, TX_FRAUD, TX_FRAUD_SCENARIO)`` with ``event_id`` =
``TRANSACTION_ID`` as text, ``event_time`` = ``TX_DATETIME`` read as UTC
(``YYYY-MM-DDTHH:MM:SS+00:00``), ``customer_id`` / ``terminal_id`` as text, ``amount`` a float.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from stream_app.config import REPO_ROOT
from stream_app.exceptions import DatasetError
from stream_app.sources.schedule import LabelledTransaction, rfc3339_utc

DATASET_ENV = "FRAUD_HANDBOOK_DIR"
"""Environment variable naming the fraud-handbook dataset directory."""
DATASET_FILE = "transactions.csv.gz"
REQUIRED_COLUMNS = (
    "TRANSACTION_ID",
    "TX_DATETIME",
    "CUSTOMER_ID",
    "TERMINAL_ID",
    "TX_AMOUNT",
    "TX_FRAUD",
)
SCENARIO_COLUMN = "TX_FRAUD_SCENARIO"
DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S"
_HINT = (
    "the fraud-handbook dataset lives in ../shared/datasets/fraud-handbook/ — set --csv to its path"
)


def dataset_dir() -> Path:
    """The fraud-handbook directory: ``$FRAUD_HANDBOOK_DIR`` or ``<repo>/../shared/...``."""
    env = os.environ.get(DATASET_ENV)
    if env:
        return Path(env)
    return REPO_ROOT.parent / "shared" / "datasets" / "fraud-handbook"


def default_csv_path() -> Path:
    """Where the handbook CSV is expected (it may be absent: check before use)."""
    return dataset_dir() / DATASET_FILE


def _header(path: Path) -> list[str]:
    try:
        return [str(c) for c in pd.read_csv(path, nrows=0).columns]
    except pd.errors.EmptyDataError as exc:
        raise DatasetError(f"{path} is empty; expected the fraud-handbook CSV") from exc
    except (OSError, EOFError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise DatasetError(f"{path} could not be read as CSV: {exc}") from exc


def _day_start_epoch(day: date) -> int:
    return (day - date(1970, 1, 1)).days * 86_400


def read_csv_events(
    path: Path | str,
    *,
    date_from: date | None = None,
    date_to: date | None = None,
    limit: int | None = None,
    chunk_rows: int = 250_000,
) -> Iterator[LabelledTransaction]:
    """The CSV's transactions in file (= time) order, with their labels, as an iterator.

    ``date_from`` and ``date_to`` are inclusive days on ``TX_DATETIME``; ``limit`` caps the
    number of events. Raises :class:`DatasetError` at once when the file is missing or
    unreadable, lacks a column or the range is inverted; and during iteration when a value is bad,
    the rows are not sorted by time, or no transaction falls in the range (raised when the
    iteration ends with nothing yielded).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path} not found; {_HINT}")
    if date_from is not None and date_to is not None and date_from > date_to:
        raise DatasetError(f"--from {date_from} is after --to {date_to}: the range is empty")
    columns = _header(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise DatasetError(
            f"{path} lacks column(s) {', '.join(missing)}; the fraud-handbook CSV has "
            f"{', '.join(REQUIRED_COLUMNS)}, ... (found: {', '.join(columns)})"
        )
    has_scenario = SCENARIO_COLUMN in columns
    usecols = [*REQUIRED_COLUMNS, SCENARIO_COLUMN] if has_scenario else list(REQUIRED_COLUMNS)
    lo = _day_start_epoch(date_from) if date_from is not None else None
    hi = _day_start_epoch(date_to + timedelta(days=1)) if date_to is not None else None
    if limit is not None:
        if limit < 0:
            raise ValueError(f"limit must not be negative, got {limit}")
        chunk_rows = max(1, min(chunk_rows, max(limit, 1_000)))
    return _read(path, usecols, has_scenario, lo, hi, date_from, date_to, limit, chunk_rows)


def _read(
    path: Path,
    usecols: list[str],
    has_scenario: bool,
    lo: int | None,
    hi: int | None,
    date_from: date | None,
    date_to: date | None,
    limit: int | None,
    chunk_rows: int,
) -> Iterator[LabelledTransaction]:
    yielded = 0
    previous: int | None = None
    seen_first: int | None = None
    rows_before = 0
    try:
        reader = pd.read_csv(
            path,
            usecols=usecols,
            dtype={
                "TRANSACTION_ID": str,
                "TX_DATETIME": str,
                "CUSTOMER_ID": str,
                "TERMINAL_ID": str,
                "TX_AMOUNT": "float64",
            },
            chunksize=chunk_rows,
        )
        for chunk in reader:
            if limit is not None and yielded >= limit:
                return
            epoch = _epoch_seconds(chunk, path, rows_before)
            row0 = rows_before
            rows_before += len(chunk)
            if len(epoch) == 0:
                continue
            if seen_first is None:
                seen_first = int(epoch[0])
            if (previous is not None and epoch[0] < previous) or np.any(np.diff(epoch) < 0):
                raise DatasetError(
                    f"{path} is not sorted by TX_DATETIME (near data row {row0 + 1}); "
                    "sort it by time first"
                )
            previous = int(epoch[-1])
            if hi is not None and epoch[0] >= hi:
                break
            mask = np.ones(len(epoch), dtype=bool)
            if lo is not None:
                mask &= epoch >= lo
            if hi is not None:
                mask &= epoch < hi
            if not mask.any():
                continue
            part = chunk[mask]
            epoch = epoch[mask]
            if limit is not None:
                part, epoch = part.iloc[: limit - yielded], epoch[: limit - yielded]
            for item in _events(part, epoch, path, has_scenario):
                yield item
                yielded += 1
    except DatasetError:
        raise
    except (OSError, EOFError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise DatasetError(f"{path} could not be read as CSV: {exc}") from exc
    except ValueError as exc:
        raise DatasetError(f"{path} has a value of the wrong type: {exc}") from exc
    if yielded == 0:
        covered = ""
        if seen_first is not None and previous is not None:
            first, last = rfc3339_utc([seen_first, previous])
            covered = f" (the rows read run from {first} to {last})"
        raise DatasetError(
            f"no transactions in {path} between {date_from or 'the start'} and "
            f"{date_to or 'the end'}{covered}"
        )


def _epoch_seconds(chunk: pd.DataFrame, path: Path, row0: int) -> np.ndarray:
    try:
        stamps = pd.to_datetime(chunk["TX_DATETIME"], format=DATETIME_FORMAT)
    except (ValueError, TypeError) as exc:
        raise DatasetError(
            f"{path}: TX_DATETIME is not 'YYYY-MM-DD HH:MM:SS' near data row {row0 + 1}: {exc}"
        ) from exc
    values = stamps.to_numpy(dtype="datetime64[s]")
    if np.isnat(values).any():
        bad = row0 + 1 + int(np.flatnonzero(np.isnat(values))[0])
        raise DatasetError(f"{path}: TX_DATETIME is empty at data row {bad}")
    return values.astype(np.int64)


def _events(
    part: pd.DataFrame, epoch: np.ndarray, path: Path, has_scenario: bool
) -> Iterator[LabelledTransaction]:
    for column in REQUIRED_COLUMNS:
        if part[column].isna().any():
            raise DatasetError(f"{path}: column {column} has empty values")
    amounts = part["TX_AMOUNT"].to_numpy(dtype=np.float64)
    if (amounts < 0).any() or not np.isfinite(amounts).all():
        raise DatasetError(f"{path}: TX_AMOUNT has negative or non-finite values")
    labels = part["TX_FRAUD"].to_numpy()
    if not np.isin(labels, (0, 1)).all():
        raise DatasetError(f"{path}: TX_FRAUD must be 0 or 1")
    scenarios = (
        part[SCENARIO_COLUMN].fillna(0).astype(np.int64).tolist()
        if has_scenario
        else labels.astype(np.int64).tolist()
    )
    for event_id, time, customer, terminal, amount, label, scenario in zip(
        part["TRANSACTION_ID"].tolist(),
        rfc3339_utc(epoch),
        part["CUSTOMER_ID"].tolist(),
        part["TERMINAL_ID"].tolist(),
        amounts.tolist(),
        labels.astype(np.int64).tolist(),
        scenarios,
        strict=True,
    ):
        yield LabelledTransaction(
            {
                "event_id": event_id,
                "event_time": time,
                "customer_id": customer,
                "terminal_id": terminal,
                "amount": amount,
                "schema_version": 1,
            },
            label,
            scenario,
        )
