"""The scorecard's slices: which segment a joined score belongs to.

Built in: ``amount`` (bands by ``STREAM_APP_SCORECARD_AMOUNT_EDGES``), ``hour`` (``night``
00:00-06:59 UTC as the ``TX_DURING_NIGHT`` feature counts it, else ``day``) and ``tenure``
(``new`` / ``established`` / ``unknown``, see :class:`Tenure`); plus every slice a user declares
in ``STREAM_APP_SCORECARD_SLICES`` (a field of the transaction, or ``features.NAME`` of the
champion's envelope, and its bands). The handbook data carries no protected attribute: these are
segment checks, the kind a fairness review starts from.

>>> band(120.0, [50.0, 220.0])
'50-220'
>>> Tenure(30 * 86_400.0).band("c1", 0.0)   # first seen at the very start of what was read
'unknown'
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from stream_app.config import SliceSpec

UNKNOWN = "unknown"
NIGHT_LAST_HOUR = 6  # TX_DURING_NIGHT: hour <= 6


def _num(x: float) -> str:
    return f"{x:g}"


def band(value: float, edges: Sequence[float]) -> str:
    """``<a``, ``a-b``, ..., ``>=z`` for sorted ``edges`` [a, b, ..., z]; a value on an edge goes
    to the band above it."""
    if value < edges[0]:
        return f"<{_num(edges[0])}"
    for lo, hi in itertools.pairwise(edges):
        if lo <= value < hi:
            return f"{_num(lo)}-{_num(hi)}"
    return f">={_num(edges[-1])}"


def hour_band(event_ts: float) -> str:
    """``night`` (00:00-06:59 UTC) or ``day``."""
    return "night" if datetime.fromtimestamp(event_ts, UTC).hour <= NIGHT_LAST_HOUR else "day"


def declared_band(spec: SliceSpec, value: Any) -> str:
    """The band of ``value`` under a user's slice: numeric edges, listed values or the value."""
    if value is None:
        return UNKNOWN
    if spec.edges:
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            return UNKNOWN
        return band(float(value), sorted(spec.edges))
    text = str(value)
    if spec.values is not None:
        return text if text in spec.values else "other"
    return text


def lookup(spec: SliceSpec, transaction: Mapping[str, Any], envelope: Mapping[str, Any]) -> Any:
    """The field's value: ``features.NAME`` from the envelope, anything else from the
    transaction (then the envelope)."""
    if spec.field.startswith("features."):
        features = envelope.get("features") or {}
        return features.get(spec.field.removeprefix("features."))
    if spec.field in transaction:
        return transaction[spec.field]
    return envelope.get(spec.field)


class Tenure:
    """A customer's tenure from the first transaction of theirs the scorecard read.

    ``established`` once ``event time - first seen >= days``. ``new`` only when the scorecard's
    history began at least ``days`` before the customer's first transaction in it (it read that
    long without seeing them); otherwise ``unknown``: a customer first seen near the start of
    what was read may be older than the read-back. A customer silent for the whole history before
    their first transaction in it counts as new.
    """

    def __init__(self, days_s: float) -> None:
        self.days_s = days_s
        self.first_seen: dict[str, float] = {}
        self.start = math.inf

    def seen(self, customer_id: str, event_ts: float) -> None:
        """One transaction of ``customer_id`` at ``event_ts``."""
        self.start = min(self.start, event_ts)
        first = self.first_seen.get(customer_id)
        if first is None or event_ts < first:
            self.first_seen[customer_id] = event_ts

    def band(self, customer_id: str, event_ts: float) -> str:
        first = self.first_seen.get(customer_id)
        if first is None:
            return UNKNOWN
        if event_ts - first >= self.days_s:
            return "established"
        if first - self.start >= self.days_s:
            return "new"
        return UNKNOWN


class Slicer:
    """Every slice's band for one joined score."""

    def __init__(
        self,
        amount_edges: Sequence[float] = (50.0, 220.0),
        tenure_days: float = 30.0,
        declared: Mapping[str, SliceSpec] | None = None,
    ) -> None:
        self.amount_edges = sorted(amount_edges)
        self.tenure = Tenure(tenure_days * 86_400.0)
        self.declared = dict(declared or {})
        clash = {"amount", "hour", "tenure", "all"} & set(self.declared)
        if clash:
            raise ValueError(f"declared slice names clash with built-in ones: {sorted(clash)}")

    def envelope_fields(self, envelope: Mapping[str, Any]) -> dict[str, Any] | None:
        """What the declared slices read from an envelope (None when nothing), kept with the
        served score until its label comes."""
        out: dict[str, Any] = {}
        features = envelope.get("features") or {}
        for spec in self.declared.values():
            if spec.field.startswith("features."):
                name = spec.field.removeprefix("features.")
                out.setdefault("features", {})[name] = features.get(name)
            elif spec.field in envelope:
                out[spec.field] = envelope[spec.field]
        return out or None

    def bands(
        self,
        customer_id: str,
        event_ts: float,
        transaction: Mapping[str, Any] | None,
        envelope: Mapping[str, Any],
    ) -> dict[str, str]:
        """Slice name → band (``unknown`` where the transaction was not read)."""
        tx = transaction or {}
        amount = tx.get("amount")
        out = {
            "amount": UNKNOWN if amount is None else band(float(amount), self.amount_edges),
            "hour": hour_band(event_ts),
            "tenure": self.tenure.band(customer_id, event_ts),
        }
        for name, spec in self.declared.items():
            out[name] = declared_band(spec, lookup(spec, tx, envelope))
        return out
