"""A rollout verdict: challenger against champion on the live scorecard's joined pairs.

The scorecard publishes every label it joins to a served score once, on ``scorecard.pairs``
(model version, route, event id, customer, event time, score, label). For each window a
challenger has (``shadow``: its shadow scores; ``canary``: the scores it served as the canary),
:func:`compare_window` takes the challenger's pairs and the champion's to compare them with
(shadow: the champion's scores of the very same events; canary: the champion's route over the
canary's event-time span, other customers by construction), and gives every metric with a 95 %
percentile bootstrap interval, **resampling customers** (all of a customer's labelled events go
in or out together: a customer's transactions are not independent, a compromised card makes
several frauds), for each model and for the difference. :func:`verdict` applies the rule:

1. fewer than ``min_frauds`` labelled frauds on either side: **keep watching**;
2. AP or AUC clearly worse (the difference's interval entirely below 0): **roll back**;
3. AP clearly better (its interval entirely above 0), AUC not clearly worse: **promote**;
4. otherwise: **keep watching**.

Brier, ECE and precision@k are shown with their intervals but do not decide: a class-weighted
challenger overstates probabilities by design and a threshold or a calibration fixes that; a
ranking it lacks cannot be fixed after the fact.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from stream_app.evaluation.metrics import calibration, period_metrics

METRICS: tuple[str, ...] = ("auc_roc", "average_precision", "precision_at_k", "brier", "ece")
WINDOWS: tuple[str, ...] = ("shadow", "canary")
CHAMPION_ROUTE = "champion"
Verdict = Literal["promote", "keep watching", "roll back"]


@dataclass(frozen=True, slots=True)
class Pairs:
    """One side's labelled scores."""

    event_id: list[str]
    customer_id: list[str]
    event_ts: npt.NDArray[np.float64]
    score: npt.NDArray[np.float64]
    label: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.score)

    @property
    def frauds(self) -> int:
        return int(self.label.sum())

    def where(self, keep: npt.NDArray[np.bool_]) -> Pairs:
        idx = np.flatnonzero(keep)
        return Pairs(
            [self.event_id[i] for i in idx],
            [self.customer_id[i] for i in idx],
            self.event_ts[idx],
            self.score[idx],
            self.label[idx],
        )


def pairs_of(records: Iterable[Mapping[str, Any]], version: str, route: str) -> Pairs:
    """The pairs of ``version`` served on ``route`` (the first of a repeated event id)."""
    seen: set[str] = set()
    ev: list[str] = []
    cust: list[str] = []
    ts: list[float] = []
    s: list[float] = []
    y: list[int] = []
    for r in records:
        if r["model_version"] != version or r.get("route", CHAMPION_ROUTE) != route:
            continue
        if r["event_id"] in seen:
            continue
        seen.add(r["event_id"])
        ev.append(r["event_id"])
        cust.append(r["customer_id"])
        ts.append(datetime.fromisoformat(r["event_time"]).timestamp())
        s.append(float(r["score"]))
        y.append(int(r["label"]))
    return Pairs(
        ev, cust, np.asarray(ts, np.float64), np.asarray(s, np.float64), np.asarray(y, np.int64)
    )


def metrics_of(
    score: npt.NDArray[np.float64], label: npt.NDArray[np.int64], k: int
) -> dict[str, float]:
    """The scorecard's metrics and the ECE (NaN where undefined: AUC and AP need both
    classes)."""
    values = period_metrics(score, label, k)
    out = {name: float("nan") if v is None else float(v) for name, v in values.items()}
    out["ece"] = calibration(score, label)[0]
    return out


@dataclass(frozen=True, slots=True)
class Estimate:
    """A point value and its 95 % bootstrap interval (NaN when undefined)."""

    value: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float | None]:
        def clean(x: float) -> float | None:
            return None if np.isnan(x) else x

        return {"value": clean(self.value), "low": clean(self.low), "high": clean(self.high)}


def _interval(values: npt.NDArray[np.float64]) -> tuple[float, float]:
    ok = values[~np.isnan(values)]
    if len(ok) == 0:
        return float("nan"), float("nan")
    low, high = np.percentile(ok, [2.5, 97.5])
    return float(low), float(high)


@dataclass(slots=True)
class WindowComparison:
    """One window's comparison: each metric per side and the difference, and the verdict."""

    window: str
    labels: dict[str, int]
    frauds: dict[str, int]
    customers: int
    champion: dict[str, Estimate] = field(default_factory=dict)
    challenger: dict[str, Estimate] = field(default_factory=dict)
    delta: dict[str, Estimate] = field(default_factory=dict)
    verdict: Verdict = "keep watching"
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "labels": self.labels,
            "frauds": self.frauds,
            "customers": self.customers,
            "metrics": {
                m: {
                    "champion": self.champion[m].as_dict(),
                    "challenger": self.challenger[m].as_dict(),
                    "delta": self.delta[m].as_dict(),
                }
                for m in METRICS
            },
            "verdict": self.verdict,
            "reason": self.reason,
        }


