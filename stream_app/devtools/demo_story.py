"""The story ``stream-app demo`` tells: a simulated world with an attack, and what the worker made
of it.

The world is the handbook simulator (:mod:`stream_app.sources.simulator`) run for ``history_days``
of warm-up plus ``live_days`` of live window, ending at today's UTC midnight, with more
compromised terminals and cards per day than the handbook's (an attack): the generator knows
which transactions are frauds and why (``LabelledTransaction.label`` and ``scenario``), and that
ground truth never goes to Kafka. Its records are the ones a live system would have seen
(:func:`stream_app.sources.schedule.schedule`): each payment at its event time, its label 7 days
later, labels not yet due withheld.

:func:`outcome` joins what the worker published for the live window (score envelopes, shadow
scores, drift records) with that ground truth: decisions by class, frauds caught and missed per
scenario, the precision of each decision, the challenger's agreement and the latest drift window.
Everything here is plain data; ``stream_app/cli/demo.py`` renders it.
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from stream_app.features.definitions import DAY_S, LABEL_DELAY_DAYS
from stream_app.sources.schedule import LabelledTransaction, Record, ScheduleStats, schedule
from stream_app.sources.simulator import (
    SCENARIO_NAMES,
    TransactionSimulator,
    handbook_customer_rate,
    handbook_terminal_rate,
)

DECISIONS = ("decline", "review", "approve")
TERMINAL_SCENARIO = 2
TERMINAL_WINDOW_DAYS = 30  # the longest terminal risk window (features/definitions.py)
KNOWN_TERMINAL = "compromised terminal, a fraud label already known"
UNKNOWN_TERMINAL = "compromised terminal, no fraud label known yet"


@dataclass(frozen=True)
class DemoWorld:
    """The simulated world of one demo run (everything the generator needs to redraw it)."""

    customers: int = 1000
    terminals: int = 2000
    history_days: int = 37
    live_days: int = 1
    seed: int = 2026
    terminal_attack: float = 10.0
    """Compromised terminals per day, as a multiple of the handbook's rate."""
    customer_attack: float = 5.0
    """Compromised customers (cards) per day, as a multiple of the handbook's rate."""

    @property
    def days(self) -> int:
        """Simulated days in all."""
        return self.history_days + self.live_days

    def start(self, today: datetime) -> datetime:
        """Midnight of the first simulated day: the run ends at ``today``'s UTC midnight."""
        midnight = today.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        return midnight - timedelta(days=self.days)

    def live_from(self, start: datetime) -> datetime:
        """The first instant of the live window."""
        return start + timedelta(days=self.history_days)

    def live_until(self, start: datetime) -> datetime:
        """The end of the live window (the last simulated day's end)."""
        return start + timedelta(days=self.days)

    def simulator(self, start: datetime) -> TransactionSimulator:
        """The generator of this world from ``start`` (same arguments, same events)."""
        return TransactionSimulator(
            n_customers=self.customers,
            n_terminals=self.terminals,
            start=start,
            days=self.days,
            seed=self.seed,
            compromised_terminals_per_day=self.terminal_attack
            * handbook_terminal_rate(self.terminals),
            compromised_customers_per_day=self.customer_attack
            * handbook_customer_rate(self.customers),
            id_prefix=f"demo{self.seed}-",
        )


@dataclass(frozen=True)
class Truth:
    """What the generator knows about one transaction (never published)."""

    label: int
    scenario: int
    terminal_id: str
    amount: float
    ts: float
    live: bool


@dataclass
class Plan:
    """The records to publish (warm-up, live window, then the labels that came due since) and the
    ground truth of every event."""

    start: datetime
    live_from: datetime
    history: list[Record]
    live: list[Record]
    since: list[Record]
    """Labels due between the live window's end and now: known, but no payment left to use them."""
    truth: dict[str, Truth]
    withheld_labels: int

    def count(self, records: Sequence[Record], topic: str) -> int:
        """Records of ``records`` on the declared ``topic``."""
        return sum(1 for record in records if record.topic == topic)

    @property
    def live_ids(self) -> list[str]:
        """Event ids of the live window's transactions."""
        return [event_id for event_id, truth in self.truth.items() if truth.live]


def plan(world: DemoWorld, now: datetime) -> Plan:
    """Draw the world and split its records at the live window; labels due after ``now`` are
    withheld (not known yet), as ``stream-app publish`` does."""
    start = world.start(now)
    live_from = world.live_from(start)
    truth: dict[str, Truth] = {}

    def remember(items: Iterable[LabelledTransaction]) -> Iterable[LabelledTransaction]:
        for item in items:
            ts = datetime.fromisoformat(item.event["event_time"])
            truth[item.event["event_id"]] = Truth(
                item.label,
                item.scenario,
                item.event["terminal_id"],
                float(item.event["amount"]),
                ts.timestamp(),
                ts >= live_from,
            )
            yield item

    stats = ScheduleStats()
    records = list(
        schedule(
            remember(world.simulator(start)),
            label_delay=timedelta(days=LABEL_DELAY_DAYS),
            labels_until=now,
            stats=stats,
        )
    )
    times = [record.time for record in records]
    cut = bisect.bisect_left(times, live_from)
    end = bisect.bisect_left(times, world.live_until(start))
    return Plan(
        start,
        live_from,
        records[:cut],
        records[cut:end],
        records[end:],
        truth,
        stats.withheld_labels,
    )


