"""``stream-app demo``: the whole system end to end on this machine, in one command, as a story:
weeks of payments warm the worker's state, then a live day in which an attacker's frauds (known
to the generator, never to the worker) are caught or missed, and the summary says which and why.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from stream_app.devtools.demo_story import DemoWorld, Outcome, Plan, Truth
from stream_app.io.security import librdkafka_config

if TYPE_CHECKING:
    from confluent_kafka import Consumer
    from rich.console import Console

    from stream_app.config import Settings
    from stream_app.devtools.worker_process import WorkerProcess

# The models the demo trains when the registry has none of its own: `stream-app train`'s defaults.
TRAIN_SEED = 7
TRAIN_CUSTOMERS = 1000
TRAIN_TERMINALS = 2000
CHAMPION_TYPE = "logreg"
CHALLENGER_TYPE = "hgb"
TICKER_LINES = 12  # flagged live payments printed as they are scored
WAIT_S = 180.0  # longest wait for the worker to score what was published
WORLD = DemoWorld()  # the default world


def delete_run_topics(settings: Any) -> int:
    """Delete the topics of one demo run (its prefix and its app's internal topics)."""
    from stream_app.io.topics import make_admin

    admin = make_admin(settings)
    names = [
        name
        for name in admin.list_topics(timeout=10).topics
        if name.startswith((settings.topic_prefix, f"{settings.app_id}-"))
    ]
    for future in admin.delete_topics(names, operation_timeout=30).values() if names else []:
        future.result()
    return len(names)


def use_running_broker(settings: Any) -> bool:
    """True when KAFKA_BOOTSTRAP_SERVERS is a local address on which a Kafka broker already
    answers that `stream-app broker` did not start (another broker home, a test session's, a
    container's): the demo then uses it instead of failing to start its own on a taken port."""
    import logging

    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    from stream_app.broker import local_port, port_in_use
    from stream_app.cli.broker import _broker

    port = local_port(settings.kafka_bootstrap_servers)
    if port is None or not port_in_use(port) or _broker(settings).status().running:
        return False
    admin = AdminClient(
        {**librdkafka_config(settings), "socket.connection.setup.timeout.ms": 2000},
        logger=logging.getLogger("stream_app.demo.probe"),
    )
    try:
        return bool(admin.list_topics(timeout=5.0).brokers)
    except KafkaException:
        return False


# --- models ------------------------------------------------------------------------------------


def training_tag() -> str:
    """The training-data tag `stream-app train` writes with its defaults (the demo's models)."""
    from stream_app.cli.train import HISTORY_DAYS, PROTOCOL_DAYS

    days = HISTORY_DAYS + PROTOCOL_DAYS
    return (
        f"synthetic:seed={TRAIN_SEED},customers={TRAIN_CUSTOMERS},"
        f"terminals={TRAIN_TERMINALS},days={days}"
    )


def find_version(models_dir: Path, model_type: str, tag: str) -> str | None:
    """The newest version of ``model_type`` trained on data ``tag`` in the registry."""
    from stream_app.exceptions import StreamAppError
    from stream_app.scoring.registry import list_versions, read_manifest

    found = None
    for version in list_versions(models_dir):
        try:
            manifest = read_manifest(models_dir / version)
        except StreamAppError:
            continue
        if manifest.model_type == model_type and manifest.training_data_tag == tag:
            found = version
    return found


def train_pair(models_dir: Path, console: Console) -> tuple[str, str]:
    """Train the challenger, then the champion (so the newest version stays the champion), on
    what `stream-app train` simulates by default; returns (champion, challenger)."""
    from stream_app.cli.train import HISTORY_DAYS, PROTOCOL_DAYS
    from stream_app.sources.schedule import batch_from_events
    from stream_app.sources.simulator import simulate
    from stream_app.training import train

    sim_start = datetime(2026, 1, 1, tzinfo=UTC)
    with console.status("Simulating the training data…"):
        batch = batch_from_events(
            simulate(
                n_customers=TRAIN_CUSTOMERS,
                n_terminals=TRAIN_TERMINALS,
                start=sim_start,
                days=HISTORY_DAYS + PROTOCOL_DAYS,
                seed=TRAIN_SEED,
            )
        )
    versions: dict[str, str] = {}
    for model_type in (CHALLENGER_TYPE, CHAMPION_TYPE):
        with console.status(f"Training {model_type}…"):
            result = train(
                batch,
                model_type=model_type,  # type: ignore[arg-type]
                train_start=sim_start + timedelta(days=HISTORY_DAYS),
                models_dir=models_dir,
                data_tag=training_tag(),
                seed=TRAIN_SEED,
            )
        metrics = result.metrics
        console.print(
            f"trained {result.version}: AUC ROC {metrics['auc_roc']:.3f}, "
            f"AP {metrics['average_precision']:.3f} on its test week"
        )
        versions[model_type] = result.version
    return versions[CHAMPION_TYPE], versions[CHALLENGER_TYPE]


def demo_models(models_dir: Path, console: Console) -> tuple[str, str]:
    """(champion, challenger): the registry's pair trained on the generator, or a new pair."""
    tag = training_tag()
    champion = find_version(models_dir, CHAMPION_TYPE, tag)
    challenger = find_version(models_dir, CHALLENGER_TYPE, tag)
    if champion is None or challenger is None or challenger > champion:
        champion, challenger = train_pair(models_dir, console)
    else:
        console.print(f"reusing the registry's models trained on the generator ({models_dir})")
    return champion, challenger


def print_models(console: Console, models_dir: Path, champion: str, challenger: str) -> None:
    """Each model's role, type and decision thresholds."""
    from stream_app.scoring.registry import read_manifest

    table = Table("role", "version", "review if score ≥", "decline if score ≥", title="Models")
    for role, version in (("champion", champion), ("challenger (shadow)", challenger)):
        thresholds = read_manifest(models_dir / version).thresholds
        table.add_row(role, version, f"{thresholds['review']:.4f}", f"{thresholds['decline']:.4f}")
    console.print(table)


# --- the world ---------------------------------------------------------------------------------


def print_world(console: Console, world: DemoWorld, plan: Plan) -> None:
    """What will be published, and what the generator injected into the live window."""
    from stream_app.devtools.demo_story import fraud_kind, terminal_fraud_known
    from stream_app.sources.schedule import LABELS, TRANSACTIONS

    known = terminal_fraud_known(plan.truth)
    kinds: dict[str, int] = {}
    for event_id, item in plan.truth.items():
        if item.live and item.label:
            kind = fraud_kind(event_id, item, known)
            kinds[kind] = kinds.get(kind, 0) + 1
    console.print(
        f"{world.customers:,} customers, {world.terminals:,} terminals; an attacker compromises "
        f"{world.terminal_attack:g}x the handbook's terminals and {world.customer_attack:g}x its "
        f"cards per day (seed {world.seed})"
    )
    table = Table("", "from", "to", "payments", "labels (7 days later)", title="Published")
    for name, records, first, last in (
        ("warm-up", plan.history, plan.start, plan.live_from),
        (
            "live window",
            plan.live,
            plan.live_from,
            plan.live_from + timedelta(days=world.live_days),
        ),
    ):
        table.add_row(
            name,
            f"{first:%Y-%m-%d %H:%M}",
            f"{last:%Y-%m-%d %H:%M}",
            f"{plan.count(records, TRANSACTIONS):,}",
            f"{plan.count(records, LABELS):,}",
        )
    console.print(table)
    injected = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items(), key=lambda kv: -kv[1]))
    console.print(
        f"the generator injected {sum(kinds.values())} frauds into the live window ({injected}); "
        f"the worker never sees that ground truth. {plan.withheld_labels:,} labels are withheld: "
        "their payments are less than 7 days old."
    )


