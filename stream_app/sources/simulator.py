"""A seeded transaction simulator after the fraud handbook's (Le Borgne et al.).

The population, as in the handbook's simulation:

- customers: a location on a 100 x 100 grid, a mean amount ~ U(5, 100), a standard deviation of
  half of it, and a mean number of transactions per day ~ U(0, 4);
- terminals: a location on the same grid; a customer pays only at terminals within ``radius``
  (5 in the handbook for 10,000 terminals; scaled here so a customer keeps about as many
  terminals, ~78, whatever ``n_terminals``). Customers with no terminal in reach never pay.

Each day, for each customer: a Poisson number of transactions; a time of day ~ N(noon, 20,000 s),
draws outside the day dropped; an amount ~ N(mean, std), a negative draw replaced by
U(0, 2 mean), rounded to cents; a terminal drawn uniformly among the customer's.

Fraud, applied in this order (a later scenario overrides the label's scenario):

1. every transaction with an amount above 220 is fraud;
2. each day a few terminals (2 per 10,000) are compromised: all their transactions of that day and
   the next 27 are fraud;
3. each day a few customers (3 per 5,000) are compromised: over that day and the next 13, each of
   their transactions is, with probability 1/3, fraud with 5x its amount. (The handbook picks
   exactly a third of the 14 days' transactions afterwards; a stream cannot look ahead, so each
   transaction draws for itself.)

With the defaults the fraud rate settles near the handbook's (0.8 - 0.9 %) after the first month,
when the compromised entities have piled up.

Everything is vectorized per day with one seeded ``numpy.random.Generator``: the same parameters
give the same events, and a shorter run is a prefix of a longer one with the same ``start``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np

from stream_app.sources.schedule import LabelledTransaction, rfc3339_utc

DAY_SECONDS = 86_400
GRID = 100.0
HANDBOOK_TERMINALS = 10_000
HANDBOOK_CUSTOMERS = 5_000
HANDBOOK_RADIUS = 5.0
FRAUD_AMOUNT = 220.0
TERMINAL_COMPROMISE_DAYS = 28
CUSTOMER_COMPROMISE_DAYS = 14
CUSTOMER_FRAUD_SHARE = 1.0 / 3.0
CUSTOMER_FRAUD_FACTOR = 5.0
TIME_MEAN_S = DAY_SECONDS / 2
TIME_STD_S = 20_000.0
TERMINALS_COMPROMISED_PER_DAY = 2.0  # per HANDBOOK_TERMINALS terminals
CUSTOMERS_COMPROMISED_PER_DAY = 3.0  # per HANDBOOK_CUSTOMERS customers
SCENARIO_NAMES = {
    0: "genuine",
    1: "amount over 220",
    2: "compromised terminal",
    3: "compromised card (5x amount)",
}
"""What each ``LabelledTransaction.scenario`` value stands for."""
# Probability that a time-of-day draw falls inside the day (the rest is dropped).
_P_IN_DAY = math.erf(TIME_MEAN_S / (TIME_STD_S * math.sqrt(2.0)))


def default_radius(n_terminals: int) -> float:
    """The handbook's radius (5 for 10,000 terminals), scaled to keep ~78 terminals in reach."""
    return min(HANDBOOK_RADIUS * math.sqrt(HANDBOOK_TERMINALS / n_terminals), GRID * math.sqrt(2))


def handbook_terminal_rate(n_terminals: int) -> float:
    """Terminals compromised per day in the handbook, scaled to ``n_terminals`` (2 per 10,000)."""
    return TERMINALS_COMPROMISED_PER_DAY * n_terminals / HANDBOOK_TERMINALS


def handbook_customer_rate(n_customers: int) -> float:
    """Customers compromised per day in the handbook, scaled to ``n_customers`` (3 per 5,000)."""
    return CUSTOMERS_COMPROMISED_PER_DAY * n_customers / HANDBOOK_CUSTOMERS


