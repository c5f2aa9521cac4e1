"""Evaluate what the live worker served (``stream-app evaluate served``): ``scores`` (and
``scores.shadow``) joined with ``labels``.

Nothing is recomputed: the score of each event is the one the worker published. The topics are
read from their first offset to the log end seen at start, with manual assignment (no group
offsets move). Labels carry the transaction's customer and event time, so the handbook protocol
(drop cards already known compromised) can be applied exactly as the trainer and the CSV
evaluation apply it. The outputs are the other evaluations': ``scored.parquet``, ``metrics.json``,
``report.html``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

from stream_app.config import Settings
from stream_app.evaluation.protocol import train_test_split
from stream_app.evaluation.report import ModelInfo, ReportFiles, write_outputs
from stream_app.exceptions import DatasetError
from stream_app.features.definitions import DAY_S, FEATURE_NAMES
from stream_app.io.codecs import decode_label
from stream_app.io.deadletter import Rejection
from stream_app.io.topic_reader import read_to_end

SCORES = "scores"
SHADOW = "scores.shadow"
LABELS = "labels"
_EPOCH = date(1970, 1, 1)


@dataclass
class ServedData:
    """Served scores per model version and the labels, by event id."""

    scores: dict[str, dict[str, float]] = field(default_factory=dict)  # version → id → score
    models: dict[str, ModelInfo] = field(default_factory=dict)
    # event id → (customer id, terminal id, event time, label)
    labels: dict[str, tuple[str, str, float, int]] = field(default_factory=dict)
    features: dict[str, list[float]] = field(default_factory=dict)  # champion's, when emitted
    undecodable: int = 0


def _take_envelope(data: ServedData, envelope: dict[str, Any], role: str) -> None:
    version = envelope["model_version"]
    if version not in data.models:
        data.models[version] = ModelInfo(
            version=version,
            sha256=envelope["model_sha256"],
            model_type="served",
            role=role,
            training_data=envelope.get("training_data_tag", ""),
        )
        data.scores[version] = {}
    data.scores[version][envelope["event_id"]] = float(envelope["score"])
    features = envelope.get("features")
    if role == "champion" and features:
        data.features[envelope["event_id"]] = [features.get(n, np.nan) for n in FEATURE_NAMES]


def read_served(
    settings: Settings,
    max_message_bytes: int = 65_536,
    on_progress: Callable[[int], None] | None = None,
) -> ServedData:
    """Everything ``scores``, ``scores.shadow`` and ``labels`` held when the read started."""
    data = ServedData()
    kinds = {settings.topic(t): t for t in (SCORES, SHADOW, LABELS)}
    read_to_end(
        settings,
        list(kinds),
        f"{settings.app_id}-served-evaluation",
        lambda topic, _p, _o, value: _take(data, kinds[topic], value, max_message_bytes),
        on_progress,
    )
    return data


def _take(data: ServedData, kind: str, value: bytes | None, max_message_bytes: int) -> None:
    try:
        if kind == LABELS:
            label = decode_label(value, max_message_bytes)
            if isinstance(label, Rejection):
                data.undecodable += 1
                return
            data.labels[label.event_id] = (
                label.customer_id,
                label.terminal_id,
                label.ts,
                label.label,
            )
        elif kind == SHADOW:
            _take_envelope(data, orjson.loads(value or b"")["challenger"], "challenger")
        else:
            _take_envelope(data, orjson.loads(value or b""), "champion")
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        data.undecodable += 1


def _day_start(day: date) -> float:
    return float((day - _EPOCH).days * DAY_S)


def served_frame(
    data: ServedData, date_from: date, date_to: date, handbook_protocol: bool = False
) -> tuple[pd.DataFrame, list[ModelInfo], dict[str, int]]:
    """The scored frame of labelled events in ``[date_from, date_to]`` every model scored.

    With ``handbook_protocol`` the range is the protocol's test days and cards already known
    compromised (from the labels of the 14 days before) are dropped.
    """
    if not data.labels:
        raise DatasetError("no labels on the labels topic: nothing to evaluate against")
    if not data.scores:
        raise DatasetError("no score envelopes on the scores topic: nothing was served")
    ids = list(data.labels)
    info = [data.labels[i] for i in ids]
    ts = np.array([x[2] for x in info], dtype=np.float64)
    customers = np.array([x[0] for x in info], dtype=object)
    labels = np.array([x[3] for x in info], dtype=np.int64)
    lo, hi = _day_start(date_from), _day_start(date_to + timedelta(days=1))
    if handbook_protocol:
        split = train_test_split(
            ts, customers, labels, lo - 14 * DAY_S, test_days=(date_to - date_from).days + 1
        )
        rows = split.test
    else:
        rows = np.flatnonzero((ts >= lo) & (ts < hi))
    in_range = len(rows)
    models = sorted(data.models.values(), key=lambda m: (m.role != "champion", m.version))
    rows = np.array(
        [r for r in rows.tolist() if all(ids[r] in data.scores[m.version] for m in models)],
        dtype=np.intp,
    )
    if len(rows) == 0:
        raise DatasetError(
            f"no labelled, served events between {date_from} and {date_to} "
            f"({in_range:,} labelled in range, {len(ts):,} labels in all)"
        )
    chosen = [ids[r] for r in rows.tolist()]
    frame = pd.DataFrame(
        {
            "event_id": chosen,
            "event_time": pd.to_datetime(ts[rows], unit="s", utc=True),
            "customer_id": [data.labels[i][0] for i in chosen],
            "terminal_id": [data.labels[i][1] for i in chosen],
        }
    )
    if data.features and all(i in data.features for i in chosen):
        values = np.array([data.features[i] for i in chosen], dtype=np.float64)
        for j, name in enumerate(FEATURE_NAMES):
            frame[name] = values[:, j]
    for model in models:
        frame[model.column] = [data.scores[model.version][i] for i in chosen]
    frame["label"] = labels[rows]
    counts = {"labelled_in_range": in_range, "evaluated": len(rows), "labels": len(ts)}
    return frame, models, counts


def evaluate_served(
    settings: Settings,
    *,
    date_from: date,
    date_to: date,
    out_dir: Path,
    handbook_protocol: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> ReportFiles:
    """Read the served scores and labels, write the evaluation outputs for
    ``[date_from, date_to]``."""
    if date_from > date_to:
        raise DatasetError(f"--from {date_from} is after --to {date_to}: the range is empty")
    data = read_served(settings, settings.max_message_bytes, on_progress)
    frame, models, counts = served_frame(data, date_from, date_to, handbook_protocol)
    source = {
        "served": {
            "bootstrap": settings.kafka_bootstrap_servers,
            "topics": [settings.topic(t) for t in (SCORES, SHADOW, LABELS)],
            "read_at": datetime.now().astimezone().isoformat(),
            "undecodable": data.undecodable,
            **counts,
        },
        "handbook_protocol": handbook_protocol,
    }
    return write_outputs(
        out_dir, frame, models, date_from=date_from, date_to=date_to, source=source
    )