# --- reading what the worker published ----------------------------------------------------------


class Collector:
    """Reads `scores`, `scores.shadow` and `drift` of the run and keeps what the summary needs."""

    def __init__(self, settings: Settings, truth: dict[str, Truth]) -> None:
        from confluent_kafka import Consumer

        self.settings = settings
        self.truth = truth
        self.topics = {name: settings.topic(name) for name in ("scores", "scores.shadow", "drift")}
        self.consumer: Consumer = Consumer(
            {
                **librdkafka_config(settings),
                "group.id": f"{settings.app_id}-summary",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        self.consumer.subscribe(list(self.topics.values()))
        self.scored = 0
        self.shadowed = 0
        self.live: dict[str, Any] = {}
        self.shadows: dict[str, Any] = {}
        self.drift: list[dict[str, Any]] = []

    def poll(self, timeout: float = 0.5) -> list[dict[str, Any]]:
        """Read what has arrived; returns the new live envelopes."""
        import orjson

        fresh: list[dict[str, Any]] = []
        for message in self.consumer.consume(1000, timeout=timeout):
            value = message.value()
            if message.error() is not None or value is None:
                continue
            record = orjson.loads(value)
            topic = message.topic()
            if topic == self.topics["drift"]:
                self.drift.append(record)
            elif topic == self.topics["scores.shadow"]:
                event_id = record["challenger"]["event_id"]
                self.shadowed += 1
                if self.truth[event_id].live:
                    self.shadows[event_id] = record
            else:
                self.scored += 1
                if self.truth[record["event_id"]].live:
                    self.live[record["event_id"]] = record
                    fresh.append(record)
        return fresh

    def close(self) -> None:
        """Leave the group."""
        self.consumer.close()


def warm_up(
    console: Console, settings: Settings, plan: Plan, collector: Collector
) -> tuple[float, float]:
    """Publish the warm-up as fast as possible and wait until the worker scored all of it;
    returns (seconds, events/s)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from stream_app.sources.producer import publish_records
    from stream_app.sources.schedule import TRANSACTIONS

    payments = plan.count(plan.history, TRANSACTIONS)
    started = time.monotonic()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        sent = progress.add_task("published", total=len(plan.history))
        publish_records(settings, plan.history, on_progress=lambda n: progress.advance(sent, n))
        task = progress.add_task("scored", total=payments)
        deadline = time.monotonic() + WAIT_S
        while collector.scored < payments and time.monotonic() < deadline:
            collector.poll()
            progress.update(task, completed=collector.scored)
    seconds = time.monotonic() - started
    if collector.scored < payments:
        raise WorkerTooSlow(f"{collector.scored:,} of {payments:,} warm-up payments scored")
    return seconds, payments / seconds


def drain_shadow(
    collector: Collector, metrics_url: str, payments: int, wait_s: float = 30.0
) -> int:
    """Wait until the challenger (a lower-priority process that skips batches while behind) has
    shadowed or skipped ``payments`` (after the warm-up: so the live window is shadowed as it
    arrives); returns the payments it skipped so far (from the worker's metrics)."""
    from stream_app.operations.top import scrape, total

    deadline = time.monotonic() + wait_s
    skipped = 0.0
    while time.monotonic() < deadline:
        try:
            samples = scrape(metrics_url)
        except OSError:  # no metrics (web server off or not up): the shadow is not waited for
            break
        skipped = total(samples, "stream_app_shadow_total", outcome="skipped")
        if total(samples, "stream_app_shadow_total") >= payments:
            break
        collector.poll(0.5)
    collector.poll(1.0)  # the records of the last batch counted
    return int(skipped)


class WorkerTooSlow(RuntimeError):
    """The worker did not score what was published within WAIT_S."""


def ticker_line(envelope: dict[str, Any], truth: Truth) -> str:
    """One flagged live payment as it is scored, with the generator's truth beside it."""
    from stream_app.sources.simulator import SCENARIO_NAMES

    verdict = (
        f"[red]fraud: {SCENARIO_NAMES[truth.scenario]}[/]"
        if truth.label
        else "[yellow]genuine: a false alarm[/]"
    )
    return (
        f"{envelope['event_time'][:16]}  {envelope['decision']:<7}  {envelope['score']:.4f}  "
        f"{truth.amount:>7.2f} at terminal {envelope['terminal_id']:<4}  {verdict}"
    )


def live_window(
    console: Console, settings: Settings, plan: Plan, collector: Collector, rate: float
) -> float:
    """Publish the live window at ``rate`` payments/s while printing the flagged payments as they
    are scored; returns its seconds."""
    from stream_app.sources.producer import publish_records

    errors: list[BaseException] = []

    def publish() -> None:
        try:
            publish_records(settings, plan.live, rate=rate)
            publish_records(settings, plan.since)
        except BaseException as exc:  # reported below
            errors.append(exc)

    started = time.monotonic()
    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    printed = 0
    expected = len(plan.live_ids)
    deadline = time.monotonic() + WAIT_S + len(plan.live) / max(rate, 1.0)
    while len(collector.live) < expected and time.monotonic() < deadline:
        for envelope in collector.poll():
            if envelope["decision"] != "approve" and printed < TICKER_LINES:
                console.print(ticker_line(envelope, plan.truth[envelope["event_id"]]))
                printed += 1
    publisher.join(timeout=5)
    if errors:
        raise errors[0]
    flagged = sum(1 for e in collector.live.values() if e["decision"] != "approve")
    if flagged > printed:
        console.print(f"… and {flagged - printed} more flagged (summary below)")
    if len(collector.live) < expected:
        raise WorkerTooSlow(f"{len(collector.live):,} of {expected:,} live payments scored")
    return time.monotonic() - started


# --- the summary -------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def decisions_table(result: Outcome) -> Table:
    """Live payments per decision class, with the frauds among them."""
    table = Table("decision", "payments", "frauds", "precision", title="Decisions (live window)")
    for row in result.classes:
        table.add_row(row.decision, f"{row.events:,}", f"{row.frauds:,}", _pct(row.precision))
    return table


def frauds_table(result: Outcome) -> Table:
    """Injected frauds per kind: declined, reviewed, missed."""
    table = Table(
        "injected fraud", "in window", "declined", "review", "missed", title="Frauds caught"
    )
    for row in result.kinds:
        table.add_row(
            row.kind, str(row.injected), str(row.declined), str(row.reviewed), str(row.approved)
        )
    table.add_row(
        "all",
        str(result.frauds),
        str(result.declined),
        str(result.reviewed),
        str(result.missed),
        style="bold",
    )
    return table


def top_table(result: Outcome, truth: dict[str, Truth]) -> Table:
    """The highest-scored live payments with their explanations and their truth."""
    from stream_app.sources.simulator import SCENARIO_NAMES

    table = Table(
        "event_id",
        "amount",
        "score",
        "decision",
        "why (contribution to the logit)",
        "truth",
        title=f"Highest {len(result.top)} scores",
    )
    for envelope in result.top:
        explanation = envelope["explanation"]
        truth_ = truth[envelope["event_id"]]
        reasons = "\n".join(
            f"{c['feature']} = {c['value']:.4g}: {c['contribution']:+.2f}"
            for c in explanation["contributions"]
        )
        table.add_row(
            envelope["event_id"],
            f"{truth_.amount:.2f}",
            f"{envelope['score']:.4f}",
            envelope["decision"],
            f"{reasons}\n({explanation['method']})",
            SCENARIO_NAMES[truth_.scenario] if truth_.label else "genuine",
        )
    return table


def drift_table(result: Outcome) -> Table:
    """The champion's latest closed drift window: PSI and KS per feature, alerts first."""
    window = result.drift_window
    title = "Drift: no window closed yet"
    if window is not None:
        title = (
            f"Drift of the champion's inputs, window {window['start'][:16]} .. "
            f"{window['end'][:16]} ({window['events']:,} payments)"
        )
    table = Table("subject", "PSI", "KS", "alert", title=title)
    for row in result.drift:
        table.add_row(
            row.subject,
            "-" if row.psi is None else f"{row.psi:.3f}",
            "-" if row.ks is None else f"{row.ks:.3f}",
            "ALERT" if row.alert else "",
        )
    return table


def headline(result: Outcome) -> str:
    """Caught, missed and the precision of the declines, in one line."""
    declines = next(row for row in result.classes if row.decision == "decline")
    return (
        f"[bold]{result.caught} of {result.frauds} injected frauds caught[/] "
        f"({result.declined} declined, {result.reviewed} sent to review), "
        f"{result.missed} missed · "
        f"precision of the declines {_pct(declines.precision)} ({declines.frauds} of "
        f"{declines.events}), of the reviews {_pct(result.precision('review'))}"
    )


def agreement_line(result: Outcome) -> str:
    """The challenger's agreement with the champion."""
    a = result.agreement
    if not a.shadowed:
        return "challenger: no shadow score arrived for the live window"
    return (
        f"challenger {a.version} agreed with the champion on {_pct(a.share)} of the "
        f"{a.shadowed:,} live payments it shadowed (of {result.live_events:,}); it flagged "
        f"{a.challenger_only_flags} the champion approved and approved "
        f"{a.champion_only_flags} the champion flagged; of the "
        f"{a.frauds} frauds among them it would have caught {a.challenger_caught} "
        f"(the champion {a.champion_caught})"
    )


def try_next() -> list[str]:
    """Commands to run after the demo, on the broker it leaves running (default topics)."""
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    return [
        "stream-app worker                                   # terminal 1: a worker",
        "stream-app publish --synthetic 20000 --rate 500     # terminal 2: payments and labels",
        "stream-app tail scores -n 3                         # the score envelopes",
        "stream-app top                                      # throughput, latency, drift live",
        f"stream-app evaluate served --from {yesterday} --to {yesterday} --out demo-report"
        "   # what was served, evaluated",
    ]


def http_calls(worker_url: str, story: Plan, result: Outcome, try_url: str) -> list[str]:
    """The summary's lines for the worker's HTTP API, called while the demo's worker still runs
    at ``worker_url``: the live features of the customer behind the highest score (one
    interactive query), and a what-if score of that customer paying the same amount again at
    the same terminal a minute after the live window (one synchronous score, nothing recorded),
    with the curl commands to ask a worker of one's own at ``try_url`` the same. An API error is
    printed, not raised: the summary above it stands."""
    import orjson

    from stream_app.client.http import ApiError, HttpClient

    payments = [orjson.loads(r.value) for r in story.live if r.topic == "transactions"]
    if not result.top or not payments:
        return []
    top_id = result.top[0]["event_id"]
    payment = next((p for p in payments if p["event_id"] == top_id), None)
    if payment is None:
        return []
    latest = max(p["event_time"] for p in payments)
    when = datetime.fromisoformat(latest) + timedelta(minutes=1)
    what_if = {
        **payment,
        "event_id": f"what-if-{top_id}",
        "event_time": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    customer = payment["customer_id"]
    lines = ["[bold]Ask the live state[/] (the worker's HTTP API):"]
    try:
        with HttpClient(worker_url, timeout=10.0, retries=3) as client:
            state = client.customer_features(customer)
            shown = ", ".join(
                f"{name.removeprefix('CUSTOMER_ID_')}={value:.4g}"
                for name, value in state.features.items()
                if name.endswith("1DAY_WINDOW") or name.endswith("30DAY_WINDOW")
            )
            lines.append(
                f"  GET /v1/customers/{customer}/features -> as of event time {state.event_time} "
                f"(partition {state.partition}, served by {state.served_by}): {shown}"
            )
            scored = client.score(what_if)
            reasons = ", ".join(
                f"{c['feature']} {c['contribution']:+.2f}"
                for c in scored.envelope["explanation"]["contributions"][:3]
            )
            lines.append(
                f"  POST /v1/score (what-if: {customer} pays {payment['amount']:.2f} again at "
                f"{payment['terminal_id']}, nothing recorded) -> score {scored.score:.4f}, "
                f"{scored.decision} ({reasons})"
            )
    except (ApiError, OSError) as exc:
        lines.append(f"  the HTTP API did not answer as expected: {exc}")
    # The demo's worker and topics are gone once it ends: the commands are for a worker of
    # your own (`stream-app worker`, below), on its web port.
    lines.append(f"  with `stream-app worker` running: curl {try_url}/v1/customers/ID/features")
    lines.append(f"       curl -X POST {try_url}/v1/score -d '{orjson.dumps(what_if).decode()}'")
    return lines


def print_summary(
    console: Console,
    plan: Plan,
    result: Outcome,
    http_lines: list[str],
) -> None:
    """The end of the story."""
    console.print(decisions_table(result))
    console.print(frauds_table(result))
    console.print(headline(result))
    console.print(
        "frauds at terminals whose first fraud labels are not out yet (labels come 7 days after "
        "the payment) are invisible to the terminal risk windows: that is the label delay's cost"
    )
    console.print(top_table(result, plan.truth))
    console.print(agreement_line(result))
    console.print(drift_table(result))
    for line in http_lines:
        console.print(line)
    console.print("[bold]Try next[/] (the broker keeps running):")
    for line in try_next():
        console.print(f"  {line}", soft_wrap=True, highlight=False, markup=False)


# --- the command -------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port free on this machine now (for the worker's web server)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_worker(
    settings: Settings, champion: str, challenger: str, web_port: int, console: Console
) -> WorkerProcess:
    """The demo's worker with the champion and the challenger pinned; waits until it is ready.

    The challenger's queue is kept short: after the warm-up burst it is at most a few batches
    behind, so it shadows the live window as it arrives."""
    from stream_app.devtools.worker_process import WorkerProcess

    worker = WorkerProcess(
        settings.state_dir / "demo",
        {
            "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
            "STREAM_APP_TOPIC_PREFIX": settings.topic_prefix,
            "STREAM_APP_APP_ID": settings.app_id,
            "STREAM_APP_MODELS_DIR": str(settings.models_dir),
            "STREAM_APP_CHAMPION": champion,
            "STREAM_APP_CHALLENGER": challenger,
            "STREAM_APP_SHADOW_MAX_PENDING": "4",
            "STREAM_APP_WEB_PORT": str(web_port),
        },
    )
    worker.start()
    with console.status("Waiting for the worker to join the group and recover its tables…"):
        ready_s = worker.wait_ready(timeout=120)
    console.print(
        f"worker ready in {ready_s:.1f} s (pid {worker.proc.pid if worker.proc else '?'},"
        f" log {worker.log_path})"
    )
    return worker


def demo(
    customers: Annotated[int, typer.Option(min=10, help="Simulated customers.")] = WORLD.customers,
    terminals: Annotated[int, typer.Option(min=10, help="Simulated terminals.")] = WORLD.terminals,
    history_days: Annotated[
        int, typer.Option(min=8, help="Days of payments (and labels) that warm the state.")
    ] = WORLD.history_days,
    live_days: Annotated[int, typer.Option(min=1, help="Days of the live window.")] = 1,
    rate: Annotated[
        float, typer.Option(min=1.0, help="Live window publish rate, payments and labels/s.")
    ] = 300.0,
    seed: Annotated[int, typer.Option(help="Generator seed of the world.")] = WORLD.seed,
    show: Annotated[int, typer.Option(min=1, help="Highest-scored payments to explain.")] = 3,
    summary_json: Annotated[
        Path | None,
        typer.Option(help="Also write the figures and the flagged payments here.", dir_okay=False),
    ] = None,
) -> None:
    """Broker, topics, models, worker, then the story: a warm-up, a live window with injected
    frauds, and what was caught.

    Starts the local Kafka broker (unless KAFKA_BOOTSTRAP_SERVERS names another cluster, or a
    local address where a broker already answers), applies the topic declarations, trains a
    champion and a challenger on the generator if the registry has none, starts a worker, publishes
    weeks of simulated payments with their labels (7 days after each payment), then a live window
    in which an attacker compromises terminals and cards, and summarises what the worker decided
    against the generator's ground truth. Stops the worker and deletes this run's topics; the
    broker keeps running (`stream-app broker stop` stops it).
    """
    import orjson
    from rich.console import Console

    from stream_app.cli.broker import start as start_broker
    from stream_app.cli.settings import command_settings
    from stream_app.devtools.demo_story import outcome, plan
    from stream_app.io.topics import ensure_topics

    console = Console()
    started = time.monotonic()
    run = time.strftime("%Y%m%dT%H%M%S")
    # Each run gets its own topics and consumer group: a previous run's customer state would
    # (rightly) reject the same days' payments as too late.
    settings = command_settings().model_copy(
        update={"topic_prefix": f"demo-{run}.", "app_id": f"stream-app-demo-{run}"}
    )
    console.rule("[bold]1 · Kafka broker")
    if use_running_broker(settings):
        console.print(
            f"a Kafka broker already answers at {settings.kafka_bootstrap_servers}: using it"
        )
    else:
        start_broker(timeout=90.0)
    console.rule("[bold]2 · Topics")
    ensure_topics(settings)
    console.print(f"declared topics present on {settings.kafka_bootstrap_servers}")
    console.rule("[bold]3 · Models")
    champion, challenger = demo_models(settings.models_dir, console)
    print_models(console, settings.models_dir, champion, challenger)
    console.rule("[bold]4 · The world")
    world = DemoWorld(customers, terminals, history_days, live_days, seed)
    story = plan(world, datetime.now(UTC))
    print_world(console, world, story)
    console.rule("[bold]5 · Worker")
    web_port = free_port()
    worker_url = f"http://127.0.0.1:{web_port}"
    worker = start_worker(settings, champion, challenger, web_port, console)
    collector = Collector(settings, story.truth)
    try:
        console.rule(f"[bold]6 · Warm-up: {history_days} days of history")
        seconds, per_s = warm_up(console, settings, story, collector)
        console.print(f"warm-up scored in {seconds:.0f} s ({per_s:,.0f} payments/s)")
        skipped = drain_shadow(collector, f"{worker_url}/metrics", collector.scored)
        console.print(
            f"the challenger shadowed {collector.shadowed:,} of them and skipped {skipped:,}: it "
            "runs in a process of its own at a lower CPU priority and never holds the champion up"
        )
        console.rule(f"[bold]7 · Live window at {rate:g} records/s: flagged payments")
        live_s = live_window(console, settings, story, collector, rate)
        drain_shadow(collector, f"{worker_url}/metrics", collector.scored, wait_s=15.0)
        result = outcome(story, collector.live, collector.shadows, collector.drift, champion, show)
        console.rule("[bold]8 · Summary")
        print_summary(
            console,
            story,
            result,
            http_calls(worker_url, story, result, f"http://127.0.0.1:{settings.web_port}"),
        )
        console.print(
            f"{result.scored:,} of {result.live_events:,} live payments scored in {live_s:.0f} s, "
            f"latency p50 {result.latency_ms['p50']:.0f} ms, p99 {result.latency_ms['p99']:.0f} ms"
            f" · {time.monotonic() - started:.0f} s in all"
        )
        if summary_json is not None:
            document = result.as_json(story, world, collector.live)
            summary_json.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    except WorkerTooSlow as exc:
        console.print(f"[bold red]the worker fell behind:[/] {exc} (log {worker.log_path})")
        raise typer.Exit(1) from exc
    finally:
        collector.close()
        worker.stop()
        removed = delete_run_topics(settings)
        console.print(f"removed this run's {removed} topics (prefix {settings.topic_prefix})")