def bootstrap(
    champion: Pairs, challenger: Pairs, k: int, n_boot: int, seed: int
) -> tuple[dict[str, Estimate], dict[str, Estimate], dict[str, Estimate]]:
    """Each metric per side and the difference (challenger - champion), with percentile
    intervals over ``n_boot`` resamples of the customers of both sides (drawn with
    replacement from their union; a drawn customer brings all their pairs on each side)."""
    customers = sorted(set(champion.customer_id) | set(challenger.customer_id))
    index = {c: i for i, c in enumerate(customers)}
    sides = (champion, challenger)
    owner = [np.fromiter((index[c] for c in p.customer_id), np.int64, len(p)) for p in sides]
    rng = np.random.default_rng(seed)
    draws = np.empty((2, len(METRICS), n_boot))
    for b in range(n_boot):
        counts = np.bincount(
            rng.integers(0, len(customers), len(customers)), minlength=len(customers)
        )
        for side, (pairs, who) in enumerate(zip(sides, owner, strict=True)):
            idx = np.repeat(np.arange(len(pairs)), counts[who])
            values = metrics_of(pairs.score[idx], pairs.label[idx], k)
            draws[side, :, b] = [values[m] for m in METRICS]
    point = [metrics_of(p.score, p.label, k) for p in sides]
    out: list[dict[str, Estimate]] = [{}, {}, {}]
    for j, m in enumerate(METRICS):
        for side in (0, 1):
            out[side][m] = Estimate(point[side][m], *_interval(draws[side, j]))
        out[2][m] = Estimate(point[1][m] - point[0][m], *_interval(draws[1, j] - draws[0, j]))
    return out[0], out[1], out[2]


def verdict(
    delta: Mapping[str, Estimate], frauds: Mapping[str, int], min_frauds: int
) -> tuple[Verdict, str]:
    """The rule (see the module's docstring) on the differences' intervals."""
    few = {side: n for side, n in frauds.items() if n < min_frauds}
    if few:
        sides = ", ".join(f"{side} {n}" for side, n in sorted(few.items()))
        return "keep watching", f"fewer than {min_frauds} labelled frauds ({sides})"
    ap, auc = delta["average_precision"], delta["auc_roc"]
    worse = [name for name, e in (("AP", ap), ("AUC", auc)) if e.high < 0]
    if worse:
        parts = [
            f"{name} {e.value:+.4f} [{e.low:+.4f}, {e.high:+.4f}]"
            for name, e in (("AP", ap), ("AUC", auc))
            if name in worse
        ]
        return "roll back", f"clearly worse: {'; '.join(parts)} (interval below 0)"
    if ap.low > 0:
        return (
            "promote",
            f"AP {ap.value:+.4f} [{ap.low:+.4f}, {ap.high:+.4f}] above 0, AUC not worse "
            f"({auc.value:+.4f} [{auc.low:+.4f}, {auc.high:+.4f}])",
        )
    return (
        "keep watching",
        f"no clear difference: AP {ap.value:+.4f} [{ap.low:+.4f}, {ap.high:+.4f}], AUC "
        f"{auc.value:+.4f} [{auc.low:+.4f}, {auc.high:+.4f}]",
    )


def window_sides(
    records: Sequence[Mapping[str, Any]], challenger: str, champion: str, window: str
) -> tuple[Pairs, Pairs] | None:
    """(champion side, challenger side) of a window, or None if the challenger has none."""
    chall = pairs_of(records, challenger, window)
    if len(chall) == 0:
        return None
    champ = pairs_of(records, champion, CHAMPION_ROUTE)
    if window == "shadow":  # the very same events, scored by both
        events = set(chall.event_id)
        champ = champ.where(np.fromiter((e in events for e in champ.event_id), bool, len(champ)))
        common = set(champ.event_id)
        chall = chall.where(np.fromiter((e in common for e in chall.event_id), bool, len(chall)))
    else:  # other customers, over the same event-time span
        lo, hi = chall.event_ts.min(), chall.event_ts.max()
        champ = champ.where((champ.event_ts >= lo) & (champ.event_ts <= hi))
    return champ, chall


def compare_window(
    records: Sequence[Mapping[str, Any]],
    challenger: str,
    champion: str,
    window: str,
    *,
    k: int = 100,
    n_boot: int = 1000,
    seed: int = 0,
    min_frauds: int = 20,
) -> WindowComparison | None:
    """The comparison of one window (None when the challenger has no pair on it)."""
    sides = window_sides(records, challenger, champion, window)
    if sides is None:
        return None
    champ, chall = sides
    result = WindowComparison(
        window,
        labels={"champion": len(champ), "challenger": len(chall)},
        frauds={"champion": champ.frauds, "challenger": chall.frauds},
        customers=len(set(champ.customer_id) | set(chall.customer_id)),
    )
    if len(champ) == 0:
        nan = Estimate(float("nan"), float("nan"), float("nan"))
        result.champion = dict.fromkeys(METRICS, nan)
        result.challenger = dict.fromkeys(METRICS, nan)
        result.delta = dict.fromkeys(METRICS, nan)
        result.reason = f"no champion ({champion}) scores to compare with in this window"
        return result
    result.champion, result.challenger, result.delta = bootstrap(champ, chall, k, n_boot, seed)
    result.verdict, result.reason = verdict(result.delta, result.frauds, min_frauds)
    return result
