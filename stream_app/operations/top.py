"""``stream-app top``: the operator's figures from two scrapes of the metrics endpoints.

Pure logic, no terminal: :func:`parse` turns Prometheus text into samples, :func:`figures`
compares two scrapes (rates over the interval between them, latency quantiles from the histogram
buckets that moved in it) and :func:`render` lays the figures out with rich. The CLI
(:mod:`stream_app.cli.top`) scrapes, calls these two and redraws.

Quantiles follow Prometheus' ``histogram_quantile``: linear interpolation inside the bucket that
holds the rank, the lowest bucket starting at 0, and the highest finite bound when the rank falls
in the ``+Inf`` bucket.
"""

from __future__ import annotations

import math
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

Labels = tuple[tuple[str, str], ...]
Samples = dict[tuple[str, Labels], float]

LATENCY = "stream_app_end_to_end_latency_seconds"
SCORING = "stream_app_scoring_seconds"
QUANTILES = (0.5, 0.95, 0.99)
NONE = "n/a"
DRIFT_ROWS = 12  # the drift table shows alerting statistics first, then up to this many


def parse(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, keyed by (name, sorted labels)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): float(s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(url: str, timeout_s: float = 5.0) -> Samples:
    """GET ``url`` (a ``/metrics`` endpoint) and parse it."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an http(s) URL: {url}")
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 (scheme checked)
        return parse(resp.read().decode())


def by_label(samples: Samples, name: str, *keys: str) -> dict[tuple[str, ...], float]:
    """Values of ``name`` keyed by the values of labels ``keys``."""
    out: dict[tuple[str, ...], float] = {}
    for (sample, labels), value in samples.items():
        if sample == name:
            d = dict(labels)
            out[tuple(d.get(k, "") for k in keys)] = value
    return out


def total(samples: Samples, name: str, **match: str) -> float:
    """Sum of ``name`` over the series whose labels include ``match``."""
    return sum(
        value
        for (sample, labels), value in samples.items()
        if sample == name and all(dict(labels).get(k) == v for k, v in match.items())
    )


def buckets(samples: Samples, name: str) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) of histogram ``name``, sorted, ``+Inf`` last."""
    out = [
        (float(dict(labels)["le"]), value)
        for (sample, labels), value in samples.items()
        if sample == f"{name}_bucket"
    ]
    return sorted(out)


def quantile(q: float, cumulative: list[tuple[float, float]]) -> float | None:
    """``histogram_quantile(q, ...)`` of cumulative buckets; None when they hold nothing."""
    if not cumulative or cumulative[-1][1] <= 0:
        return None
    count = cumulative[-1][1]
    rank = q * count
    lower_bound, lower_count = 0.0, 0.0
    for bound, cum in cumulative:
        if cum >= rank:
            if math.isinf(bound):
                return lower_bound  # the highest finite bound, as Prometheus does
            if cum == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (cum - lower_count)
        lower_bound, lower_count = bound, cum
    return lower_bound


def bucket_delta(
    before: list[tuple[float, float]], after: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    """Buckets of the observations made between two scrapes (a restart resets to ``after``)."""
    old = dict(before)
    delta = [(bound, cum - old.get(bound, 0.0)) for bound, cum in after]
    if any(d < 0 for _, d in delta):
        return after
    return delta


@dataclass
class Figures:
    """What ``top`` shows, computed from two scrapes ``interval_s`` apart."""

    interval_s: float
    consumed_per_s: float
    scored_per_s: float
    scored_total: float
    latency: dict[float, float | None]
    scoring_p99: float | None
    batch_mean: float | None
    dead_letters: dict[str, tuple[float, float]]  # reason -> (total, per second)
    lag: dict[tuple[str, ...], float]
    table_keys: dict[str, float]
    labels_per_s: dict[str, float]
    replayed_total: float
    model: str
    challenger: str | None
    shadow_agreement: float | None  # over the interval
    shadow_skipped_per_s: float
    drift: list[tuple[str, str, float, bool]]  # statistic, subject, value, alerting
    drift_alerts_total: float
    scorecard: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)


def _rate(before: Samples, after: Samples, name: str, interval_s: float, **match: str) -> float:
    now, then = total(after, name, **match), total(before, name, **match)
    if now < then:  # the process restarted between the scrapes
        then = 0.0
    return (now - then) / interval_s if interval_s > 0 else 0.0


def _info(samples: Samples, name: str) -> str | None:
    for (sample, labels), _ in samples.items():
        d = dict(labels)
        if sample == name and "version" in d:  # an Info never set has one label-less sample
            return f"{d['version']} (sha256 {d.get('sha256', '')[:12]})"
    return None


def figures(before: Samples, after: Samples, interval_s: float) -> Figures:
    """The figures between two scrapes of the worker (and, merged in, the scorecard)."""
    latency_buckets = bucket_delta(buckets(before, LATENCY), buckets(after, LATENCY))
    scoring_buckets = bucket_delta(buckets(before, SCORING), buckets(after, SCORING))
    batch_sum = total(after, "stream_app_batch_size_sum", stage="scoring") - total(
        before, "stream_app_batch_size_sum", stage="scoring"
    )
    batch_count = total(after, "stream_app_batch_size_count", stage="scoring") - total(
        before, "stream_app_batch_size_count", stage="scoring"
    )
    dead_total = by_label(after, "stream_app_dead_letters_total", "reason")
    dead = {
        reason: (
            value,
            _rate(before, after, "stream_app_dead_letters_total", interval_s, reason=reason),
        )
        for (reason,), value in sorted(dead_total.items())
        if value > 0
    }
    agree = _rate(before, after, "stream_app_shadow_total", interval_s, outcome="agree")
    disagree = _rate(before, after, "stream_app_shadow_total", interval_s, outcome="disagree")
    drift_values = by_label(after, "stream_app_drift_value", "statistic", "subject")
    alerting = by_label(after, "stream_app_drift_alerting", "statistic", "subject")
    drift = sorted(
        ((stat, subject, value, alerting.get((stat, subject), 0.0) >= 1.0))
        for (stat, subject), value in drift_values.items()
    )
    lag = by_label(after, "stream_app_consumer_lag", "topic", "partition")
    tables = by_label(after, "stream_app_table_keys", "table")
    scorecard: dict[tuple[str, str], dict[str, float]] = {}
    for (version, granularity, metric), value in by_label(
        after, "stream_app_scorecard_metric", "model_version", "granularity", "metric"
    ).items():
        scorecard.setdefault((version, granularity), {})[metric] = value
    return Figures(
        interval_s=interval_s,
        consumed_per_s=_rate(
            before, after, "stream_app_events_consumed_total", interval_s, stage="customer"
        ),
        scored_per_s=_rate(before, after, "stream_app_events_scored_total", interval_s),
        scored_total=total(after, "stream_app_events_scored_total"),
        latency={q: quantile(q, latency_buckets) for q in QUANTILES},
        scoring_p99=quantile(0.99, scoring_buckets),
        batch_mean=batch_sum / batch_count if batch_count > 0 else None,
        dead_letters=dead,
        lag=dict(sorted(lag.items(), key=lambda kv: (kv[0][0], int(kv[0][1] or 0)))),
        table_keys={t: v for (t,), v in sorted(tables.items())},
        labels_per_s={
            outcome: _rate(before, after, "stream_app_labels_total", interval_s, outcome=outcome)
            for outcome in ("applied", "unmatched")
        },
        replayed_total=total(after, "stream_app_replayed_total"),
        model=_info(after, "stream_app_model_info") or "?",
        challenger=_info(after, "stream_app_challenger_info"),
        shadow_agreement=agree / (agree + disagree) if agree + disagree > 0 else None,
        shadow_skipped_per_s=_rate(
            before, after, "stream_app_shadow_total", interval_s, outcome="skipped"
        ),
        drift=drift,
        drift_alerts_total=total(after, "stream_app_drift_alerts_total"),
        scorecard=scorecard,
    )


def _ms(seconds: float | None) -> str:
    return NONE if seconds is None else f"{seconds * 1000:,.0f} ms"


def _num(value: float | None, digits: int = 3) -> str:
    return NONE if value is None else f"{value:.{digits}f}"


def _table(title: str, columns: Iterable[str], rows: Iterable[Iterable[str]]) -> Group:
    """A table under a title line (a rich table title would wrap at the table's width)."""
    table = Table(expand=False, pad_edge=False)
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    return Group(Text(title, style="bold"), table)


def render(f: Figures, source: str = "") -> RenderableType:
    """The dashboard: a headline, then throughput/latency, rejects, lag, drift, quality."""
    head = Text.assemble(
        ("stream-app top", "bold"),
        f"  {source}  every {f.interval_s:.0f} s · champion {f.model}",
        f" · challenger {f.challenger}" if f.challenger else "",
    )
    flow = _table(
        "Flow",
        ("", "value"),
        [
            ("consumed/s", f"{f.consumed_per_s:,.0f}"),
            ("scored/s", f"{f.scored_per_s:,.0f}"),
            ("scored total", f"{f.scored_total:,.0f}"),
            *((f"latency p{round(q * 100)}", _ms(v)) for q, v in f.latency.items()),
            ("scoring step p99", _ms(f.scoring_p99)),
            ("batch (mean)", _num(f.batch_mean, 1)),
            ("labels applied/s", f"{f.labels_per_s.get('applied', 0.0):,.1f}"),
            ("labels unmatched/s", f"{f.labels_per_s.get('unmatched', 0.0):,.1f}"),
            ("replayed after restart", f"{f.replayed_total:,.0f}"),
        ],
    )
    rejects = _table(
        "Dead letters",
        ("reason", "total", "/s"),
        [(r, f"{t:,.0f}", f"{s:,.1f}") for r, (t, s) in f.dead_letters.items()]
        or [("none", "0", "0.0")],
    )
    lag_total = sum(f.lag.values())
    lag = _table(
        f"Consumer lag (total {lag_total:,.0f})",
        ("topic[partition]", "records"),
        [(f"{t}[{p}]", f"{v:,.0f}") for (t, p), v in f.lag.items()] or [("none", NONE)],
    )
    state = _table(
        "State",
        ("table", "keys"),
        [(t, f"{v:,.0f}") for t, v in f.table_keys.items()] or [("not scraped yet", NONE)],
    )
    shadow = Text.assemble(
        ("Shadow ", "bold"),
        "off"
        if f.challenger is None
        else (
            f"agreement {_pct(f.shadow_agreement)} over the last {f.interval_s:.0f} s, "
            f"skipped {f.shadow_skipped_per_s:,.1f}/s"
        ),
    )
    alerting = sum(1 for *_, a in f.drift if a)
    shown = sorted(f.drift, key=lambda d: (not d[3], d[0], d[1]))[:DRIFT_ROWS]  # alerts first
    hidden = len(f.drift) - len(shown)
    drift = _table(
        f"Drift (latest records: {alerting} of {len(f.drift)} alerting; "
        f"{f.drift_alerts_total:,.0f} alerts since start)",
        ("statistic", "subject", "value", "alert"),
        [
            *((s, subj, _num(v), "ALERT" if a else "") for s, subj, v, a in shown),
            *([(f"... {hidden} more, none alerting", "", "", "")] if hidden else []),
        ]
        or [("none yet", "", "", "")],
    )
    quality = _table(
        "Scorecard (newest period)",
        ("version / granularity", "labels", "coverage", "AUC", "AP", "P@k", "Brier"),
        [
            (
                f"{version} / {granularity}",
                f"{m.get('labels', 0):,.0f}",
                _pct(m.get("label_coverage")),
                _num(m.get("auc_roc")),
                _num(m.get("average_precision")),
                _num(m.get("precision_at_k")),
                _num(m.get("brier")),
            )
            for (version, granularity), m in sorted(f.scorecard.items())
        ]
        or [("no scorecard scraped", "", "", "", "", "", "")],
    )
    top_row = Table.grid(padding=(0, 3))
    top_row.add_row(flow, Group(rejects, lag, state))
    return Group(head, Text(""), top_row, Text(""), shadow, Text(""), drift, Text(""), quality)


def _pct(value: float | None) -> str:
    return NONE if value is None else f"{value:.1%}"


def merge(*scrapes: Mapping[tuple[str, Labels], float]) -> Samples:
    """One sample set from several endpoints (their metric names do not overlap)."""
    out: Samples = {}
    for s in scrapes:
        out.update(s)
    return out
