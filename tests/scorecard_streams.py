"""Scorecard streams for the rollout-verdict tests: a champion and a challenger scoring the same
labelled events, the challenger clearly better or clearly worse.

Customers are the bootstrap's unit, so frauds are clustered by customer as on a compromised
card: 30 of 300 customers have 3 frauds among their 5 payments.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

CUSTOMERS = 300
PER_CUSTOMER = 5
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _envelope(event_id: str, customer: str, version: str, score: float, when: datetime) -> dict:
    return {
        "event_id": event_id,
        "customer_id": customer,
        "terminal_id": "t1",
        "event_time": when.isoformat(),
        "model_version": version,
        "score": score,
        "scored_at": (when + timedelta(seconds=1)).isoformat(),
    }


def stream(
    champion: str, challenger: str, challenger_strength: float, seed: int = 7
) -> dict[str, list[dict[str, Any]]]:
    """Records per topic (transactions, scores, scores.shadow, labels). Scores are
    sigmoid(strength * label + N(0, 1) - 3): the champion's strength is 2, the challenger's
    ``challenger_strength`` (4: clearly better; 0.5: clearly worse)."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[dict[str, Any]]] = {
        "transactions": [],
        "scores": [],
        "scores.shadow": [],
        "labels": [],
    }
    for c in range(CUSTOMERS):
        customer = f"c{c}"
        for j in range(PER_CUSTOMER):
            event_id = f"e{c}-{j}"
            when = T0 + timedelta(hours=c * 0.07 + j * 4.3)
            label = int(c % 10 == 0 and j < 3)
            noise = rng.normal(size=2)
            s_champ = float(1 / (1 + np.exp(-(2.0 * label + noise[0] - 3))))
            s_chall = float(1 / (1 + np.exp(-(challenger_strength * label + noise[1] - 3))))
            out["transactions"].append(
                {
                    "event_id": event_id,
                    "event_time": when.isoformat(),
                    "customer_id": customer,
                    "terminal_id": "t1",
                    "amount": float(10 + 40 * j),
                    "schema_version": 1,
                }
            )
            champ = _envelope(event_id, customer, champion, s_champ, when)
            out["scores"].append(champ)
            out["scores.shadow"].append(
                {
                    "challenger": _envelope(event_id, customer, challenger, s_chall, when),
                    "champion_version": champion,
                    "champion_score": s_champ,
                }
            )
            out["labels"].append(
                {
                    "event_id": event_id,
                    "customer_id": customer,
                    "terminal_id": "t1",
                    "event_time": when.isoformat(),
                    "label": label,
                    "label_time": (when + timedelta(days=7)).isoformat(),
                }
            )
    return out