def _terminals_in_reach(
    customer_xy: np.ndarray, terminal_xy: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """CSR (indptr, indices) of the terminals within ``radius`` of each customer."""
    n_customers, n_terminals = len(customer_xy), len(terminal_xy)
    block = max(1, 2_000_000 // max(n_terminals, 1))
    r2 = radius * radius
    counts = np.zeros(n_customers, dtype=np.int64)
    parts: list[np.ndarray] = []
    for lo in range(0, n_customers, block):
        hi = min(lo + block, n_customers)
        dx = customer_xy[lo:hi, 0, None] - terminal_xy[None, :, 0]
        dy = customer_xy[lo:hi, 1, None] - terminal_xy[None, :, 1]
        rows, cols = np.nonzero(dx * dx + dy * dy < r2)
        counts[lo:hi] = np.bincount(rows, minlength=hi - lo)
        parts.append(cols)
    indptr = np.zeros(n_customers + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    indices = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return indptr, indices


def _utc_midnight_today() -> datetime:
    now = datetime.now(UTC)
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


class TransactionSimulator:
    """A simulated population of customers and terminals, and its transactions day by day.

    ``start`` (aware) is the midnight of the first simulated day; by default the UTC midnight
    ``span_days`` before today's, so the run ends by today's midnight and the events look recent
    (and never lie in the future). The run stops after ``days`` days or ``n_events`` events,
    whichever comes first (at least one of them is required); ``span_days`` is ``days`` or, for
    ``n_events`` alone, an estimate from the population's expected daily volume.
    """

    def __init__(
        self,
        *,
        n_customers: int = HANDBOOK_CUSTOMERS,
        n_terminals: int = HANDBOOK_TERMINALS,
        start: datetime | None = None,
        days: int | None = None,
        n_events: int | None = None,
        seed: int = 0,
        radius: float | None = None,
        compromised_terminals_per_day: float | None = None,
        compromised_customers_per_day: float | None = None,
        id_prefix: str | None = None,
    ) -> None:
        """Draw the population; no transaction is drawn until iteration."""
        if n_customers < 1 or n_terminals < 1:
            raise ValueError("n_customers and n_terminals must be at least 1")
        if days is None and n_events is None:
            raise ValueError("give days, n_events or both")
        if days is not None and days < 1:
            raise ValueError(f"days must be at least 1, got {days}")
        if n_events is not None and n_events < 0:
            raise ValueError(f"n_events must not be negative, got {n_events}")
        if start is not None and start.tzinfo is None:
            raise ValueError("start must be timezone-aware (e.g. datetime(..., tzinfo=UTC))")
        self.n_customers = n_customers
        self.n_terminals = n_terminals
        self.days = days
        self.n_events = n_events
        self.seed = seed
        self.radius = default_radius(n_terminals) if radius is None else float(radius)
        self.compromised_terminals_per_day = (
            handbook_terminal_rate(n_terminals)
            if compromised_terminals_per_day is None
            else float(compromised_terminals_per_day)
        )
        self.compromised_customers_per_day = (
            handbook_customer_rate(n_customers)
            if compromised_customers_per_day is None
            else float(compromised_customers_per_day)
        )
        self.id_prefix = f"sim{seed}-" if id_prefix is None else id_prefix

        self._rng = np.random.default_rng(seed)
        rng = self._rng
        self.customer_xy = rng.uniform(0.0, GRID, size=(n_customers, 2))
        self.mean_amount = rng.uniform(5.0, 100.0, size=n_customers)
        self.std_amount = self.mean_amount / 2.0
        self.mean_tx_per_day = rng.uniform(0.0, 4.0, size=n_customers)
        self.terminal_xy = rng.uniform(0.0, GRID, size=(n_terminals, 2))
        self.indptr, self.indices = _terminals_in_reach(
            self.customer_xy, self.terminal_xy, self.radius
        )
        self.n_reachable = np.diff(self.indptr)
        self._active = self.n_reachable > 0
        if not self._active.any():
            raise ValueError(
                f"no customer has a terminal within radius {self.radius}: raise radius or "
                "n_terminals"
            )
        self.expected_per_day = _P_IN_DAY * float(self.mean_tx_per_day[self._active].sum())

        if days is not None:
            self.span_days = days
        else:
            assert n_events is not None
            self.span_days = max(1, math.ceil(1.01 * n_events / self.expected_per_day))
        if start is None:
            start = _utc_midnight_today() - timedelta(days=self.span_days)
        self.start = start.astimezone(UTC)
        self._start_epoch = math.floor(self.start.timestamp())
        self._started = False

    def __iter__(self) -> Iterator[LabelledTransaction]:
        """The transactions in event-time order (a simulator is iterated once)."""
        if self._started:
            raise RuntimeError("a TransactionSimulator is iterated once; build a new one")
        self._started = True
        return self._run()

    def _run(self) -> Iterator[LabelledTransaction]:
        rng = self._rng
        customer_ids = [str(i) for i in range(self.n_customers)]
        terminal_ids = [str(i) for i in range(self.n_terminals)]
        terminal_until = np.full(self.n_terminals, -1, dtype=np.int64)
        customer_until = np.full(self.n_customers, -1, dtype=np.int64)
        rate_t, rate_c = self.compromised_terminals_per_day, self.compromised_customers_per_day
        limit = self.n_events
        emitted = 0
        day = 0
        prefix = self.id_prefix
        while (self.days is None or day < self.days) and (limit is None or emitted < limit):
            # Newly compromised entities (exact long-run rate, whole numbers per day).
            n_t = min(math.floor((day + 1) * rate_t) - math.floor(day * rate_t), self.n_terminals)
            n_c = min(math.floor((day + 1) * rate_c) - math.floor(day * rate_c), self.n_customers)
            new_t = rng.choice(self.n_terminals, size=n_t, replace=False)
            terminal_until[new_t] = day + TERMINAL_COMPROMISE_DAYS
            new_c = rng.choice(self.n_customers, size=n_c, replace=False)
            customer_until[new_c] = day + CUSTOMER_COMPROMISE_DAYS

            counts = rng.poisson(self.mean_tx_per_day)
            counts[~self._active] = 0
            cust = np.repeat(np.arange(self.n_customers), counts)
            m = len(cust)
            secs = rng.normal(TIME_MEAN_S, TIME_STD_S, size=m)
            mean = self.mean_amount[cust]
            amount = rng.normal(mean, self.std_amount[cust])
            negative = amount < 0
            amount[negative] = rng.uniform(0.0, 2.0 * mean[negative])
            pick = (rng.random(m) * self.n_reachable[cust]).astype(np.int64)
            term = self.indices[self.indptr[cust] + pick]
            coin = rng.random(m)

            keep = (secs > 0) & (secs < DAY_SECONDS)
            secs = secs[keep].astype(np.int64)
            order = np.argsort(secs, kind="stable")
            secs, cust, term = secs[order], cust[keep][order], term[keep][order]
            amount = np.round(amount[keep][order], 2)
            coin = coin[keep][order]

            scenario = np.where(amount > FRAUD_AMOUNT, 1, 0)
            scenario[terminal_until[term] > day] = 2
            hit = (customer_until[cust] > day) & (coin < CUSTOMER_FRAUD_SHARE)
            scenario[hit] = 3
            amount[hit] = np.round(amount[hit] * CUSTOMER_FRAUD_FACTOR, 2)
            label = (scenario > 0).astype(np.int64)

            if limit is not None:
                take = min(len(secs), limit - emitted)
                secs, cust, term = secs[:take], cust[:take], term[:take]
                amount, scenario, label = amount[:take], scenario[:take], label[:take]
            times = rfc3339_utc(self._start_epoch + day * DAY_SECONDS + secs)
            for n, (t, c, k, a, y, s) in enumerate(
                zip(
                    times,
                    cust.tolist(),
                    term.tolist(),
                    amount.tolist(),
                    label.tolist(),
                    scenario.tolist(),
                    strict=True,
                ),
                start=emitted,
            ):
                yield LabelledTransaction(
                    {
                        "event_id": f"{prefix}{n}",
                        "event_time": t,
                        "customer_id": customer_ids[c],
                        "terminal_id": terminal_ids[k],
                        "amount": a,
                        "schema_version": 1,
                    },
                    y,
                    s,
                )
            emitted += len(times)
            day += 1


def simulate(
    *,
    n_customers: int = HANDBOOK_CUSTOMERS,
    n_terminals: int = HANDBOOK_TERMINALS,
    start: datetime | None = None,
    days: int | None = None,
    n_events: int | None = None,
    seed: int = 0,
) -> Iterator[LabelledTransaction]:
    """Simulated transactions in event-time order (see :class:`TransactionSimulator`)."""
    return iter(
        TransactionSimulator(
            n_customers=n_customers,
            n_terminals=n_terminals,
            start=start,
            days=days,
            n_events=n_events,
            seed=seed,
        )
    )
