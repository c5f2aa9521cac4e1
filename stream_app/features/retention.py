"""How long entity state keeps its samples."""

from __future__ import annotations

from dataclasses import dataclass

from stream_app.features.definitions import Entity, horizon_s


@dataclass(frozen=True, slots=True)
class Retention:
    """How long state keeps samples: the features' horizon plus the allowed lateness."""

    customer_s: float
    terminal_s: float
    lateness_s: float = 0.0

    @classmethod
    def for_lateness(cls, allowed_lateness_s: float) -> Retention:
        """Retention for the current feature definitions and ``allowed_lateness_s``."""
        return cls(
            horizon_s(Entity.CUSTOMER) + allowed_lateness_s,
            horizon_s(Entity.TERMINAL) + allowed_lateness_s,
            allowed_lateness_s,
        )
