"""Evaluate the models on a range of a topic, or evaluate what the worker served.

Thin, typed wrappers over the evaluations behind ``stream-app evaluate``: :func:`evaluate_topic`
is ``evaluate topic`` (:func:`stream_app.evaluation.topic_range.evaluate_topic`: the range read
with a consumer of its own, features rebuilt by the worker's code, scored by the champion and the
challengers, labels joined from ``labels``), :func:`evaluate_served` is ``evaluate served``
(:func:`stream_app.evaluation.served_scores.evaluate_served`: the published scores joined with
the labels, nothing recomputed). :func:`replay_range` is the deprecated old name of
:func:`evaluate_topic`. Both write ``scored.parquet``, ``metrics.json`` and
``report.html`` and return an :class:`Evaluation`: the metrics per model, typed.
"""

from __future__ import annotations

import math
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stream_app.config import Settings
from stream_app.exceptions import ConfigError

if TYPE_CHECKING:  # the evaluation tools load pandas and scikit-learn: only when evaluating
    from stream_app.evaluation.report import ReportFiles

Bound = int | str | date | datetime
"""One end of a range: an offset (the same in every partition), a day (as the end: the whole
day), an aware datetime, or the text ``stream-app evaluate topic --from/--to`` takes."""


def _number(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


@dataclass(frozen=True, slots=True)
class ModelMetrics:
    """The handbook's metrics of one model over the evaluated rows (None: one class only)."""

    version: str
    role: str
    auc_roc: float | None
    average_precision: float | None
    card_precision_at_100: float | None
    transactions: int
    frauds: int


@dataclass(frozen=True, slots=True)
class Evaluation:
    """What an evaluation scored, its metrics per model, and where its outputs are."""

    models: dict[str, ModelMetrics]
    champion: str | None
    rows: int
    source: dict[str, Any]
    files: ReportFiles

    @property
    def champion_metrics(self) -> ModelMetrics:
        """The champion's metrics."""
        if self.champion is None:
            raise ConfigError("this evaluation has no champion; read .models by version")
        return self.models[self.champion]

    @classmethod
    def from_files(cls, files: ReportFiles) -> Evaluation:
        """From the outputs' ``metrics.json`` document."""
        from stream_app.evaluation.report import CP_KEY

        document = files.document
        roles = {m["version"]: m["role"] for m in document["models"]}
        models = {
            version: ModelMetrics(
                version=version,
                role=roles.get(version, ""),
                auc_roc=_number(values.get("auc_roc")),
                average_precision=_number(values.get("average_precision")),
                card_precision_at_100=_number(values.get(CP_KEY)),
                transactions=int(values["n"]),
                frauds=int(values["frauds"]),
            )
            for version, values in document["metrics"].items()
        }
        return cls(
            models=models,
            champion=document.get("champion"),
            rows=int(document["range"]["rows"]),
            source=dict(document.get("source", {})),
            files=files,
        )


def _bound(value: Bound, end: bool) -> Any:
    from stream_app.evaluation.topic_range import Bound as TopicBound

    if isinstance(value, bool):
        raise ConfigError(f"{value!r} is not a range bound: give an offset, a day or a time")
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(f"offset {value} is negative; offsets start at 0")
        return TopicBound.parse(str(value), end)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ConfigError(
                f"{value.isoformat()} has no time zone; give an aware datetime "
                "(e.g. datetime(..., tzinfo=UTC))"
            )
        return TopicBound(time=value.timestamp(), text=value.isoformat())
    if isinstance(value, date):
        return TopicBound.parse(value.isoformat(), end)
    return TopicBound.parse(value, end)


def _day(value: date) -> date:
    """A day: an aware datetime's UTC day, a date as it is."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ConfigError(f"{value.isoformat()} has no time zone; give a date or aware time")
        return value.astimezone(UTC).date()
    return value


def _out(out_dir: Path | str | None, kind: str) -> Path:
    if out_dir is not None:
        return Path(out_dir)
    return Path(tempfile.mkdtemp(prefix=f"stream-app-{kind}-"))


def evaluate_topic(
    start: Bound,
    stop: Bound,
    *,
    settings: Settings | None = None,
    topic: str = "transactions",
    out_dir: Path | str | None = None,
    models_dir: Path | str | None = None,
    champion: str | None = None,
    challengers: Sequence[str] = (),
    history_days: float | None = None,
) -> Evaluation:
    """Score ``[start, stop]`` of ``topic`` with the champion and challengers and evaluate them
    against the labels on ``labels``.

    ``models_dir`` and ``champion`` default to the settings' (``STREAM_APP_MODELS_DIR``,
    ``STREAM_APP_CHAMPION``, else the newest version); ``out_dir`` to a new temporary directory
    (kept: its path is in ``files``). ``history_days`` before the range warm the windows
    (default: the longest window plus the label delay). Raises ``DatasetError`` when the range
    holds no transaction, ``ModelNotFoundError`` / ``ModelIntegrityError`` for a model.
    """
    from stream_app.evaluation.csv_range import HISTORY_DAYS
    from stream_app.evaluation.topic_range import evaluate_topic as evaluate

    settings = settings if settings is not None else Settings()
    result = evaluate(
        settings,
        topic=topic,
        start=_bound(start, end=False),
        stop=_bound(stop, end=True),
        out_dir=_out(out_dir, "topic"),
        models_dir=Path(models_dir) if models_dir is not None else settings.models_dir,
        champion=champion if champion is not None else settings.champion,
        challengers=challengers,
        history_days=HISTORY_DAYS if history_days is None else history_days,
    )
    return Evaluation.from_files(result.files)


def replay_range(start: Bound, stop: Bound, **options: Any) -> Evaluation:
    """Deprecated: the old name of :func:`evaluate_topic` (same arguments)."""
    warnings.warn(
        "replay_range is deprecated: use evaluate_topic", DeprecationWarning, stacklevel=2
    )
    return evaluate_topic(start, stop, **options)


def evaluate_served(
    date_from: date,
    date_to: date,
    *,
    settings: Settings | None = None,
    out_dir: Path | str | None = None,
    handbook_protocol: bool = False,
) -> Evaluation:
    """Join the scores the worker published (champion and shadow) with the labels for the
    events of ``[date_from, date_to]`` (UTC days) and evaluate them. Raises ``DatasetError``
    when no labelled, served event is in the range."""
    from stream_app.evaluation.served_scores import evaluate_served as evaluate

    settings = settings if settings is not None else Settings()
    files = evaluate(
        settings,
        date_from=_day(date_from),
        date_to=_day(date_to),
        out_dir=_out(out_dir, "served"),
        handbook_protocol=handbook_protocol,
    )
    return Evaluation.from_files(files)
