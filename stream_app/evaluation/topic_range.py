"""Evaluate on a topic (``stream-app evaluate topic``): a range of the ``transactions`` topic,
features rebuilt offline, scored, reported.

The topic is read with a consumer of its own (manual assignment, nothing committed: the live
group's offsets never move) from its first offset to the log end seen at start. Every record
decodes through the worker's codec (bad records are counted, as the worker would dead-letter
them); the rest are ordered by (event time, partition, offset), so the result does not depend on
how partitions interleave. The **range** to score is given by offsets (the same bound in every
partition) or by event time; the records before it, up to ``history_days``, warm the windows.
Labels come from ``labels`` by event id. Features come from
:func:`stream_app.features.offline.build_features`, the worker's own state code, and the outputs
are the CSV evaluation's (``scored.parquet``, ``metrics.json``, ``report.html``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from stream_app.config import Settings
from stream_app.evaluation.csv_range import HISTORY_DAYS, RangeEvaluation, load_models, scored_frame
from stream_app.evaluation.report import write_outputs
from stream_app.exceptions import ConfigError, DatasetError
from stream_app.features.definitions import DAY_S, LABEL_DELAY_DAYS
from stream_app.features.offline import TransactionBatch, build_features
from stream_app.io.codecs import Transaction, decode_label, decode_transaction
from stream_app.io.deadletter import Rejection
from stream_app.io.topic_reader import read_to_end

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class Bound:
    """One end of an evaluated range: an offset (in every partition) or an event time."""

    offset: int | None = None
    time: float | None = None
    text: str = ""

    @classmethod
    def parse(cls, text: str, end: bool = False) -> Bound:
        """``123`` (offset), ``YYYY-MM-DD`` (a day; as ``--to``, the whole day) or an ISO 8601
        date-time (UTC when it has no offset)."""
        value = text.strip()
        if value.isdigit():
            return cls(offset=int(value), text=value)
        try:
            if _DATE.match(value):
                day = date.fromisoformat(value) + timedelta(days=1 if end else 0)
                moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
                # A day as --to means "through that day": up to (not including) the next one.
                return cls(time=moment.timestamp() - (1e-6 if end else 0.0), text=value)
            moment = datetime.fromisoformat(value)
        except ValueError as exc:
            raise ConfigError(
                f"{text!r} is neither an offset (a whole number) nor a time "
                "(YYYY-MM-DD or an ISO 8601 date-time)"
            ) from exc
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return cls(time=moment.timestamp(), text=value)

    def admits_from(self, ts: float, offset: int) -> bool:
        if self.offset is not None:
            return offset >= self.offset
        return self.time is None or ts >= self.time

    def admits_to(self, ts: float, offset: int) -> bool:
        if self.offset is not None:
            return offset <= self.offset
        return self.time is None or ts <= self.time


@dataclass(frozen=True)
class TopicRead:
    """Decoded transactions in scoring order and what was read."""

    records: list[tuple[float, int, int, Transaction]]  # (ts, partition, offset, transaction)
    labels: dict[str, int]
    undecodable: int
    duplicates: int


def read_transactions_and_labels(
    settings: Settings,
    topic: str,
    on_progress: Callable[[int], None] | None = None,
) -> TopicRead:
    """Every record of ``topic`` and ``labels`` up to the log end seen at start."""
    labels_topic = settings.topic("labels")
    records: list[tuple[float, int, int, Transaction]] = []
    labels: dict[str, int] = {}
    seen: set[str] = set()
    counts = {"undecodable": 0, "duplicates": 0}

    def take(source: str, partition: int, offset: int, value: bytes | None) -> None:
        if source == labels_topic:
            label = decode_label(value, settings.max_message_bytes)
            if not isinstance(label, Rejection):
                labels[label.event_id] = label.label
            return
        tx = decode_transaction(value, settings.max_message_bytes)
        if isinstance(tx, Rejection):
            counts["undecodable"] += 1
        elif tx.event_id in seen:
            counts["duplicates"] += 1
        else:
            seen.add(tx.event_id)
            records.append((tx.ts, partition, offset, tx))

    # The group id keeps its first name, "-replay", so ACLs granted for it stay valid (README:
    # Security); nothing is committed under it.
    read_to_end(settings, [topic, labels_topic], f"{settings.app_id}-replay", take, on_progress)
    records.sort(key=lambda r: (r[0], r[1], r[2]))
    return TopicRead(records, labels, counts["undecodable"], counts["duplicates"])


def select_range(
    read: TopicRead, start: Bound, stop: Bound, history_days: float
) -> tuple[TransactionBatch, np.ndarray, int]:
    """(batch of history + range in scoring order, row indexes to score, unlabelled count)."""
    in_range = [
        start.admits_from(ts, offset) and stop.admits_to(ts, offset)
        for ts, _, offset, _ in read.records
    ]
    if not any(in_range):
        raise DatasetError(
            f"no transactions between {start.text} and {stop.text} among the "
            f"{len(read.records):,} read: nothing to score"
        )
    first_ts = min(r[0] for r, keep in zip(read.records, in_range, strict=True) if keep)
    last_ts = max(r[0] for r, keep in zip(read.records, in_range, strict=True) if keep)
    lo = first_ts - history_days * DAY_S
    keep_rows = [i for i, r in enumerate(read.records) if lo <= r[0] <= last_ts or in_range[i]]
    chosen = [read.records[i][3] for i in keep_rows]
    unlabelled = sum(1 for tx in chosen if tx.event_id not in read.labels)
    batch = TransactionBatch(
        [tx.event_id for tx in chosen],
        np.asarray([tx.ts for tx in chosen], dtype=np.float64),
        [tx.customer_id for tx in chosen],
        [tx.terminal_id for tx in chosen],
        np.asarray([tx.amount for tx in chosen], dtype=np.float64),
        np.asarray([read.labels.get(tx.event_id, 0) for tx in chosen], dtype=np.int64),
    )
    rows = np.asarray([j for j, i in enumerate(keep_rows) if in_range[i]], dtype=np.intp)
    return batch, rows, unlabelled


def evaluate_topic(
    settings: Settings,
    *,
    topic: str,
    start: Bound,
    stop: Bound,
    out_dir: Path,
    models_dir: Path,
    champion: str | None = None,
    challengers: Sequence[str] = (),
    history_days: float = HISTORY_DAYS,
    label_delay_days: float = LABEL_DELAY_DAYS,
    on_progress: Callable[[int], None] | None = None,
) -> RangeEvaluation:
    """Score the range of ``topic`` with the champion and challengers; write the outputs."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file; give a directory for the outputs")
    models = load_models(models_dir, champion, challengers)
    name = settings.topic(topic)
    read = read_transactions_and_labels(settings, name, on_progress)
    batch, rows, unlabelled = select_range(read, start, stop, history_days)
    X = build_features(batch, label_delay_days=label_delay_days)
    frame = scored_frame(batch, X, rows, models)
    scored_ts = batch.ts[rows]
    source: dict[str, Any] = {
        "topic": name,
        "bootstrap": settings.kafka_bootstrap_servers,
        "from": start.text,
        "to": stop.text,
        "read": len(read.records),
        "undecodable": read.undecodable,
        "duplicates": read.duplicates,
        "unlabelled": unlabelled,
        "history_days": history_days,
        "history_rows": int(len(batch) - len(rows)),
        "label_delay_days": label_delay_days,
    }
    files = write_outputs(
        out_dir,
        frame,
        [info for info, _ in models],
        date_from=datetime.fromtimestamp(float(scored_ts.min()), UTC).date(),
        date_to=datetime.fromtimestamp(float(scored_ts.max()), UTC).date(),
        source=source,
    )
    return RangeEvaluation(files, [info for info, _ in models], len(rows), len(batch) - len(rows))