def terminal_fraud_known(truth: dict[str, Truth]) -> dict[str, bool]:
    """For each live compromised-terminal fraud: whether the worker could know the terminal was
    compromised, i.e. a fraud at that terminal has its label out (7 days old) and inside the
    longest terminal risk window when the payment is scored."""
    frauds: dict[str, list[float]] = defaultdict(list)
    for item in truth.values():
        if item.label:
            frauds[item.terminal_id].append(item.ts)
    for times in frauds.values():
        times.sort()
    delay = LABEL_DELAY_DAYS * DAY_S
    known: dict[str, bool] = {}
    for event_id, item in truth.items():
        if item.live and item.label and item.scenario == TERMINAL_SCENARIO:
            times = frauds[item.terminal_id]
            newest = bisect.bisect_right(times, item.ts - delay)
            oldest = bisect.bisect_right(times, item.ts - delay - TERMINAL_WINDOW_DAYS * DAY_S)
            known[event_id] = newest > oldest
    return known


def fraud_kind(event_id: str, item: Truth, known: dict[str, bool]) -> str:
    """The row of the caught/missed table a live fraud belongs to."""
    if item.scenario == TERMINAL_SCENARIO:
        return KNOWN_TERMINAL if known.get(event_id) else UNKNOWN_TERMINAL
    return SCENARIO_NAMES.get(item.scenario, f"scenario {item.scenario}")


@dataclass(frozen=True)
class ClassRow:
    """One decision class over the live window."""

    decision: str
    events: int
    frauds: int

    @property
    def precision(self) -> float | None:
        """Share of frauds among the class's events (None when the class is empty)."""
        return self.frauds / self.events if self.events else None


@dataclass
class KindRow:
    """Live frauds of one kind and what the champion decided for them."""

    kind: str
    declined: int = 0
    reviewed: int = 0
    approved: int = 0

    @property
    def injected(self) -> int:
        """Frauds of this kind in the live window."""
        return self.declined + self.reviewed + self.approved


@dataclass(frozen=True)
class Agreement:
    """The challenger's decisions beside the champion's, over the live events it shadowed."""

    version: str | None
    shadowed: int
    agreed: int
    champion_only_flags: int
    challenger_only_flags: int
    frauds: int
    """Live frauds among the shadowed payments."""
    challenger_caught: int
    """Of those, the ones the challenger would have declined or reviewed."""
    champion_caught: int
    """Of those, the ones the champion declined or reviewed."""

    @property
    def share(self) -> float | None:
        """Share of equal decisions (None when nothing was shadowed)."""
        return self.agreed / self.shadowed if self.shadowed else None


@dataclass(frozen=True)
class DriftRow:
    """One subject of the latest drift window: PSI and KS, and whether either alerts."""

    subject: str
    psi: float | None
    ks: float | None
    alert: bool


@dataclass
class Outcome:
    """What the worker made of the live window, joined with the ground truth."""

    live_events: int
    scored: int
    classes: list[ClassRow]
    kinds: list[KindRow]
    top: list[dict[str, Any]]
    agreement: Agreement
    drift: list[DriftRow]
    drift_window: dict[str, Any] | None
    detector: dict[str, Any] | None
    latency_ms: dict[str, float] = field(default_factory=dict)

    @property
    def frauds(self) -> int:
        """Injected frauds in the live window."""
        return sum(row.injected for row in self.kinds)

    @property
    def declined(self) -> int:
        """Live frauds the champion declined."""
        return sum(row.declined for row in self.kinds)

    @property
    def reviewed(self) -> int:
        """Live frauds the champion sent to review."""
        return sum(row.reviewed for row in self.kinds)

    @property
    def caught(self) -> int:
        """Live frauds the champion declined or sent to review."""
        return self.declined + self.reviewed

    @property
    def missed(self) -> int:
        """Live frauds the champion approved."""
        return sum(row.approved for row in self.kinds)

    def precision(self, decision: str) -> float | None:
        """Share of frauds among the live events given ``decision``."""
        return next(row.precision for row in self.classes if row.decision == decision)

    def as_json(self, plan_: Plan, world: DemoWorld, envelopes: dict[str, Any]) -> dict[str, Any]:
        """The figures, plus every live fraud and every flagged live event with its truth (for
        the test to check against a redrawn world)."""
        events = [
            {
                "event_id": event_id,
                "score": envelope["score"],
                "decision": envelope["decision"],
                "label": plan_.truth[event_id].label,
                "scenario": plan_.truth[event_id].scenario,
            }
            for event_id, envelope in envelopes.items()
            if plan_.truth[event_id].label or envelope["decision"] != "approve"
        ]
        return {
            "world": {**world.__dict__, "start": plan_.start.isoformat()},
            "live_from": plan_.live_from.isoformat(),
            "live_events": self.live_events,
            "scored": self.scored,
            "frauds": self.frauds,
            "caught": self.caught,
            "missed": self.missed,
            "decisions": {row.decision: row.events for row in self.classes},
            "precision": {row.decision: row.precision for row in self.classes},
            "kinds": [{**row.__dict__, "injected": row.injected} for row in self.kinds],
            "agreement": {**self.agreement.__dict__, "share": self.agreement.share},
            "drift_alerts": [row.subject for row in self.drift if row.alert],
            "latency_ms": self.latency_ms,
            "events": events,
        }


