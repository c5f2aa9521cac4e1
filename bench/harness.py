"""`make bench`: the worker against a plain consume->produce loop and a Quix Streams peer, one run.

One command, against a Kafka broker of its own (free ports, temporary directory, stopped by pid):

1. **Models**: the project's trainer fits the handbook protocol's logistic champion and a
   gradient-boosting challenger on the handbook data, into a temporary models directory
   (``--models DIR`` reuses trained ones).
2. **Workload**: the first ``--events`` transactions of the fraud-handbook CSV
   (``$FRAUD_HANDBOOK_DIR`` or ``../shared/datasets/fraud-handbook``, read where it lives) and
   every one of their labels (7 days later, as ``stream-app publish`` schedules them), preloaded
   with the project's CSV source, schedule and bulk producer before anything reads them. Each
   contender gets a copy of its own on topics of its own, so one's latency phases never add to
   another's input.
3. **Throughput** from the full topics, one contender at a time, each its own process: the
   ceiling (``bench.ceiling``: consume -> produce, no work), ours (``stream-app worker``:
   customer and terminal state with changelogs, champion, challenger in shadow, drift) and the
   peer (``bench.peers.quix_pipeline``). A consumer counts the output records; throughput =
   transactions / (last - first output record's timestamp), and from the process start. A
   worker whose output stalls is reported with its log and started again on a fresh copy.
4. **Latency** at fixed offered rates (``--rates``, 1,000, 2,000, 5,000 and 10,000
   transactions/s, and half of the contender's measured maximum; the goals: p99 <= 50 ms at
   2,000/s, keeping up at 5,000/s), ours and the peer, each warm from step 3: the next handbook
   transactions are produced open-loop at the rate, and each score's arrival at a consumer is
   timed from its transaction's produce call. A rate the contender cannot keep up with is
   reported as such, with its backlog growth, not as percentiles.
5. **Memory**: peak RSS (``VmHWM``) of every process, and the serialized state per customer and
   per terminal, read back from the changelog topics.
6. Ratios ours/peer and ours/ceiling within each run; with ``--repeat K``, medians over runs.

Prints tables, writes ``--json`` (default ``bench/results/bench.json``) and a Markdown copy of
the tables beside it. ``--worker-rev HEAD`` runs the worker from a clean export of a commit.

    .venv-bench/bin/python -m bench [--events 500000] [--repeat 1] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from bench.measure import (
    judge_phase,
    latency_summary,
    median,
    median_of_runs,
    ratio,
    throughput,
)
from stream_app.broker import LocalBroker, free_port, free_ports
from stream_app.config import Settings
from stream_app.devtools.worker_process import READY_MARK, WorkerProcess
from stream_app.io.topics import ensure_topics
from stream_app.sources.handbook_csv import default_csv_path, read_csv_events
from stream_app.sources.producer import BulkProducer, publish_records
from stream_app.sources.schedule import LABELS, Record, ScheduleStats, schedule

ROOT = Path(__file__).resolve().parent.parent
PARTITIONS = 6
TRAIN_HISTORY_FROM = date(2018, 6, 18)  # 37 days of window history before the training week
TRAIN_START = datetime(2018, 7, 25, tzinfo=UTC)  # the handbook protocol's training week
TRAIN_TO = date(2018, 8, 14)  # end of its test week
FIXED_RATES = [1000.0, 2000.0, 5000.0, 10000.0]  # goals: p99 <= 50 ms at 2,000/s; keep up at 5,000
TIMES = "\N{MULTIPLICATION SIGN}"

console = Console(log_path=False)


# --------------------------------------------------------------------------------------------
# Processes: peak RSS from /proc, stop by pid
# --------------------------------------------------------------------------------------------


def peak_rss_bytes(pid: int) -> int | None:
    """``VmHWM`` (peak resident set) of ``pid``, or None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from ``/proc/<pid>/task/*/children``)."""
    out: list[int] = []
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            tasks = list(Path(f"/proc/{current}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            out.extend(children)
            stack.extend(children)
    return out


def process_name(pid: int) -> str:
    """A short name for ``pid`` from its command line."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return str(pid)
    text = " ".join(a.decode(errors="replace") for a in argv if a)
    names = {
        "multiprocessing.resource_tracker": "resource tracker",
        "multiprocessing.spawn": "challenger (shadow process)",
        "stream_app worker": "worker",
    }
    for mark, name in names.items():
        if mark in text:
            return name
    return Path(argv[0].decode(errors="replace")).name if argv and argv[0] else str(pid)


class RssTracker:
    """Keeps the peak RSS of a process tree, sampled until the processes end (``VmHWM`` is the
    kernel's own peak, so sampling only has to catch each process once before it exits)."""

    def __init__(self, root_pid: int, root_name: str) -> None:
        self.root_pid = root_pid
        self.names: dict[int, str] = {root_pid: root_name}
        self.peaks: dict[int, int] = {}

    def sample(self) -> None:
        for pid in [self.root_pid, *descendants(self.root_pid)]:
            if pid not in self.names:
                self.names[pid] = process_name(pid)
            peak = peak_rss_bytes(pid)
            if peak is not None:
                self.peaks[pid] = max(peak, self.peaks.get(pid, 0))

    def retarget(self, pid: int) -> None:
        """Follow a restarted root process (same name; peaks are kept over both lives)."""
        self.names[pid] = self.names[self.root_pid]
        self.root_pid = pid

    def report(self) -> dict[str, float]:
        """Peak RSS in MB per process name (the largest of processes with one name)."""
        out: dict[str, float] = {}
        for pid, peak in self.peaks.items():
            name = self.names[pid]
            out[name] = max(out.get(name, 0.0), peak / 1e6)
        return out


class ChildProcess(WorkerProcess):
    """A benchmark child (peer or ceiling) run as ``argv``: its own session, log and pid file
    under ``home``, stopped by pid (``WorkerProcess``'s stop, log and tail)."""

    def __init__(self, argv: list[str], home: Path, name: str) -> None:
        super().__init__(home, {"PYTHONPATH": str(ROOT)}, name)
        home.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
            )
        self.proc = proc
        self.pid_path.write_text(str(proc.pid))
        self.rss = RssTracker(proc.pid, name)


# --------------------------------------------------------------------------------------------
# Output watcher: a confluent consumer counting output records as they arrive
# --------------------------------------------------------------------------------------------


def envelope_id(value: bytes) -> tuple[str, float | None] | None:
    """The ``event_id`` of a score envelope and the worker's own ``latency_ms`` (Kafka
    timestamp of the transaction to scored), when it has one."""
    try:
        envelope = orjson.loads(value)
        latency = envelope.get("latency_ms")
        return str(envelope["event_id"]), float(latency) if latency is not None else None
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError):
        return None


class OutputWatcher(threading.Thread):
    """Reads ``topic`` from the beginning in the background: how many records arrived, when the
    first and the latest arrived (wall clock), and, while ``track_ids`` is set, the arrival time
    of each event id."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True, name=f"watch-{topic}")
        self.bootstrap = bootstrap
        self.topic = topic
        self.count = 0
        self.first_at: float | None = None  # arrival here (wall clock)
        self.last_at: float | None = None
        # The output records' own timestamps (set by the contender's producer when it produced
        # them): throughput is timed on these, so a consumer here that falls behind a fast
        # contender (the ceiling) cannot stretch the span.
        self.first_ts: float | None = None
        self.last_ts: float | None = None
        self.track_ids = False
        self.arrived: dict[str, float] = {}
        self.worker_latency_ms: dict[str, float] = {}  # the envelopes' own latency_ms
        self._stop_event = threading.Event()

    def run(self) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"bench-watch-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
            }
        )
        meta = consumer.list_topics(self.topic, timeout=30).topics[self.topic]
        consumer.assign(
            [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in sorted(meta.partitions)]
        )
        try:
            while not self._stop_event.is_set():
                batch = consumer.consume(2000, timeout=0.05)
                if not batch:
                    continue
                now = time.time()
                good = [m for m in batch if m.error() is None]
                if not good:
                    continue
                if self.track_ids:
                    for m in good:
                        found = envelope_id(m.value() or b"")
                        if found is not None and found[0] not in self.arrived:
                            self.arrived[found[0]] = now
                            if found[1] is not None:
                                self.worker_latency_ms[found[0]] = found[1]
                if self.first_at is None:
                    self.first_at = now
                self.last_at = now
                stamps = [m.timestamp()[1] for m in good]
                low, high = min(stamps) / 1000.0, max(stamps) / 1000.0
                self.first_ts = low if self.first_ts is None else min(self.first_ts, low)
                self.last_ts = high if self.last_ts is None else max(self.last_ts, high)
                self.count += len(good)
        finally:
            consumer.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(10)


# --------------------------------------------------------------------------------------------
# Broker-side helpers
# --------------------------------------------------------------------------------------------


def create_topics(bootstrap: str, names: list[str], partitions: int = PARTITIONS) -> None:
    """Create plain topics (output topics of the peer and the ceiling)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(n, partitions, 1) for n in names])
    for future in futures.values():
        future.result(30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if all(n in admin.list_topics(timeout=10).topics for n in names):
            return
        time.sleep(0.2)


def delete_topics(bootstrap: str, marks: list[str]) -> int:
    """Delete every topic whose name contains one of ``marks`` (a finished run's topics)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = [n for n in admin.list_topics(timeout=10).topics if any(m in n for m in marks)]
    if names:
        for future in admin.delete_topics(names).values():
            try:
                future.result(30)
            except Exception as exc:  # a topic already gone is fine
                console.log(f"[yellow]could not delete a topic: {exc}")
    return len(names)


def topics_with(bootstrap: str, mark: str) -> list[str]:
    """Topic names containing ``mark``."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    return sorted(n for n in admin.list_topics(timeout=10).topics if mark in n)


def changelog_state_bytes(bootstrap: str, topic: str, description: str) -> dict[str, float]:
    """Serialized bytes per entity: the latest value of every key of the changelog ``topic``."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-state-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    meta = consumer.list_topics(topic, timeout=30).topics[topic]
    ends: dict[int, int] = {}
    for p in meta.partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        if high > low:
            ends[p] = high
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
    sizes: dict[bytes, int] = {}
    remaining = set(ends)
    read = 0
    total = sum(ends.values())
    try:
        with progress_bar() as bar:
            task = bar.add_task(description, total=total)
            while remaining:
                batch = consumer.consume(5000, timeout=1.0)
                for m in batch:
                    if m.error() is not None:
                        continue
                    value = m.value()
                    key = m.key() or b""
                    if value is None:
                        sizes.pop(key, None)
                    else:
                        sizes[key] = len(value)
                    if m.offset() + 1 >= ends[m.partition()]:
                        remaining.discard(m.partition())
                read += len(batch)
                bar.update(task, completed=read)
    finally:
        consumer.close()
    values = list(sizes.values())
    return {
        "entities": float(len(values)),
        "mean_bytes": sum(values) / len(values) if values else 0.0,
        "max_bytes": float(max(values, default=0)),
        "total_mb": sum(values) / 1e6,
        "changelog_records": float(read),
    }


def progress_bar() -> Progress:
    """A transient bar: description, bar, done/total, elapsed time."""
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


# --------------------------------------------------------------------------------------------
# Models and workload
# --------------------------------------------------------------------------------------------


def train_models(csv: Path, models_dir: Path) -> tuple[str, str]:
    """The handbook protocol's logistic champion and gradient-boosting challenger."""
    from threadpoolctl import threadpool_limits

    from stream_app.sources.schedule import batch_from_events
    from stream_app.training import train

    with console.status("Training: reading the handbook slice for the protocol…"):
        batch = batch_from_events(
            read_csv_events(csv, date_from=TRAIN_HISTORY_FROM, date_to=TRAIN_TO)
        )
    versions = []
    for kind in ("logreg", "hgb"):
        started = time.monotonic()
        with (
            console.status(f"Training the {kind} model ({len(batch):,} rows)…"),
            threadpool_limits(limits=2),
        ):
            result = train(
                batch,
                model_type=kind,  # type: ignore[arg-type]
                train_start=TRAIN_START,
                models_dir=models_dir,
                data_tag=f"fraud-handbook:{TRAIN_HISTORY_FROM}..{TRAIN_TO}",
            )
        m = result.metrics
        console.log(
            f"trained {result.version} in {time.monotonic() - started:.0f} s: AUC "
            f"{m['auc_roc']:.3f}, AP {m['average_precision']:.3f}"
        )
        versions.append(result.version)
        time.sleep(1.1)  # versions are named by the second
    return versions[0], versions[1]


def existing_models(models_dir: Path) -> tuple[str, str]:
    """The newest logreg and hgb versions of ``models_dir`` (``--models``)."""
    from stream_app.scoring.registry import list_versions

    versions = list_versions(models_dir)
    logreg = [v for v in versions if v.endswith("-logreg")]
    hgb = [v for v in versions if v.endswith("-hgb")]
    if not logreg or not hgb:
        raise SystemExit(f"{models_dir} needs a -logreg and a -hgb version (found {versions})")
    return sorted(logreg)[-1], sorted(hgb)[-1]


def preload(settings: Settings, items: Iterator[Any], n: int) -> dict[str, float]:
    """Publish ``n`` transactions of ``items`` and all their labels, as fast as possible."""
    stats = ScheduleStats()
    records = schedule(itertools.islice(items, n), labels=True, stats=stats)
    started = time.monotonic()
    with progress_bar() as bar:
        task = bar.add_task("preloading transactions + labels", total=2 * n)
        delivered = publish_records(
            settings,
            records,
            on_progress=lambda k: bar.advance(task, k),
            progress_every=10_000,
            flush_timeout=300,
        )
    seconds = time.monotonic() - started
    tx, labels = delivered.get("transactions", 0), delivered.get(LABELS, 0)
    console.log(
        f"preloaded {tx:,} transactions and {labels:,} labels in {seconds:.1f} s "
        f"({(tx + labels) / seconds:,.0f} records/s); event time "
        f"{stats.first_event_time} .. {stats.last_event_time}"
    )
    return {
        "transactions": float(tx),
        "labels": float(labels),
        "seconds": seconds,
        "records_per_s": (tx + labels) / seconds,
    }


# --------------------------------------------------------------------------------------------
# Phases
# --------------------------------------------------------------------------------------------


@dataclass
class Contender:
    """One process under test and how to watch it."""

    name: str
    out_topic: str
    start: Callable[[], Any]  # returns a handle with .running, .stop(), .rss (RssTracker)
    handle: Any = None
    watcher: OutputWatcher | None = None
    started_at: float = 0.0
    ready_at: float | None = None  # when the log said it was ready (Faust's READY_MARK)
    notes: list[str] = field(default_factory=list)


def wait_for_output(contender: Contender, expected: int, stall_s: float, description: str) -> bool:
    """Wait until the contender's output holds ``expected`` records; False if it stalled or
    died first."""
    watcher = contender.watcher
    assert watcher is not None
    last_count, last_change = watcher.count, time.monotonic()
    with progress_bar() as bar:
        task = bar.add_task(description, total=expected)
        while watcher.count < expected:
            time.sleep(0.5)
            contender.handle.rss.sample()
            bar.update(task, completed=watcher.count)
            if contender.ready_at is None and READY_MARK in contender.handle.log_text():
                contender.ready_at = time.time()
            if watcher.count != last_count:
                last_count, last_change = watcher.count, time.monotonic()
            exited = not contender.handle.running
            if exited and time.monotonic() - last_change > 10:
                contender.notes.append(f"exited with {watcher.count:,} of {expected:,} records")
                return False
            if time.monotonic() - last_change > stall_s:
                contender.notes.append(
                    f"stalled at {watcher.count:,} of {expected:,} records for {stall_s:.0f} s"
                )
                return False
    return True


def throughput_phase(
    contender: Contender, bootstrap: str, n_tx: int, expected_out: int, stall_s: float
) -> dict[str, Any]:
    """Start the contender on the full topics and time its output to the last record."""
    contender.watcher = OutputWatcher(bootstrap, contender.out_topic)
    contender.watcher.start()
    contender.started_at = time.time()
    contender.handle = contender.start()
    ok = wait_for_output(
        contender, expected_out, stall_s, f"{contender.name}: {n_tx:,} transactions"
    )
    watcher = contender.watcher
    result: dict[str, Any] = {"completed": ok, "output_records": float(watcher.count)}
    first, last = watcher.first_ts, watcher.last_ts
    if first is not None and last is not None:
        done = min(watcher.count, expected_out) / expected_out * n_tx
        result.update(
            {
                "tx_per_s": throughput(int(done), first, last),
                "records_per_s": throughput(int(2 * done), first, last),
                "tx_per_s_from_start": throughput(int(done), contender.started_at, last),
                "first_output_after_s": first - contender.started_at,
                "ready_after_s": contender.ready_at - contender.started_at
                if contender.ready_at
                else None,
                "seconds": last - first,
                "watcher_lag_s": (watcher.last_at or last) - last,
            }
        )
    state = "" if ok else f" [red]({'; '.join(contender.notes)})"
    console.log(
        f"{contender.name}: {result.get('tx_per_s', 0):,.0f} transactions/s first→last output "
        f"({result.get('tx_per_s_from_start', 0):,.0f}/s from process start, "
        f"{result.get('seconds', 0):.1f} s){state}"
    )
    return result


def latency_phase(
    contender: Contender,
    producer: BulkProducer,
    records: Iterator[Record],
    transactions_topic: str,
    labels_topic: str,
    rate: float,
    seconds: float,
    max_backlog: float,
    drain_s: float,
) -> dict[str, Any]:
    """Offer ``rate`` transactions/s for ``seconds`` (open loop), time each score's arrival."""
    watcher = contender.watcher
    assert watcher is not None
    watcher.track_ids = True
    sent: dict[str, float] = {}
    order: list[str] = []
    samples: list[tuple[float, float]] = []
    total = int(rate * seconds)
    # Scores of earlier phases have all arrived (each phase drains), so what arrives from now on
    # belongs to this phase: the backlog is what was sent minus what arrived since.
    base = len(watcher.arrived)
    start = time.monotonic() + 0.05
    next_sample = start
    aborted = False
    with progress_bar() as bar:
        task = bar.add_task(f"{contender.name}: {rate:,.0f} tx/s offered", total=total)
        for record in records:
            if record.topic == LABELS:
                producer.produce(labels_topic, record.key, record.value)
                continue
            due = start + len(order) / rate
            wait = due - time.monotonic()
            if wait > 0.001:
                time.sleep(wait)
            event_id = str(orjson.loads(record.value)["event_id"])
            sent[event_id] = time.time()
            order.append(event_id)
            producer.produce(transactions_topic, record.key, record.value)
            now = time.monotonic()
            if now >= next_sample:
                next_sample = now + 0.25
                backlog = len(order) - (len(watcher.arrived) - base)
                samples.append((now - start, float(backlog)))
                bar.update(task, completed=len(order))
                contender.handle.rss.sample()
                if now - start > 3 and backlog > max_backlog:
                    aborted = True
                    break
            if len(order) >= total:
                break
        producer.flush(60)
    sent_s = time.monotonic() - start
    # Drain: wait for this phase's scores (bounded), so the next phase starts from empty.
    deadline = time.monotonic() + drain_s
    last_missing, last_change = len(order), time.monotonic()
    with progress_bar() as bar:
        task = bar.add_task(f"{contender.name}: draining", total=len(order))
        while time.monotonic() < deadline:
            missing = len(order) - (len(watcher.arrived) - base)
            bar.update(task, completed=len(order) - missing)
            if missing <= 0:
                break
            if missing != last_missing:
                last_missing, last_change = missing, time.monotonic()
            elif time.monotonic() - last_change > 30:
                break
            time.sleep(0.25)
    missing = sum(1 for e in order if e not in watcher.arrived)
    verdict = judge_phase(samples, rate, drained=missing == 0)
    latencies = [watcher.arrived[e] - sent[e] for e in order if e in watcher.arrived]
    result: dict[str, Any] = {
        "offered_tx_per_s": rate,
        "sent": float(len(order)),
        "sent_tx_per_s": len(order) / sent_s if sent_s > 0 else 0.0,
        "scored": float(len(order) - missing),
        "sustained": verdict.sustained,
        "backlog_growth_per_s": verdict.backlog_growth_per_s,
        "backlog_at_end": verdict.final_backlog,
        "aborted_early": aborted,
        "verdict": verdict.reason,
        "latency": latency_summary(latencies) if verdict.sustained and latencies else None,
    }
    inside = [
        watcher.worker_latency_ms[e] / 1000.0 for e in order if e in watcher.worker_latency_ms
    ]
    if verdict.sustained and inside:
        # Cross-check: the envelopes' latency_ms, from the transaction's Kafka timestamp to
        # scored, measured inside the contender.
        result["latency_in_envelopes"] = latency_summary(inside)
    watcher.track_ids = False
    if result["latency"]:
        lat = result["latency"]
        console.log(
            f"{contender.name} at {rate:,.0f} tx/s: p50 {lat['p50_ms']:.1f} ms, p95 "
            f"{lat['p95_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms ({len(order):,} sent)"
        )
    else:
        console.log(
            f"{contender.name} at {rate:,.0f} tx/s: [yellow]not sustained[/] — {verdict.reason}; "
            f"backlog {verdict.final_backlog:,.0f} after {sent_s:.1f} s, "
            f"{missing:,} unscored after draining"
        )
    return result


def latency_phases(
    contender: Contender,
    settings: Settings,
    records: Iterator[Record],
    max_tx_per_s: float | None,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """The fixed rates and half the contender's maximum, lowest first."""
    rates: list[tuple[str, float]] = [(f"{r:.0f}", r) for r in args.rates]
    if max_tx_per_s:
        rates.append(("half_max", round(max_tx_per_s / 2.0)))
    rates.sort(key=lambda item: item[1])
    producer = BulkProducer(settings, config={"linger.ms": 1})
    out: dict[str, Any] = {}
    for label, rate in rates:
        out[label] = latency_phase(
            contender,
            producer,
            records,
            settings.topic("transactions"),
            settings.topic(LABELS),
            rate,
            args.latency_seconds,
            max_backlog=max(3_000.0, rate),
            drain_s=args.drain_seconds,
        )
    return out


# --------------------------------------------------------------------------------------------
# One run
# --------------------------------------------------------------------------------------------


def export_revision(rev: str, home: Path) -> Path:
    """A clean copy of the repository at ``rev`` (``git archive``), for the worker to run from:
    what is measured is then a commit, not a working tree others may be editing."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", rev], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    target = home / f"worker-{commit}"
    target.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit], cwd=ROOT, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    console.log(f"the worker runs from {rev} ({commit}), exported to {target}")
    return target


def worker_python() -> str:
    """The interpreter ours runs with: the project's own ``.venv`` (the dependency versions a
    user installs), not ``.venv-bench``, whose confluent-kafka is held below 2.13 by the peer's
    pin. Falls back to this interpreter when ``.venv`` is absent."""
    own = ROOT / ".venv" / "bin" / "python"
    return str(own) if own.exists() else sys.executable


def quix_available() -> bool:
    try:
        import quixstreams  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class Workload:
    """One copy of the preloaded workload on topics of its own, and what comes after it."""

    prefix: str
    settings: Settings
    preload: dict[str, float]
    later: Iterator[Record]  # the next transactions (and labels), for the latency phases


def prepare(bootstrap: str, prefix: str, csv: Path, n: int) -> Workload:
    """Declared topics under ``prefix``, the first ``n`` transactions and their labels in them."""
    settings = Settings(
        kafka_bootstrap_servers=bootstrap, topic_prefix=prefix, partitions=PARTITIONS
    )
    ensure_topics(settings)
    items = read_csv_events(csv)
    loaded = preload(settings, items, n)
    return Workload(prefix, settings, loaded, schedule(items, labels=True))


def one_run(
    index: int,
    bootstrap: str,
    home: Path,
    csv: Path,
    models: Path,
    champion: str,
    challenger: str,
    args: argparse.Namespace,
    worker_src: Path | None = None,
) -> dict[str, Any]:
    """The ceiling, ours and the peer, each on its own copy of the same preloaded workload
    (so one contender's latency phases never add to another's input); latency; memory; ratios.

    ``worker_src``: run the worker from this source tree (``--worker-rev``) instead of the
    working tree."""
    tag = f"bench-r{index}-{uuid.uuid4().hex[:6]}"
    n = args.events
    run_dir = home / tag
    run_dir.mkdir(parents=True)
    python = sys.executable
    result: dict[str, Any] = {}

    # -- the ceiling, on ours' copy before ours reads it -------------------------------------
    work = prepare(bootstrap, f"{tag}-o1.", csv, n)
    result["preload"] = work.preload
    ceiling_out = f"{tag}.ceiling.out"
    create_topics(bootstrap, [ceiling_out])

    def start_ceiling() -> ChildProcess:
        return ChildProcess(
            [
                python,
                "-m",
                "bench.ceiling",
                "--bootstrap",
                bootstrap,
                "--topics",
                work.settings.topic("transactions"),
                work.settings.topic(LABELS),
                "--out",
                ceiling_out,
                "--group",
                f"{tag}-ceiling",
                "--expect",
                str(2 * n),
            ],
            run_dir,
            "ceiling",
        )

    ceiling = Contender("ceiling", ceiling_out, start_ceiling)
    result["ceiling"] = throughput_phase(ceiling, bootstrap, n, 2 * n, args.stall_seconds)
    ceiling.handle.stop()
    assert ceiling.watcher is not None
    ceiling.watcher.stop()
    result["ceiling"]["peak_rss_mb"] = ceiling.handle.rss.report()

    # -- ours: a worker that stalls is reported and tried again on a fresh copy ---------------
    failed: list[dict[str, Any]] = []
    for attempt in range(1, args.ours_attempts + 1):
        if attempt > 1:
            work = prepare(bootstrap, f"{tag}-o{attempt}.", csv, n)
        app_id = f"{tag}-o{attempt}-ours"
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "STREAM_APP_TOPIC_PREFIX": work.prefix,
            "STREAM_APP_APP_ID": app_id,
            "STREAM_APP_MODELS_DIR": str(models),
            "STREAM_APP_CHAMPION": champion,
            "STREAM_APP_CHALLENGER": challenger,
            "STREAM_APP_STATE_DIR": str(run_dir / f"ours-{attempt}-state"),
            "STREAM_APP_WEB_PORT": str(free_port()),
            "STREAM_APP_PARTITIONS": str(PARTITIONS),
            "STREAM_APP_MODEL_WATCH_INTERVAL_S": "0",
        }
        if worker_src is not None:
            env["PYTHONPATH"] = str(worker_src)

        def start_ours(env: dict[str, str] = env, attempt: int = attempt) -> WorkerProcess:
            worker = WorkerProcess(
                run_dir / f"ours-{attempt}", env, cwd=worker_src, python=worker_python()
            )
            worker.start()
            assert worker.proc is not None
            worker.rss = RssTracker(worker.proc.pid, "worker")  # type: ignore[attr-defined]
            return worker

        ours = Contender("ours (Faust worker)", work.settings.topic("scores"), start_ours)
        result["ours"] = throughput_phase(ours, bootstrap, n, n, args.stall_seconds)
        worker: WorkerProcess = ours.handle
        if result["ours"].get("completed"):
            break
        result["ours"]["log_tail"] = worker.tail(40)
        result["ours"]["notes"] = ours.notes
        failed.append(result["ours"])
        console.log(f"[red]ours, attempt {attempt}: {'; '.join(ours.notes)}")
        worker.stop()
        assert ours.watcher is not None
        ours.watcher.stop()
    result["ours"]["failed_attempts"] = failed
    result["ours"]["state"] = {
        entity: changelog_state_bytes(
            bootstrap,
            f"{app_id}-{entity}-state-changelog",
            f"ours state: reading the {entity} changelog",
        )
        for entity in ("customer", "terminal")
    }
    if result["ours"].get("completed") and not args.no_latency:
        result["ours"]["latency"] = latency_phases(
            ours, work.settings, work.later, result["ours"].get("tx_per_s"), args
        )
    worker.rss.sample()  # type: ignore[attr-defined]
    result["ours"]["peak_rss_mb"] = worker.rss.report()  # type: ignore[attr-defined]
    result["ours"]["log_tail"] = worker.tail(15)
    result["ours"]["notes"] = ours.notes
    worker.stop()
    assert ours.watcher is not None
    ours.watcher.stop()

    # -- the peer, on a copy of its own -------------------------------------------------------
    result["peer"] = None
    if quix_available() and not args.no_peer:
        peer_work = prepare(bootstrap, f"{tag}-p.", csv, n)
        peer_group, peer_out = f"{tag}-peer", f"{tag}-p.peer.scores"
        create_topics(bootstrap, [peer_out])

        def start_peer() -> ChildProcess:
            return ChildProcess(
                [
                    python,
                    "-m",
                    "bench.peers.quix_pipeline",
                    "--bootstrap",
                    bootstrap,
                    "--prefix",
                    peer_work.prefix,
                    "--group",
                    peer_group,
                    "--models",
                    str(models),
                    "--champion",
                    champion,
                    "--out",
                    peer_out,
                    "--state-dir",
                    str(run_dir / "peer-state"),
                ],
                run_dir,
                "peer",
            )

        peer = Contender("peer (Quix Streams)", peer_out, start_peer)
        result["peer"] = throughput_phase(peer, bootstrap, n, n, args.stall_seconds)
        # Quix names changelogs changelog__<group>--<stream id>--<store>; the terminal stage's
        # stream id names both of its topics (labels and the repartition topic).
        result["peer"]["state"] = {
            ("terminal" if "labels" in name else "customer"): changelog_state_bytes(
                bootstrap, name, f"peer state: reading {name}"
            )
            for name in topics_with(bootstrap, f"changelog__{peer_group}")
        }
        if result["peer"].get("completed") and not args.no_latency:
            result["peer"]["latency"] = latency_phases(
                peer, peer_work.settings, peer_work.later, result["peer"].get("tx_per_s"), args
            )
        peer.handle.rss.sample()
        result["peer"]["peak_rss_mb"] = peer.handle.rss.report()
        result["peer"]["log_tail"] = peer.handle.tail(15)
        result["peer"]["notes"] = peer.notes
        peer.handle.stop()
        assert peer.watcher is not None
        peer.watcher.stop()
    else:
        console.log(
            "[yellow]peer skipped: "
            + (
                "--no-peer"
                if args.no_peer
                else "quixstreams is not installed (pip install "
                "-e '.[bench]'; make bench does it in .venv-bench)"
            )
        )

    ours_tp = result["ours"].get("tx_per_s") if result["ours"].get("completed") else None
    peer_tp = (result["peer"] or {}).get("tx_per_s")
    result["ratios"] = {
        "ours_over_peer": ratio(ours_tp, peer_tp),
        "ours_over_ceiling": ratio(ours_tp, result["ceiling"].get("tx_per_s")),
        "peer_over_ceiling": ratio(peer_tp, result["ceiling"].get("tx_per_s")),
    }
    if not args.keep_topics:
        delete_topics(bootstrap, [tag])
    return result


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def fmt(value: Any, spec: str = ",.0f", suffix: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:{spec}}{suffix}"


def tables(summary: dict[str, Any], runs: int) -> list[Table]:
    """The throughput, latency and memory tables of ``summary`` (medians over ``runs``)."""
    note = f" (median of {runs} runs)" if runs > 1 else ""
    ratios = summary.get("ratios", {})
    tp = Table(title=f"Throughput from full topics{note}")
    for column in (
        "contender",
        "tx/s first→last output",
        "records/s",
        "tx/s from process start",
        "ours / this",
    ):
        tp.add_column(column, justify="right" if column != "contender" else "left")
    ours_tp = (summary.get("ours") or {}).get("tx_per_s")
    for key, label, ratio_key in (
        ("ceiling", "ceiling: confluent-kafka consume→produce, no work", "ours_over_ceiling"),
        ("peer", "peer: Quix Streams, same features and champion", "ours_over_peer"),
        ("ours", "ours: Faust worker, full pipeline", None),
    ):
        row = summary.get(key)
        if not row:
            tp.add_row(label, "—", "—", "—", "—")
            continue
        tp.add_row(
            label,
            fmt(row.get("tx_per_s")),
            fmt(row.get("records_per_s")),
            fmt(row.get("tx_per_s_from_start")),
            fmt(ratios.get(ratio_key) if ratio_key else ours_tp and 1.0, ".3f", TIMES),
        )
    lat = Table(title=f"Latency, produce → score at a consumer{note}")
    for column in (
        "contender",
        "offered tx/s",
        "kept up",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "backlog growth /s",
    ):
        lat.add_column(column, justify="right" if column != "contender" else "left")
    for key in ("ours", "peer"):
        phases = (summary.get(key) or {}).get("latency") or {}
        for label, phase in sorted(phases.items(), key=lambda kv: kv[1].get("offered_tx_per_s", 0)):
            latency = phase.get("latency") or {}
            kept = phase.get("sustained")
            lat.add_row(
                f"{key} ({label.replace('_', ' ')})",
                fmt(phase.get("offered_tx_per_s")),
                fmt(bool(kept >= 0.5) if isinstance(kept, float) else kept),
                fmt(latency.get("p50_ms"), ".1f"),
                fmt(latency.get("p95_ms"), ".1f"),
                fmt(latency.get("p99_ms"), ".1f"),
                fmt(phase.get("backlog_growth_per_s")),
            )
    mem = Table(title=f"Memory{note}")
    for column in (
        "contender",
        "peak RSS (MB) per process",
        "state",
        "entities",
        "mean B / entity",
        "max B / entity",
    ):
        mem.add_column(
            column,
            justify="right"
            if column in ("entities", "mean B / entity", "max B / entity")
            else "left",
        )
    for key in ("ceiling", "peer", "ours"):
        row = summary.get(key) or {}
        rss = ", ".join(f"{k} {v:,.0f}" for k, v in (row.get("peak_rss_mb") or {}).items())
        states = row.get("state") or {"—": {}}
        for i, (name, st) in enumerate(states.items()):
            mem.add_row(
                key if i == 0 else "",
                rss if i == 0 else "",
                name,
                fmt(st.get("entities")),
                fmt(st.get("mean_bytes")),
                fmt(st.get("max_bytes")),
            )
    broker = summary.get("broker_peak_rss_mb")
    if broker:
        mem.add_row("broker (JVM, whole run)", f"{broker:,.0f}", "", "", "", "")
    return [tp, lat, mem]


def markdown(table: Table) -> str:
    """A rich table as GitHub Markdown."""
    headers = [str(c.header) for c in table.columns]
    cells = [list(c.cells) for c in table.columns]
    lines = [
        f"**{table.title}**",
        "",
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---:" if c.justify == "right" else "---" for c in table.columns) + "|",
    ]
    for row in zip(*cells, strict=True):
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines) + "\n"


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])

    def git(*cmd: str) -> str:
        try:
            return subprocess.run(
                ["git", *cmd], cwd=ROOT, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    packages = ("faust-streaming", "aiokafka", "confluent-kafka", "quixstreams", "scikit-learn")
    for package in packages:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": round(mem_kb / 1e6, 1),
        "python": platform.python_version(),
        "git_head": git("rev-parse", "--short", "HEAD"),
        "uncommitted_in_stream_app": git("status", "--porcelain", "--", "stream_app").splitlines(),
        "packages": versions,
        "broker": "single-node Kafka (KRaft) on the same machine",
    }


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Throughput, latency and memory of the worker against a plain "
        "consume->produce loop and a Quix Streams peer, on the handbook workload.",
    )
    parser.add_argument(
        "--events", type=int, default=500_000, help="Transactions to preload (each with its label)."
    )
    parser.add_argument("--repeat", type=int, default=1, help="Runs; medians are reported.")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "bench.json")
    parser.add_argument(
        "--csv",
        type=Path,
        default=None,
        help="The handbook CSV (default: $FRAUD_HANDBOOK_DIR or "
        "../shared/datasets/fraud-handbook/transactions.csv.gz).",
    )
    parser.add_argument(
        "--models",
        type=Path,
        default=None,
        help="Use the newest -logreg (champion) and -hgb (challenger) of this "
        "models directory instead of training them.",
    )
    parser.add_argument(
        "--latency-seconds", type=float, default=15.0, help="Length of each fixed-rate phase."
    )
    parser.add_argument(
        "--drain-seconds", type=float, default=180.0, help="Longest wait for a phase's last scores."
    )
    parser.add_argument(
        "--stall-seconds",
        type=float,
        default=180.0,
        help="A contender whose output does not move this long has failed.",
    )
    parser.add_argument(
        "--rates",
        type=float,
        nargs="+",
        default=FIXED_RATES,
        help="Fixed offered rates (transactions/s) of the latency phases, besides half the "
        "measured maximum.",
    )
    parser.add_argument(
        "--worker-rev",
        default=None,
        help="Run the worker from this git revision (a clean export) instead of the working "
        "tree, e.g. HEAD: others' uncommitted edits are then not measured.",
    )
    parser.add_argument(
        "--ours-attempts",
        type=int,
        default=3,
        help="A worker whose output stalls is reported and started again on a fresh copy of "
        "the workload, up to this many times.",
    )
    parser.add_argument("--no-peer", action="store_true", help="Leave the Quix peer out.")
    parser.add_argument("--no-latency", action="store_true", help="Throughput and memory only.")
    parser.add_argument(
        "--keep-topics", action="store_true", help="Do not delete each run's topics at its end."
    )
    args = parser.parse_args(argv)
    if args.events < 1000:
        parser.error("--events must be at least 1000")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    csv = args.csv or default_csv_path()
    if not csv.is_file():
        raise SystemExit(
            f"the fraud-handbook dataset is missing: {csv} (set FRAUD_HANDBOOK_DIR or --csv)"
        )
    started = time.monotonic()
    started_at = datetime.now(UTC)
    load_at_start = os.getloadavg()
    console.rule(f"stream_app bench · {args.events:,} transactions + labels · {args.repeat} run(s)")
    runs: list[dict[str, Any]] = []
    worker_src: Path | None = None
    with tempfile.TemporaryDirectory(prefix="stream-app-bench-") as tmp:
        home = Path(tmp)
        port, controller = free_ports(2)
        broker = LocalBroker(home / "broker", port=port, controller_port=controller)
        with console.status("Starting a Kafka broker of our own…"):
            bootstrap = broker.start(timeout=180)
        console.log(f"broker on {bootstrap} (data in {home / 'broker'})")
        broker_rss: RssTracker | None = None
        broker_pid = broker.running_pid()
        if broker_pid:
            broker_rss = RssTracker(broker_pid, "broker")
        try:
            if args.models:
                models = args.models
                champion, challenger = existing_models(models)
            else:
                models = home / "models"
                champion, challenger = train_models(csv, models)
            console.log(f"champion {champion}, challenger {challenger}")
            worker_src = export_revision(args.worker_rev, home) if args.worker_rev else None
            for index in range(args.repeat):
                console.rule(f"run {index + 1} of {args.repeat}")
                runs.append(
                    one_run(
                        index, bootstrap, home, csv, models, champion, challenger, args, worker_src
                    )
                )
                if broker_rss is not None:
                    broker_rss.sample()
                    runs[-1]["broker_peak_rss_mb"] = broker_rss.report().get("broker")
        finally:
            broker.stop()
    summary = summarize(runs)
    wall_s = time.monotonic() - started
    document = {
        "started_at": started_at.isoformat(),
        "wall_seconds": wall_s,
        "machine": {
            **machine(),
            # Other work shares the machine: its load average when the run started and ended.
            "load_average_start": load_at_start,
            "load_average_end": os.getloadavg(),
        },
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "workload": {
            "csv": str(csv),
            "transactions": args.events,
            "labels": args.events,
            "partitions": PARTITIONS,
            "models": {"champion": champion, "challenger": challenger},
            "worker_source": worker_src.name.removeprefix("worker-")
            if worker_src
            else "working tree",
        },
        "runs": runs,
        "median": summary,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(document, indent=2, default=str) + "\n")
    rendered = tables(summary, len(runs))
    for table in rendered:
        console.print(table)
    md = args.json.with_suffix(".md")
    md.write_text(
        f"{started_at:%Y-%m-%d %H:%M} UTC · {args.events:,} transactions + labels · "
        f"{len(runs)} run(s) · {os.cpu_count()} cores, broker on the same machine · "
        f"wall time {wall_s / 60:.1f} min\n\n" + "\n".join(markdown(t) for t in rendered)
    )
    console.log(f"wall time {wall_s / 60:.1f} min · wrote {args.json} and {md}")


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over runs; ratios are medians of each run's own ratio."""
    if len(runs) == 1:
        return runs[0]
    out = median_of_runs(runs)
    for key in ("ours", "peer"):
        phases = [((r.get(key) or {}).get("latency") or {}) for r in runs]
        if out.get(key) is not None and any(phases):
            out[key]["latency"] = median_of_runs([p for p in phases if p])
    out["ratios"] = {
        k: median([r["ratios"][k] for r in runs if r["ratios"].get(k) is not None])
        if any(r["ratios"].get(k) is not None for r in runs)
        else None
        for k in runs[0]["ratios"]
    }
    return out


if __name__ == "__main__":
    main()
