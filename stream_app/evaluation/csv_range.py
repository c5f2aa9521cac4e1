"""Evaluate on a CSV (``stream-app evaluate csv``): score a date range of a handbook-format CSV
with registered models, no broker.

The CSV is read from ``history_days`` before ``date_from`` to ``date_to`` (inclusive UTC days) so
the windows are warm; features come from :func:`stream_app.features.offline.build_features`, the
worker's own state code, over all of it; only the rows in ``[date_from, date_to]`` are scored
(champion first, then each challenger, every model loaded hash-verified through
:meth:`ScoringModel.load`) and reported with their labels (the CSV's ``TX_FRAUD``) by
:func:`stream_app.evaluation.report.write_outputs`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from stream_app.evaluation.protocol import train_test_split
from stream_app.evaluation.report import REPORT_STEPS, ModelInfo, ReportFiles, write_outputs
from stream_app.exceptions import ConfigError, DatasetError
from stream_app.features.definitions import (
    DAY_S,
    FEATURE_NAMES,
    LABEL_DELAY_DAYS,
    Entity,
    horizon_s,
)
from stream_app.features.offline import TransactionBatch, build_features
from stream_app.scoring.model import ScoringModel
from stream_app.scoring.registry import resolve_version
from stream_app.sources.handbook_csv import read_csv_events
from stream_app.sources.schedule import LabelledTransaction, batch_from_events

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

HISTORY_DAYS = int(horizon_s(Entity.TERMINAL) // DAY_S)
"""Days of history the longest window (terminal risk: 30 days behind a 7-day delay) reads."""
_EPOCH = date(1970, 1, 1)


@dataclass(frozen=True)
class RangeEvaluation:
    """What an evaluation of a range (of a CSV or a topic) scored and where its outputs went."""

    files: ReportFiles
    models: list[ModelInfo]
    rows: int
    history_rows: int

    @property
    def metrics(self) -> dict[str, Any]:
        """Per model version: the metrics written to ``metrics.json``."""
        return self.files.document["metrics"]  # type: ignore[no-any-return]


def load_models(
    models_dir: Path, champion: str | None, challengers: Sequence[str] = ()
) -> list[tuple[ModelInfo, ScoringModel]]:
    """The champion (``None``: the newest version) then each distinct challenger, verified.

    Raises :class:`ModelNotFoundError` for a version not in ``models_dir`` and
    :class:`ModelIntegrityError` for an artifact that does not match its manifest.
    """
    loaded: list[tuple[ModelInfo, ScoringModel]] = []
    seen: set[str] = set()
    for role, version in [("champion", champion), *(("challenger", v) for v in challengers)]:
        path = resolve_version(models_dir, version)
        if path.name in seen:
            continue
        seen.add(path.name)
        model = ScoringModel.load(path)
        info = ModelInfo(
            version=model.version,
            sha256=model.sha256,
            model_type=model.manifest.model_type,
            role=role,
            training_data=model.training_data_tag,
            reference=model.manifest.raw.get("reference"),
        )
        loaded.append((info, model))
    return loaded


def _day_start(day: date) -> float:
    return float((day - _EPOCH).days * DAY_S)


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _counted(
    events: Iterable[LabelledTransaction], progress: Progress | None, task: Any
) -> Iterator[LabelledTransaction]:
    count = 0
    for count, event in enumerate(events, 1):
        yield event
        if progress is not None and count % 20_000 == 0:
            progress.update(task, completed=count)
    if progress is not None:
        progress.update(task, completed=count, total=count)


def read_history_and_range(
    csv: Path,
    date_from: date,
    date_to: date,
    history_days: int,
    console: Console | None = None,
) -> TransactionBatch:
    """The CSV's transactions from ``date_from - history_days`` to ``date_to`` (inclusive)."""
    first = date_from - timedelta(days=history_days)
    events = read_csv_events(csv, date_from=first, date_to=date_to)
    try:
        if console is None:
            return batch_from_events(events)
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        with Progress(
            SpinnerColumn(),
            TextColumn("[progress.description]{task.description}"),
            TextColumn("{task.completed:,} rows"),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            task = progress.add_task(f"Reading {csv.name} {first} .. {date_to}", total=None)
            return batch_from_events(_counted(events, progress, task))
    except DatasetError as exc:
        raise DatasetError(
            f"cannot evaluate {date_from} .. {date_to} (read from {first}, {history_days} days of "
            f"history): {exc}"
        ) from exc


def scored_frame(
    batch: TransactionBatch,
    X: npt.NDArray[np.float64],
    rows: npt.NDArray[np.intp],
    models: Sequence[tuple[ModelInfo, ScoringModel]],
    progress: Progress | None = None,
) -> pd.DataFrame:
    """The ``scored.parquet`` frame of ``rows``: ids, time, entities, features, scores, label.

    Each model sees its manifest's features (by name) of those rows, in one ``predict`` call.
    """
    X_range = np.ascontiguousarray(X[rows])
    frame = pd.DataFrame(X_range, columns=list(FEATURE_NAMES))
    frame.insert(0, "terminal_id", [batch.terminal_id[i] for i in rows.tolist()])
    frame.insert(0, "customer_id", [batch.customer_id[i] for i in rows.tolist()])
    frame.insert(0, "event_time", pd.to_datetime(batch.ts[rows], unit="s", utc=True))
    frame.insert(0, "event_id", [batch.event_id[i] for i in rows.tolist()])
    task = progress.add_task("Scoring", total=len(models)) if progress is not None else None
    for info, model in models:
        columns = [FEATURE_NAMES.index(name) for name in model.features]
        # C order, as the worker's rows: a column selection alone is F-ordered, and BLAS may
        # then sum in another order (scores off by an ulp).
        inputs = np.ascontiguousarray(X_range[:, columns])
        frame[info.column] = model.predict(inputs)
        if progress is not None and task is not None:
            progress.advance(task)
    assert batch.label is not None
    frame["label"] = batch.label[rows]
    return frame


def evaluate_csv(
    csv: Path,
    *,
    date_from: date,
    date_to: date,
    out_dir: Path,
    models_dir: Path,
    champion: str | None = None,
    challengers: Sequence[str] = (),
    history_days: int = HISTORY_DAYS,
    label_delay_days: float = LABEL_DELAY_DAYS,
    handbook_protocol: bool = False,
    console: Console | None = None,
) -> RangeEvaluation:
    """Score ``[date_from, date_to]`` of ``csv`` with the models and write the outputs.

    With a ``console``, progress bars are drawn on it. Raises :class:`DatasetError` for a missing
    or unreadable CSV or an empty range, :class:`ModelNotFoundError` for an unknown version,
    :class:`ModelIntegrityError` for a model that fails verification and :class:`ConfigError`
    for bad arguments.
    """
    if date_from > date_to:
        raise DatasetError(f"--from {date_from} is after --to {date_to}: the range is empty")
    if history_days < 0:
        raise ConfigError(f"history days must not be negative, got {history_days}")
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file; give a directory for the outputs")
    if not csv.is_file():
        raise DatasetError(f"{csv} not found; give --csv the path of a handbook-format CSV")
    models = load_models(models_dir, champion, challengers)
    batch = read_history_and_range(csv, date_from, date_to, history_days, console)
    lo, hi = _day_start(date_from), _day_start(date_to + timedelta(days=1))
    rows = np.flatnonzero((batch.ts >= lo) & (batch.ts < hi))
    if handbook_protocol and len(rows) and batch.label is not None:
        # [--from, --to] are the protocol's test days; its training week starts 14 days earlier.
        split = train_test_split(
            batch.ts,
            batch.customer_id,
            batch.label,
            lo - 14 * DAY_S,
            test_days=(date_to - date_from).days + 1,
        )
        rows = split.test
    if len(rows) == 0:
        raise DatasetError(
            f"no transactions in {csv} between {date_from} and {date_to} (its "
            f"{len(batch):,} rows read from {date_from - timedelta(days=history_days)} are all "
            "history): nothing to score"
        )
    X = build_features(batch, label_delay_days=label_delay_days, progress=console is not None)
    source = {
        "csv": str(csv),
        "csv_sha256": file_sha256(csv),
        "history_days": history_days,
        "history_rows": int(np.count_nonzero(batch.ts < lo)),
        "label_delay_days": label_delay_days,
        "handbook_protocol": handbook_protocol,
    }
    infos = [info for info, _ in models]
    if console is None:
        frame = scored_frame(batch, X, rows, models)
        files = write_outputs(
            out_dir, frame, infos, date_from=date_from, date_to=date_to, source=source
        )
    else:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        with Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            console=console,
        ) as progress:
            frame = scored_frame(batch, X, rows, models, progress)
            task = progress.add_task("Writing outputs", total=REPORT_STEPS)
            files = write_outputs(
                out_dir,
                frame,
                infos,
                date_from=date_from,
                date_to=date_to,
                source=source,
                on_step=lambda what: progress.update(
                    task, advance=1, description=f"Writing outputs ({what})"
                ),
            )
    return RangeEvaluation(files, infos, len(rows), int(np.count_nonzero(batch.ts < lo)))