def _flagged(decision: str) -> bool:
    return decision != "approve"


def decision_classes(envelopes: dict[str, Any], truth: dict[str, Truth]) -> list[ClassRow]:
    """Events and frauds per decision class."""
    events: Counter[str] = Counter()
    frauds: Counter[str] = Counter()
    for event_id, envelope in envelopes.items():
        events[envelope["decision"]] += 1
        frauds[envelope["decision"]] += truth[event_id].label
    return [ClassRow(d, events[d], frauds[d]) for d in DECISIONS]


def fraud_kinds(envelopes: dict[str, Any], truth: dict[str, Truth]) -> list[KindRow]:
    """Live frauds per kind, by the champion's decision (kinds in the generator's order)."""
    known = terminal_fraud_known(truth)
    order = [SCENARIO_NAMES[1], KNOWN_TERMINAL, UNKNOWN_TERMINAL, SCENARIO_NAMES[3]]
    rows = {kind: KindRow(kind) for kind in order}
    for event_id, envelope in envelopes.items():
        item = truth[event_id]
        if not item.label:
            continue
        kind = fraud_kind(event_id, item, known)
        row = rows.setdefault(kind, KindRow(kind))
        decision = envelope["decision"]
        if decision == "decline":
            row.declined += 1
        elif decision == "review":
            row.reviewed += 1
        else:
            row.approved += 1
    return [row for row in rows.values() if row.injected]


def agreement(shadows: dict[str, Any], truth: dict[str, Truth]) -> Agreement:
    """The challenger against the champion over the shadowed live events."""
    agreed = champion_only = challenger_only = frauds = caught = champion_caught = 0
    version: str | None = None
    for event_id, shadow in shadows.items():
        challenger = shadow["challenger"]
        version = challenger["model_version"]
        agreed += bool(shadow["agree"])
        champion_flags = _flagged(shadow["champion_decision"])
        challenger_flags = _flagged(challenger["decision"])
        champion_only += champion_flags and not challenger_flags
        challenger_only += challenger_flags and not champion_flags
        fraud = truth[event_id].label == 1
        frauds += fraud
        caught += challenger_flags and fraud
        champion_caught += champion_flags and fraud
    return Agreement(
        version,
        len(shadows),
        agreed,
        champion_only,
        challenger_only,
        frauds,
        caught,
        champion_caught,
    )


def latest_drift(
    records: Sequence[dict[str, Any]], version: str
) -> tuple[list[DriftRow], dict[str, Any] | None, dict[str, Any] | None]:
    """The champion's latest closed drift window: PSI/KS per subject (alerting first), the window
    and the change detector's record for it."""
    mine = [r for r in records if r["model_version"] == version and r["statistic"] in ("psi", "ks")]
    if not mine:
        return [], None, None
    end = max(r["window"]["end"] for r in mine)
    window = next(r["window"] for r in mine if r["window"]["end"] == end)
    subjects: dict[str, dict[str, Any]] = defaultdict(dict)
    for record in mine:
        if record["window"]["end"] == end:
            subjects[record["subject"]][record["statistic"]] = record
    rows = [
        DriftRow(
            subject,
            stats["psi"]["value"] if "psi" in stats else None,
            stats["ks"]["value"] if "ks" in stats else None,
            any(s["alert"] for s in stats.values()),
        )
        for subject, stats in subjects.items()
    ]
    rows.sort(key=lambda row: (not row.alert, row.subject != "score", row.subject))
    detectors = [
        r
        for r in records
        if r["model_version"] == version
        and r["statistic"] not in ("psi", "ks")
        and r["window"]["end"] == end
    ]
    return rows, window, (detectors[-1] if detectors else None)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by rank (0.0 when empty)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else 0.0


def outcome(
    plan_: Plan,
    envelopes: dict[str, Any],
    shadows: dict[str, Any],
    drift_records: Sequence[dict[str, Any]],
    champion: str,
    show: int = 3,
) -> Outcome:
    """Join the live window's envelopes (by event id), shadow scores and the drift records with
    the ground truth."""
    live_ids = plan_.live_ids
    rows, window, detector = latest_drift(drift_records, champion)
    latencies = [float(e["latency_ms"]) for e in envelopes.values()]
    return Outcome(
        live_events=len(live_ids),
        scored=len(envelopes),
        classes=decision_classes(envelopes, plan_.truth),
        kinds=fraud_kinds(envelopes, plan_.truth),
        top=sorted(envelopes.values(), key=lambda e: -e["score"])[:show],
        agreement=agreement(shadows, plan_.truth),
        drift=rows,
        drift_window=window,
        detector=detector,
        latency_ms={"p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99)},
    )
