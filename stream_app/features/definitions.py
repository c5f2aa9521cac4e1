"""The feature definitions: one list, used by training, replay and the live worker.

Names follow the fraud-detection handbook (Le Borgne et al.), so any output can be compared
column by column with other implementations. To add a feature, add one entry to ``FEATURES``:
the entity state keeps as much history as the longest window plus delay needs, the live worker,
the offline builder and the trainer all pick it up, and a model's manifest pins the list it
was trained on.

Windows are in event time, ``(end - window, end]`` with ``end = t - delay``: with no delay the
current event is included. Terminal windows are delayed because fraud labels arrive late (the
handbook's protocol assumes 7 days).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

DAY_S = 86_400.0


class Entity(StrEnum):
    """Who a window feature aggregates over; each entity's state lives in its own table."""

    CUSTOMER = "customer"
    TERMINAL = "terminal"


class Aggregate(StrEnum):
    """What a window feature computes over the entity's samples in the window."""

    COUNT = "count"  # number of transactions
    MEAN = "mean"  # mean amount (the window always holds the current event)
    RISK = "risk"  # fraction of the window's transactions labelled fraud (0 when empty)


@dataclass(frozen=True, slots=True)
class EventFeature:
    """A feature computed from the event alone: ``compute(amount, utc_time_struct)``.

    ``calendar`` marks a function of the clock alone (weekend, night): its distribution over a
    window says where the window sits in the week, not what the traffic is, so drift monitoring
    leaves it out.
    """

    name: str
    compute: Callable[[float, time.struct_time], float]
    calendar: bool = False


@dataclass(frozen=True, slots=True)
class WindowFeature:
    """An aggregate over one entity's history in ``(t - delay - window, t - delay]``."""

    name: str
    entity: Entity
    aggregate: Aggregate
    window_days: float
    delay_days: float = 0.0

    def bounds(self, t: float) -> tuple[float, float]:
        """``(start, end)`` of the window for an event at ``t`` (epoch seconds)."""
        end = t - self.delay_days * DAY_S
        return end - self.window_days * DAY_S, end

    @property
    def horizon_s(self) -> float:
        """How far back (seconds) this feature reads."""
        return (self.window_days + self.delay_days) * DAY_S


Feature = EventFeature | WindowFeature

LABEL_DELAY_DAYS = 7.0
WINDOWS_DAYS = (1, 7, 30)


def _amount(amount: float, _tm: time.struct_time) -> float:
    return amount


def _weekend(_amount: float, tm: time.struct_time) -> float:
    return 1.0 if tm.tm_wday >= 5 else 0.0


def _night(_amount: float, tm: time.struct_time) -> float:
    return 1.0 if tm.tm_hour <= 6 else 0.0


def _customer(w: int) -> tuple[WindowFeature, WindowFeature]:
    return (
        WindowFeature(f"CUSTOMER_ID_NB_TX_{w}DAY_WINDOW", Entity.CUSTOMER, Aggregate.COUNT, w),
        WindowFeature(f"CUSTOMER_ID_AVG_AMOUNT_{w}DAY_WINDOW", Entity.CUSTOMER, Aggregate.MEAN, w),
    )


def _terminal(w: int) -> tuple[WindowFeature, WindowFeature]:
    d = LABEL_DELAY_DAYS
    return (
        WindowFeature(f"TERMINAL_ID_NB_TX_{w}DAY_WINDOW", Entity.TERMINAL, Aggregate.COUNT, w, d),
        WindowFeature(f"TERMINAL_ID_RISK_{w}DAY_WINDOW", Entity.TERMINAL, Aggregate.RISK, w, d),
    )


FEATURES: tuple[Feature, ...] = (
    EventFeature("TX_AMOUNT", _amount),
    EventFeature("TX_DURING_WEEKEND", _weekend, calendar=True),
    EventFeature("TX_DURING_NIGHT", _night, calendar=True),
    *(f for w in WINDOWS_DAYS for f in _customer(w)),
    *(f for w in WINDOWS_DAYS for f in _terminal(w)),
)

FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
EVENT_FEATURES: tuple[EventFeature, ...] = tuple(f for f in FEATURES if isinstance(f, EventFeature))
CALENDAR_FEATURES: frozenset[str] = frozenset(f.name for f in EVENT_FEATURES if f.calendar)


def window_features(entity: Entity) -> tuple[WindowFeature, ...]:
    """The window features over ``entity``, in ``FEATURES`` order."""
    return tuple(f for f in FEATURES if isinstance(f, WindowFeature) and f.entity is entity)


def horizon_s(entity: Entity) -> float:
    """The longest look-back (seconds) of any feature over ``entity``: the state to keep."""
    return max((f.horizon_s for f in window_features(entity)), default=0.0)


def event_features(amount: float, ts: float) -> dict[str, float]:
    """The event-only features of a transaction at ``ts`` (epoch seconds, read as UTC)."""
    tm = time.gmtime(ts)
    return {f.name: f.compute(amount, tm) for f in EVENT_FEATURES}


_EVENT_COMPUTE = tuple(f.compute for f in EVENT_FEATURES)


def event_feature_values(amount: float, ts: float) -> list[float]:
    """:func:`event_features` as a list in ``EVENT_FEATURES`` order (the hot path's form)."""
    tm = time.gmtime(ts)
    return [compute(amount, tm) for compute in _EVENT_COMPUTE]


ENTITY_ORDER_OK = (
    tuple(f.name for f in EVENT_FEATURES)
    + tuple(f.name for f in window_features(Entity.CUSTOMER))
    + tuple(f.name for f in window_features(Entity.TERMINAL))
) == FEATURE_NAMES
"""``FEATURES`` lists the event features, then the customer's, then the terminal's: a feature
row is the three lists concatenated (the stages build rows that way). Checked at import."""
if not ENTITY_ORDER_OK:  # pragma: no cover (a FEATURES edit that breaks the grouping)
    raise ImportError(
        "stream_app.features.definitions.FEATURES must list the event features first, then the "
        "customer window features, then the terminal ones"
    )
