"""Evaluation outputs from a scored frame: ``scored.parquet``, ``metrics.json`` and ``report.html``.

The input is one row per transaction with at least ``event_time`` (UTC), ``customer_id``,
``label`` and a ``score_<version>`` column per model. The CSV evaluation
(:mod:`stream_app.evaluation.csv_range`) builds that frame from a CSV, the topic evaluation
(:mod:`stream_app.evaluation.topic_range`) from a range of ``transactions`` and the served-score
evaluation (:mod:`stream_app.evaluation.served_scores`) from the published scores; all three call
the same :func:`write_outputs`.

Metrics are the handbook's (:mod:`stream_app.evaluation.metrics`) over every row of the frame,
days being UTC calendar days of ``event_time``. Nothing time- or machine-dependent is written:
the same frame and models give byte-identical ``scored.parquet`` and ``metrics.json`` (and
``report.html``). The report is one self-contained HTML file whose plots are inline base64 PNGs
drawn with matplotlib (its object API: no pyplot, no global backend).
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import orjson
import pandas as pd

from stream_app.evaluation.drift_stats import PSI_THRESHOLD as PSI_ALERT
from stream_app.evaluation.metrics import card_precision_top_k, quality

if TYPE_CHECKING:
    from matplotlib.axes import Axes

SCORED_FILE = "scored.parquet"
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.html"
SCORE_PREFIX = "score_"
TOP_K = 100
CP_KEY = f"card_precision_at_{TOP_K}"
CP_DAILY_KEY = f"{CP_KEY}_daily"
CALIBRATION_BINS = 10
HISTOGRAM_BINS = 50
PLOT_TITLES = (
    "ROC curve",
    "Precision-recall curve",
    "Calibration curve",
    "Score histograms by label",
    f"Daily CP@{TOP_K}",
    "Drift over time",
)
REPORT_STEPS = 3 + len(PLOT_TITLES)
"""Steps :func:`write_outputs` reports through ``on_step``: parquet, metrics, each plot, HTML."""
_EPOCH = date(1970, 1, 1)
_METRIC_ROWS = (
    ("auc_roc", "AUC ROC", "{:.4f}"),
    ("average_precision", "Average precision", "{:.4f}"),
    (CP_KEY, f"CP@{TOP_K}", "{:.4f}"),
    ("n", "Transactions", "{:,}"),
    ("frauds", "Frauds", "{:,}"),
)


@dataclass(frozen=True)
class ModelInfo:
    """What the outputs record about one scoring model."""

    version: str
    sha256: str
    model_type: str
    role: str  # "champion" or "challenger"
    training_data: str = ""
    # The manifest's ``reference`` block (training bins per feature and for the score), when
    # known: the report's drift-over-time plot measures each day against it.
    reference: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def column(self) -> str:
        """The model's score column in the scored frame."""
        return score_column(self.version)


@dataclass(frozen=True)
class ReportFiles:
    """Where the outputs went, and the metrics document written to ``metrics.json``."""

    scored: Path
    metrics: Path
    report: Path
    document: dict[str, Any]


def score_column(version: str) -> str:
    """``score_<version>``."""
    return f"{SCORE_PREFIX}{version}"


