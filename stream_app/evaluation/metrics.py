"""Quality metrics as the fraud-detection handbook defines them.

AUC ROC and average precision come from scikit-learn. Card precision top-k (CP@k) follows the
handbook: for each day, each card's highest score and its label (max) that day, cards ranked by
score, precision of the top k; cards found in earlier days are removed from later days; the mean
over days.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.metrics import average_precision_score, roc_auc_score


def card_precision_top_k(
    day: npt.ArrayLike,
    customer: Sequence[str] | npt.ArrayLike,
    score: npt.ArrayLike,
    label: npt.ArrayLike,
    k: int = 100,
) -> tuple[float, list[float]]:
    """Mean CP@k over days, and the per-day values (days in increasing order)."""
    days = np.asarray(day)
    cards = np.asarray(customer)
    scores = np.asarray(score, dtype=np.float64)
    labels = np.asarray(label)
    detected: set[object] = set()
    per_day: list[float] = []
    for d in np.unique(days):
        in_day = days == d
        best: dict[object, list[float]] = {}
        for c, s, y in zip(
            cards[in_day].tolist(), scores[in_day].tolist(), labels[in_day].tolist(), strict=True
        ):
            if c in detected:
                continue
            entry = best.get(c)
            if entry is None:
                best[c] = [s, y]
            else:
                entry[0] = max(entry[0], s)
                entry[1] = max(entry[1], y)
        ranked = sorted(best.items(), key=lambda item: -item[1][0])[:k]
        found = [c for c, (_, y) in ranked if y == 1]
        per_day.append(len(found) / k)
        detected.update(found)
    return (float(np.mean(per_day)) if per_day else float("nan")), per_day


def quality(
    label: npt.ArrayLike,
    score: npt.ArrayLike,
    day: npt.ArrayLike,
    customer: Sequence[str] | npt.ArrayLike,
    k: int = 100,
) -> dict[str, float]:
    """AUC ROC, average precision and CP@k of one scored set."""
    y = np.asarray(label)
    s = np.asarray(score, dtype=np.float64)
    both = len(np.unique(y)) == 2
    cp, _ = card_precision_top_k(day, customer, s, y, k)
    return {
        "auc_roc": float(roc_auc_score(y, s)) if both else float("nan"),
        "average_precision": float(average_precision_score(y, s)) if both else float("nan"),
        f"card_precision_at_{k}": cp,
        "n": len(y),
        "frauds": int(y.sum()),
    }


def calibration(
    score: npt.ArrayLike, label: npt.ArrayLike, bins: int = 10
) -> tuple[float, list[dict[str, float | int]]]:
    """Expected calibration error over ``bins`` equal-width score bins of [0, 1], and the bins.

    A score s falls in bin ``min(floor(s * bins), bins - 1)`` (1.0 in the last one). ECE is
    ``sum_b n_b / n * |mean score_b - fraud rate_b|`` over the non-empty bins; each bin is
    reported as ``{lo, hi, n, mean_score, fraud_rate}`` (empty bins left out). NaN when empty.
    """
    s = np.asarray(score, dtype=np.float64)
    y = np.asarray(label, dtype=np.float64)
    if len(s) == 0:
        return float("nan"), []
    index = np.minimum((s * bins).astype(np.int64), bins - 1)
    n = np.bincount(index, minlength=bins)
    sum_s = np.bincount(index, weights=s, minlength=bins)
    sum_y = np.bincount(index, weights=y, minlength=bins)
    ece = float(np.abs(sum_s - sum_y).sum() / len(s))
    out: list[dict[str, float | int]] = [
        {
            "lo": b / bins,
            "hi": (b + 1) / bins,
            "n": int(n[b]),
            "mean_score": float(sum_s[b] / n[b]),
            "fraud_rate": float(sum_y[b] / n[b]),
        }
        for b in range(bins)
        if n[b]
    ]
    return ece, out


def period_metrics(scores: Iterable[float], labels: Iterable[int], k: int) -> dict[str, Any]:
    """AUC ROC, AP (None unless both classes), precision@k, Brier (None when empty)."""
    s = np.asarray(scores if isinstance(scores, np.ndarray) else list(scores), dtype=np.float64)
    y = np.asarray(labels if isinstance(labels, np.ndarray) else list(labels), dtype=np.int64)
    if len(s) == 0:
        return {"auc_roc": None, "average_precision": None, "precision_at_k": None, "brier": None}
    both = 0 < int(y.sum()) < len(y)
    top = np.argsort(-s, kind="stable")[: min(k, len(s))]
    return {
        "auc_roc": float(roc_auc_score(y, s)) if both else None,
        "average_precision": float(average_precision_score(y, s)) if both else None,
        "precision_at_k": float(y[top].mean()),
        "brier": float(np.mean((s - y) ** 2)),
    }
