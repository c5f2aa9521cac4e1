"""The canary: the challenger decides, instead of the champion, for a sticky share of customers.

Which customers: the first four bytes of the BLAKE2b hash of the customer id (personalised with
``canary``), read as a fraction of 2**32, below the share. So one customer is always on one arm
while the share stays, every worker of the group picks the same customers without asking
another, and a change of share moves the fewest customers possible: raising it only adds
customers to the canary, lowering it only takes some back.

A hash of its own makes the canary's customers independent of the shadow sample's
(:func:`stream_app.scoring.shadow.in_sample`, a CRC-32): a 5 % canary is neither the first 5 % of
a 10 % shadow sample nor kept out of it. (A CRC-32 of a salted id would not do: CRC is linear, so
for ids of one length it only XORs the unsalted CRC with a constant, which moves the canary to a
fixed other range of the shadow's hash.)

>>> in_canary("42", 1.0), in_canary("42", 0.0)
(True, False)
>>> parse_share("5%"), parse_share("0.05"), parse_share("0")
(0.05, 0.05, 0.0)
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stream_app.exceptions import ModelIntegrityError

CHAMPION_ROUTE = "champion"
CANARY_ROUTE = "canary"
SHADOW_ROUTE = "shadow"
_SCALE = 4_294_967_296.0  # 2**32


def customer_hash(customer_id: str) -> int:
    """The customer's place in 0 .. 2**32-1 for the canary."""
    digest = hashlib.blake2b(customer_id.encode(), digest_size=4, person=b"canary").digest()
    return int.from_bytes(digest, "big")


def in_canary(customer_id: str, share: float) -> bool:
    """Whether the canary decides for ``customer_id`` at ``share`` (0-1)."""
    if share >= 1.0:
        return True
    return customer_hash(customer_id) < share * _SCALE


def canary_rows(customer_ids: Sequence[str], share: float) -> list[int]:
    """The rows of a batch whose customers the canary decides for."""
    if share <= 0.0:
        return []
    if share >= 1.0:
        return list(range(len(customer_ids)))
    limit = share * _SCALE
    place = customer_hash
    return [i for i, c in enumerate(customer_ids) if place(c) < limit]


def parse_share(text: str) -> float:
    """``"5%"`` or ``"0.05"`` as 0.05; :class:`ValueError` says what is accepted."""
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100.0 if raw.endswith("%") else float(raw)
    except ValueError:
        raise ValueError(f"{text!r} is not a share: give a percentage (5%) or 0-1 (0.05)") from None
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{text!r} is outside 0-100 % (0-1)")
    return round(value, 6)


@dataclass(frozen=True)
class CanarySpec:
    """The canary an assignment names: which version, for which share of customers."""

    version: str
    share: float

    def to_dict(self) -> dict[str, Any]:
        """The ``canary`` object of an assignment or of ``serving.json``."""
        return {"version": self.version, "share": self.share}

    @classmethod
    def of(cls, data: Mapping[str, Any] | None) -> CanarySpec | None:
        """From a ``canary`` object (None: no canary); :class:`ModelIntegrityError` says what is
        wrong with it."""
        if data is None:
            return None
        version, share = data.get("version"), data.get("share")
        if not isinstance(version, str) or not version:
            raise ModelIntegrityError(f"canary.version must be a non-empty string, got {version!r}")
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1:
            raise ModelIntegrityError(f"canary.share must be a number in 0-1, got {share!r}")
        return cls(version, float(share))

    def describe(self) -> str:
        """``20261123T120000Z-hgb for 5 % of customers``."""
        return f"{self.version} for {self.share * 100:g} % of customers"