def day_numbers(event_time: pd.Series) -> npt.NDArray[np.int64]:
    """Whole UTC days since 1970-01-01 of each (tz-aware) event time."""
    delta = event_time - pd.Timestamp("1970-01-01", tz="UTC")
    return np.asarray(delta // pd.Timedelta(days=1), dtype=np.int64)


def iso_day(day_number: int) -> str:
    """``YYYY-MM-DD`` of a day number from :func:`day_numbers`."""
    return (_EPOCH + timedelta(days=int(day_number))).isoformat()


def model_metrics(frame: pd.DataFrame, model: ModelInfo, k: int = TOP_K) -> dict[str, Any]:
    """AUC ROC, average precision, CP@k (mean and per day), n and frauds of one model's scores.

    AUC ROC and average precision are NaN (``null`` in JSON) when the frame has one class only.
    """
    y = frame["label"].to_numpy(dtype=np.int64)
    s = frame[model.column].to_numpy(dtype=np.float64)
    days = day_numbers(frame["event_time"])
    customers = frame["customer_id"].to_numpy()
    result: dict[str, Any] = dict(quality(y, s, days, customers, k))
    _, daily = card_precision_top_k(days, customers, s, y, k)
    result[f"card_precision_at_{k}_daily"] = [
        {"day": iso_day(d), "value": v}
        for d, v in zip(np.unique(days).tolist(), daily, strict=True)
    ]
    return result


def metrics_document(
    frame: pd.DataFrame,
    models: Sequence[ModelInfo],
    *,
    date_from: date,
    date_to: date,
    source: dict[str, Any] | None = None,
    k: int = TOP_K,
) -> dict[str, Any]:
    """The ``metrics.json`` content: range, source, models (version, sha256) and their metrics."""
    labels = frame["label"].to_numpy(dtype=np.int64)
    return {
        "range": {
            "from": date_from.isoformat(),
            "to": date_to.isoformat(),
            "days": [iso_day(d) for d in np.unique(day_numbers(frame["event_time"])).tolist()],
            "rows": len(frame),
            "frauds": int(labels.sum()),
        },
        "source": dict(source or {}),
        "champion": next((m.version for m in models if m.role == "champion"), None),
        "models": [
            {
                "version": m.version,
                "role": m.role,
                "model_type": m.model_type,
                "sha256": m.sha256,
                "training_data": m.training_data,
                "score_column": m.column,
            }
            for m in models
        ],
        "metrics": {m.version: model_metrics(frame, m, k) for m in models},
        "drift": {m.version: daily_drift(frame, m) for m in models if m.reference},
    }


DRIFT_TOP_FEATURES = 4


def daily_drift(frame: pd.DataFrame, model: ModelInfo) -> dict[str, Any]:
    """PSI per UTC day against the model's training reference: of its score, and of each of its
    non-calendar features present in the frame."""
    from stream_app.evaluation.drift_stats import BinnedReference
    from stream_app.features.definitions import CALENDAR_FEATURES

    assert model.reference is not None
    days = day_numbers(frame["event_time"])
    unique = np.unique(days)
    groups = [np.flatnonzero(days == d) for d in unique]
    score_bins = BinnedReference.from_dict(model.reference["score"])
    scores = frame[model.column].to_numpy(dtype=np.float64)
    out: dict[str, Any] = {
        "days": [iso_day(d) for d in unique.tolist()],
        "score": [score_bins.psi(scores[g]) for g in groups],
        "features": {},
    }
    for name, bins in model.reference.get("features", {}).items():
        if name in CALENDAR_FEATURES or name not in frame.columns:
            continue
        reference = BinnedReference.from_dict(bins)
        values = frame[name].to_numpy(dtype=np.float64)
        out["features"][name] = [reference.psi(values[g]) for g in groups]
    return out


def _atomic_write(path: Path, payload: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, path)


def write_outputs(
    out_dir: Path,
    frame: pd.DataFrame,
    models: Sequence[ModelInfo],
    *,
    date_from: date,
    date_to: date,
    source: dict[str, Any] | None = None,
    on_step: Callable[[str], None] | None = None,
) -> ReportFiles:
    """Write ``scored.parquet``, ``metrics.json`` and ``report.html`` into ``out_dir``.

    ``on_step`` is called after each of the :data:`REPORT_STEPS` steps with what was done.
    """
    step = on_step or (lambda _what: None)
    out_dir.mkdir(parents=True, exist_ok=True)
    scored = out_dir / SCORED_FILE
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    _atomic_write(scored, buffer.getvalue())
    step(SCORED_FILE)
    document = metrics_document(frame, models, date_from=date_from, date_to=date_to, source=source)
    metrics = out_dir / METRICS_FILE
    _atomic_write(metrics, orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
    step(METRICS_FILE)
    report = out_dir / REPORT_FILE
    _atomic_write(report, render_html(frame, models, document, on_step=step).encode())
    step(REPORT_FILE)
    return ReportFiles(scored, metrics, report, document)


# --- plots --------------------------------------------------------------------------------------


def _figure(width: float = 7.0, height: float = 4.6) -> tuple[Any, Axes]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return fig, fig.add_subplot()


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _one_class_note(ax: Axes) -> None:
    ax.text(
        0.5,
        0.5,
        "needs both frauds and genuine transactions",
        ha="center",
        va="center",
        transform=ax.transAxes,
    )


def plot_roc(frame: pd.DataFrame, models: Sequence[ModelInfo], metrics: dict[str, Any]) -> str:
    """ROC curves of every model on one axes (base64 PNG)."""
    from sklearn.metrics import roc_curve

    fig, ax = _figure()
    y = frame["label"].to_numpy(dtype=np.int64)
    if len(np.unique(y)) == 2:
        for m in models:
            fpr, tpr, _ = roc_curve(y, frame[m.column].to_numpy(dtype=np.float64))
            ax.plot(fpr, tpr, label=f"{m.version} (AUC {metrics[m.version]['auc_roc']:.3f})")
        ax.legend(loc="lower right", fontsize="small")
    else:
        _one_class_note(ax)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(
        xlabel="False positive rate",
        ylabel="True positive rate",
        title=PLOT_TITLES[0],
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    return _png(fig)


def plot_pr(frame: pd.DataFrame, models: Sequence[ModelInfo], metrics: dict[str, Any]) -> str:
    """Precision-recall curves of every model on one axes, with the fraud rate as baseline."""
    from sklearn.metrics import precision_recall_curve

    fig, ax = _figure()
    y = frame["label"].to_numpy(dtype=np.int64)
    if len(np.unique(y)) == 2:
        for m in models:
            precision, recall, _ = precision_recall_curve(
                y, frame[m.column].to_numpy(dtype=np.float64)
            )
            ax.step(
                recall,
                precision,
                where="post",
                label=f"{m.version} (AP {metrics[m.version]['average_precision']:.3f})",
            )
        ax.axhline(
            float(y.mean()),
            color="grey",
            linestyle=":",
            linewidth=1,
            label=f"fraud rate {y.mean():.2%}",
        )
        ax.legend(loc="upper right", fontsize="small")
    else:
        _one_class_note(ax)
    ax.set(xlabel="Recall", ylabel="Precision", title=PLOT_TITLES[1], xlim=(0, 1), ylim=(0, 1.01))
    return _png(fig)


def plot_calibration(frame: pd.DataFrame, models: Sequence[ModelInfo]) -> str:
    """Observed fraud rate against mean score in equal-width score bins, every model."""
    fig, ax = _figure()
    y = frame["label"].to_numpy(dtype=np.float64)
    edges = np.linspace(0.0, 1.0, CALIBRATION_BINS + 1)
    for m in models:
        s = frame[m.column].to_numpy(dtype=np.float64)
        bins = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, CALIBRATION_BINS - 1)
        count = np.bincount(bins, minlength=CALIBRATION_BINS)
        filled = count > 0
        mean_score = np.bincount(bins, weights=s, minlength=CALIBRATION_BINS)[filled]
        observed = np.bincount(bins, weights=y, minlength=CALIBRATION_BINS)[filled]
        ax.plot(mean_score / count[filled], observed / count[filled], marker="o", label=m.version)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="perfectly calibrated")
    ax.legend(loc="upper left", fontsize="small")
    ax.set(
        xlabel="Mean score in bin",
        ylabel="Observed fraud rate",
        title=PLOT_TITLES[2],
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    return _png(fig)


def plot_histograms(frame: pd.DataFrame, models: Sequence[ModelInfo]) -> str:
    """One panel per model: score densities of genuine and fraudulent transactions (log y)."""
    from matplotlib.figure import Figure

    n = len(models)
    cols = min(n, 2)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(7.0 if cols == 1 else 11.0, 3.6 * rows), dpi=100, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    y = frame["label"].to_numpy(dtype=np.int64)
    edges = np.linspace(0.0, 1.0, HISTOGRAM_BINS + 1)
    for ax, m in zip(axes, models, strict=False):
        s = frame[m.column].to_numpy(dtype=np.float64)
        for value, name, color in ((0, "genuine", "tab:blue"), (1, "fraud", "tab:red")):
            part = s[y == value]
            if len(part):
                ax.hist(
                    part,
                    bins=edges,
                    density=True,
                    alpha=0.55,
                    color=color,
                    label=f"{name} ({len(part):,})",
                )
        ax.set_yscale("log")
        ax.set(xlabel="Score", ylabel="Density", title=f"{m.version} ({m.role})", xlim=(0, 1))
        ax.legend(loc="upper center", fontsize="small")
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.suptitle(PLOT_TITLES[3])
    return _png(fig)


def plot_daily_cp(models: Sequence[ModelInfo], metrics: dict[str, Any]) -> str:
    """CP@100 per day, every model on one axes."""
    fig, ax = _figure()
    days: list[str] = []
    for m in models:
        daily = metrics[m.version][CP_DAILY_KEY]
        days = [d["day"] for d in daily]
        ax.plot(
            range(len(daily)),
            [d["value"] for d in daily],
            marker="o",
            label=f"{m.version} (mean {metrics[m.version][CP_KEY]:.3f})",
        )
    ax.set_xticks(range(len(days)), days, rotation=45, ha="right", fontsize="small")
    ax.set(xlabel="Day (UTC)", ylabel=f"CP@{TOP_K}", title=PLOT_TITLES[4], ylim=(0, 1.0))
    ax.legend(loc="upper right", fontsize="small")
    return _png(fig)


def plot_drift(models: Sequence[ModelInfo], document: dict[str, Any]) -> str:
    """Daily PSI against the training reference: each model's score, and the champion's
    features with the largest PSI."""
    fig, ax = _figure()
    drift = document.get("drift", {})
    days: list[str] = []
    champion = next((m for m in models if m.role == "champion"), None)
    for m in models:
        series = drift.get(m.version)
        if not series:
            continue
        days = series["days"]
        ax.plot(range(len(days)), series["score"], marker="o", label=f"score {m.version}")
        if m is champion:
            top = sorted(series["features"].items(), key=lambda kv: -max(kv[1], default=0.0))
            for name, values in top[:DRIFT_TOP_FEATURES]:
                ax.plot(range(len(days)), values, linestyle="--", label=name)
    if not days:
        ax.text(
            0.5,
            0.5,
            "no training reference known for these models",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
    ax.axhline(PSI_ALERT, color="#c62828", linewidth=0.8, linestyle=":")
    ax.set_xticks(range(len(days)), days, rotation=45, ha="right", fontsize="small")
    ax.set(xlabel="Day (UTC)", ylabel="PSI vs training", title=PLOT_TITLES[5])
    if days:
        ax.legend(loc="upper left", fontsize="x-small")
    return _png(fig)


# --- HTML ---------------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1180px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f3f3f3; }
code { font-size: 0.9em; }
.better { color: #1a7f37; } .worse { color: #c62828; }
figure { margin: 1.5em 0; } img { max-width: 100%; }
"""


def _fmt(value: Any, pattern: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return pattern.format(value)


def _comparison_table(models: Sequence[ModelInfo], metrics: dict[str, Any]) -> str:
    champion = next((m for m in models if m.role == "champion"), models[0])
    head = [
        f"<th>{html.escape(m.role)}<br><code>{html.escape(m.version)}</code></th>"
        + ("<th>Δ vs champion</th>" if m is not champion else "")
        for m in models
    ]
    lines = ["<table><thead><tr><th>Metric</th>", *head, "</tr></thead><tbody>"]
    for key, title, pattern in _METRIC_ROWS:
        cells = [f"<td>{html.escape(title)}</td>"]
        base = metrics[champion.version][key]
        for m in models:
            value = metrics[m.version][key]
            cells.append(f"<td>{_fmt(value, pattern)}</td>")
            if m is champion:
                continue
            if key in ("n", "frauds"):
                cells.append("<td></td>")
                continue
            delta = None if value is None or base is None else value - base
            if delta is None or math.isnan(delta):
                cells.append("<td>n/a</td>")
            else:
                css = "better" if delta > 0 else "worse" if delta < 0 else ""
                cells.append(f'<td class="{css}">{delta:+.4f}</td>')
        lines.append("<tr>" + "".join(cells) + "</tr>")
    lines.append("</tbody></table>")
    return "\n".join(lines)


def _models_table(models: Sequence[ModelInfo]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(m.role)}</td><td><code>{html.escape(m.version)}</code></td>"
        f"<td>{html.escape(m.model_type)}</td><td><code>{html.escape(m.sha256)}</code></td>"
        f"<td>{html.escape(m.training_data)}</td></tr>"
        for m in models
    )
    return (
        "<table><thead><tr><th>Role</th><th>Version</th><th>Type</th><th>SHA-256</th>"
        f"<th>Training data</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def render_html(
    frame: pd.DataFrame,
    models: Sequence[ModelInfo],
    document: dict[str, Any],
    on_step: Callable[[str], None] | None = None,
) -> str:
    """The self-contained report: summary, comparison table, one inline PNG per plot."""
    step = on_step or (lambda _what: None)
    metrics = document["metrics"]
    plots: list[str] = []
    for title, draw in zip(
        PLOT_TITLES,
        (
            lambda: plot_roc(frame, models, metrics),
            lambda: plot_pr(frame, models, metrics),
            lambda: plot_calibration(frame, models),
            lambda: plot_histograms(frame, models),
            lambda: plot_daily_cp(models, metrics),
            lambda: plot_drift(models, document),
        ),
        strict=True,
    ):
        plots.append(
            f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{draw()}">'
            "</figure>"
        )
        step(title)
    span = document["range"]
    source = "".join(
        f"<li>{html.escape(str(k))}: <code>{html.escape(str(v))}</code></li>"
        for k, v in document["source"].items()
    )
    title = f"Evaluation {span['from']} .. {span['to']}"
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
            f"<h1>{html.escape(title)}</h1>",
            f"<p>{span['rows']:,} transactions, {span['frauds']:,} frauds, "
            f"{len(span['days'])} day(s). Metrics over every transaction of the range; "
            f"CP@{TOP_K} per UTC day, cards found on earlier days removed.</p>",
            f"<ul>{source}</ul>" if source else "",
            "<h2>Champion vs challengers</h2>",
            _comparison_table(models, metrics),
            "<h2>Models</h2>",
            _models_table(models),
            "<h2>Plots</h2>",
            *plots,
            "</body></html>",
            "",
        ]
    )
