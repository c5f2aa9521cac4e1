"""What the fault tests share: the stream, a worker child with a clock, and an independent verifier.

The verifier never asks the worker anything. It reads the topics with its own confluent-kafka
consumers (``scores``, ``transactions.dlq``, the tables' changelogs), the worker's RocksDB files
after it stopped, and the consumer group's committed offsets, and compares them with what the
project's offline builder (``stream_app.features.offline``) computes from the generated events.

A stream may carry labels (``make_stream(..., labels=True)``): each transaction's label follows
it 7 days later on the labels topic, the worker's event-time alignment applies a label before the
transactions after its label time, and the offline features count the labels, so every feature,
the terminal risk windows too, must match exactly. The kill -9 and exactly-once tests run over
more than the 37-day horizon with labels; the others without (every feature is then defined by
the transactions alone, and the terminal *count* windows still catch any transaction counted
twice after a replay).
"""

from __future__ import annotations

import dataclasses
import random
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import numpy as np
import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from stream_app.config import Settings
from stream_app.devtools.worker_process import WorkerProcess
from stream_app.features.definitions import FEATURE_NAMES, Aggregate, Entity, window_features
from stream_app.features.offline import build_features
from stream_app.features.state import CustomerState, Retention, TerminalState, state_view
from stream_app.io.topics import ensure_topics
from stream_app.pipeline.forward import forward_view
from stream_app.sources.producer import BulkProducer
from stream_app.sources.schedule import Record, batch_from_events, schedule
from stream_app.sources.simulator import LabelledTransaction, simulate

T = TypeVar("T")
BATCH_MAX = 500  # Settings.batch_max default, set explicitly so the duplicate bound can use it
COMMIT_INTERVAL_S = 2.8  # Faust's broker_commit_interval default, set explicitly likewise
SESSION_TIMEOUT_S = 10.0  # see worker_env
# Scores of one by-terminal record produced twice by ONE worker life (no restart in between; a
# life that scores a record and stage 1's re-forward of it scores two records: split_duplicates).
# Tolerated (200) while Faust 0.15.3 resumed the stream partitions before seeking them after a
# table recovery, handing out records it then delivered again; the worker seeks first since
# (stream_app/faust_ext/recovery.py), so none may be.
SAME_LIFE_MAX = 0


# --- the stream ---------------------------------------------------------------------------------


LABEL_LEAD = timedelta(hours=6)
"""Each label is published this much event time before its ``label_time`` (about 0.5 s at 1,000
payments/s): the tests compare every live feature with the offline builder's, which uses a label
from its ``label_time`` on, and a producer can append a label a few milliseconds after a
transaction produced after it (partitions' batches leave on their own). Published on the dot
(paced: ``linger.ms`` 0, one request in flight), labels still came after a later forward
(``stream_app_labels_late_total``) in 3 of 9 kill -9 runs (4, 65 and 112 of ~100,000); the worker
takes a label at its ``label_time`` however early it arrives."""


@dataclass
class Stream:
    """Generated transactions in event-time order, their Kafka records and offline features;
    with ``labels``, each transaction's label follows it 7 days later (``schedule``), on the
    labels topic, and the offline features count them (the terminal risk windows)."""

    items: list[LabelledTransaction]
    labels: bool = False

    @cached_property
    def records(self) -> list[Record]:
        return list(schedule(self.items, labels=self.labels, label_lead=LABEL_LEAD))

    @cached_property
    def event_ids(self) -> list[str]:
        return [item.event["event_id"] for item in self.items]

    @cached_property
    def offline(self) -> dict[str, np.ndarray]:
        """event_id -> the offline builder's feature row (FEATURE_NAMES order)."""
        batch = batch_from_events(self.items)
        if not self.labels:
            batch = dataclasses.replace(batch, label=None)
        matrix = build_features(batch)
        return dict(zip(batch.event_id, matrix, strict=True))

    @property
    def days(self) -> float:
        """The event time the stream spans."""
        first, last = (datetime.fromisoformat(self.items[i].event["event_time"]) for i in (0, -1))
        return (last - first).total_seconds() / 86_400

    def slice(self, start: int, stop: int) -> list[Record]:
        return self.records[start:stop]


def make_stream(
    n_events: int,
    seed: int,
    n_customers: int = 2000,
    n_terminals: int = 2000,
    labels: bool = False,
):
    """``n_events`` simulated payments (2,000 customers at ~2/day: 100 k events span ~26 days,
    so every 1/7/30-day customer window and the 7-day-delayed terminal windows are populated;
    fewer customers stretch the same count over more days)."""
    return Stream(
        list(
            simulate(
                n_customers=n_customers,
                n_terminals=n_terminals,
                n_events=n_events,
                seed=seed,
                start=datetime(2026, 3, 1, tzinfo=UTC),
            )
        ),
        labels,
    )


def publish(settings: Settings, records: Iterable[Record], rate: float = 0.0) -> int:
    """Produce ``records`` (at ``rate`` events/s, 0 = as fast as possible); returns the count.
    Creates the declared topics first (as the worker does), so none is auto-created."""
    ensure_topics(settings)
    n = 0
    with BulkProducer(settings, rate=rate) as producer:
        for record in records:
            producer.produce(settings.topic(record.topic), record.key, record.value)
            n += 1
    return n


class BackgroundPublisher(threading.Thread):
    """Publishes records at a steady rate in a thread; ``error`` holds what stopped it."""

    def __init__(
        self,
        settings: Settings,
        records: Sequence[Record],
        rate: float,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(daemon=True, name="fault-publisher")
        self.settings, self.records, self.rate = settings, records, rate
        self.config = {"message.timeout.ms": 120_000, **(config or {})}
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            ensure_topics(self.settings)
            with BulkProducer(self.settings, rate=self.rate, config=self.config) as producer:
                for record in self.records:
                    producer.produce(self.settings.topic(record.topic), record.key, record.value)
                    self.sent += 1
        except BaseException as exc:  # reported by the test
            self.error = exc


# --- the worker ----------------------------------------------------------------------------------


def worker_env(app_env: Mapping[str, str], **extra: str) -> dict[str, str]:
    """The integration worker environment as production runs it (RocksDB, as in compose), plus
    the features in every envelope, and explicit batch/commit settings for the duplicate bound.

    ``BROKER_SESSION_TIMEOUT`` (Faust reads it from the environment) is lowered from 60 s to 10 s:
    a SIGKILLed consumer never leaves its group, so its successor waits one session timeout for
    the coordinator to drop it; at 60 s five kills would cost five minutes of waiting alone.

    The repartition topic is not purged (``STREAM_APP_REPARTITION_PURGE_S=0``): the verifier reads
    all of ``transactions.by-terminal`` afterwards, to know what each kill left in flight.
    """
    return {
        **app_env,
        "STREAM_APP_STORE": "rocksdb",
        "STREAM_APP_EMIT_FEATURES": "true",
        "STREAM_APP_BATCH_MAX": str(BATCH_MAX),
        "STREAM_APP_STATS_INTERVAL_S": "5",
        "BROKER_COMMIT_INTERVAL": str(COMMIT_INTERVAL_S),
        "BROKER_SESSION_TIMEOUT": str(SESSION_TIMEOUT_S),
        "BROKER_HEARTBEAT_INTERVAL": "1.0",
        "STREAM_APP_REPARTITION_PURGE_S": "0",
        **extra,
    }


@dataclass
class Epoch:
    """One life of the worker process: wall-clock start and end, how it ended, peak RSS."""

    started: float
    ended: float | None = None
    how: str = ""
    exit_code: int | None = None
    ready_after_s: float | None = None
    peak_rss_mb: float = 0.0


class Worker(WorkerProcess):
    """A worker child that records each start/stop on the wall clock (``time.time()``, the
    clock of the envelopes' ``scored_at``) and samples its RSS."""

    def __init__(self, home: Path, env: Mapping[str, str]) -> None:
        super().__init__(home, env)
        self.epochs: list[Epoch] = []
        self.web_port = int(env["STREAM_APP_WEB_PORT"])

    def start(self, extra_args: tuple[str, ...] = ()) -> None:
        self.epochs.append(Epoch(started=time.time()))
        super().start(extra_args)

    def wait_ready(self, timeout: float = 90.0) -> float:
        took = super().wait_ready(timeout)
        self.epochs[-1].ready_after_s = took
        return took

    def sample_rss(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                mb = int(line.split()[1]) / 1024
                self.epochs[-1].peak_rss_mb = max(self.epochs[-1].peak_rss_mb, mb)

    def kill(self) -> None:
        self.sample_rss()
        super().kill()
        self.epochs[-1].ended, self.epochs[-1].how = time.time(), "SIGKILL"
        self.epochs[-1].exit_code = self.proc.returncode if self.proc else None

    def stop(self, timeout: float = 30.0) -> int | None:
        alive = self.running
        if alive:
            self.sample_rss()
        code = super().stop(timeout)
        if alive:
            self.epochs[-1].ended, self.epochs[-1].how = time.time(), "SIGTERM"
            self.epochs[-1].exit_code = code
        return code

    def sigterm(self, timeout: float = 60.0) -> tuple[int | None, float]:
        """SIGTERM and wait: (exit code, seconds to exit); code None when it did not exit in
        ``timeout`` (it is then SIGKILLed)."""
        assert self.proc is not None and self.running
        self.sample_rss()
        signalled = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code: int | None = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
        took = time.monotonic() - signalled
        super().stop(10.0)
        self.epochs[-1].ended, self.epochs[-1].how = time.time(), "SIGTERM"
        self.epochs[-1].exit_code = code
        return code, took

    def ensure_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(
                f"worker exited on its own with {self.proc.returncode}:\n{self.tail(40)}"
            )

    def readyz(self) -> tuple[int | None, dict[str, Any] | None]:
        """(status, body) of GET /readyz; (None, None) while nothing answers."""
        url = f"http://127.0.0.1:{self.web_port}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                return response.status, orjson.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, orjson.loads(exc.read() or b"null")
        except (OSError, ValueError):
            return None, None

    @property
    def state_dir(self) -> Path:
        return Path(self.env["STREAM_APP_STATE_DIR"])

    def wipe_state(self) -> None:
        assert not self.running
        shutil.rmtree(self.state_dir)


# --- reading topics ------------------------------------------------------------------------------


def _consumer(
    bootstrap: str, group: str | None = None, isolation: str = "read_committed"
) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group or f"fault-verify-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "socket.connection.setup.timeout.ms": 3000,
            "isolation.level": isolation,  # librdkafka's default, named: read_committed
        }
    )


class TopicWatch:
    """Record counts (sum of log-end offsets) of topics, and a group's committed offsets."""

    def __init__(self, bootstrap: str) -> None:
        self.consumer = _consumer(bootstrap)
        self._partitions: dict[str, list[int]] = {}

    def partitions(self, topic: str) -> list[int]:
        if topic not in self._partitions:
            meta = self.consumer.list_topics(topic, timeout=5).topics.get(topic)
            if meta is None or meta.error is not None or not meta.partitions:
                return []
            self._partitions[topic] = sorted(meta.partitions)
        return self._partitions[topic]

    def ends(self, topic: str) -> dict[int, int]:
        return {
            p: self.consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1]
            for p in self.partitions(topic)
        }

    def count(self, topic: str) -> int | None:
        """Records ever written to ``topic``; None while the broker does not answer."""
        try:
            return sum(self.ends(topic).values())
        except KafkaException:
            return None

    def close(self) -> None:
        self.consumer.close()


def wait_for_count(
    watch: TopicWatch, topic: str, n: int, worker: Worker, timeout: float = 300.0
) -> None:
    """Until ``topic`` holds ``n`` records, sampling the worker's RSS; fails if it dies."""
    deadline = time.monotonic() + timeout
    while (watch.count(topic) or 0) < n:
        assert time.monotonic() < deadline, f"{topic} did not reach {n:,} records in {timeout} s"
        worker.ensure_alive()
        worker.sample_rss()
        time.sleep(0.1)


def kill_and_restart(
    worker: Worker,
    watch: TopicWatch,
    topic: str,
    moments: Iterable[int],
    kill: Callable[[], T],
) -> list[T]:
    """Start the worker; each time ``topic`` holds the next of ``moments`` records, ``kill`` it
    (``kill`` kills the worker and returns what it measured) and start it again at once."""
    worker.start()
    worker.wait_ready()
    measured = []
    for moment in moments:
        wait_for_count(watch, topic, moment, worker)
        measured.append(kill())
        worker.start()
        worker.wait_ready()
    return measured


def committed(bootstrap: str, group: str, topic: str, partitions: Iterable[int]) -> dict[int, int]:
    """The offsets ``group`` committed on ``topic`` (-1 for none). Reads, never joins the group."""
    consumer = _consumer(bootstrap, group)
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        consumer.close()


class Msg(NamedTuple):
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def read_all(
    bootstrap: str, topic: str, timeout: float = 120.0, isolation: str = "read_committed"
) -> list[Msg]:
    """Every record of ``topic`` up to its log end as of the call (``read_committed``: the
    records of committed transactions and those written outside any; a transaction's commit or
    abort marker takes an offset no record has, so the read ends on the consumer's position)."""
    watch = TopicWatch(bootstrap)
    try:
        ends = {p: e for p, e in watch.ends(topic).items() if e > 0}
    finally:
        watch.close()
    out: list[Msg] = []
    if not ends:
        return out
    consumer = _consumer(bootstrap, isolation=isolation)
    assigned = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends]
    consumer.assign(assigned)
    position = dict.fromkeys(ends, 0)  # next offset to read
    deadline = time.monotonic() + timeout
    try:
        while any(position[p] < ends[p] for p in ends):
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {topic} to its end: {position} vs {ends}")
            for msg in consumer.consume(5000, timeout=0.5):
                if msg.error() is None and msg.offset() < ends[msg.partition()]:
                    position[msg.partition()] = msg.offset() + 1
                    out.append(Msg(msg.partition(), msg.offset(), msg.key(), msg.value()))
            for tp in consumer.position([TopicPartition(topic, p) for p in ends]):
                if tp.offset >= 0:  # past markers and aborted records too
                    position[tp.partition] = max(position[tp.partition], tp.offset)
    finally:
        consumer.close()
    return out


def changelog_view(table: str, value: bytes) -> dict[str, Any]:
    """A table value (an entity state's bytes) as its JSON view."""
    kind = CustomerState if table.startswith("customer") else TerminalState
    return state_view(value, kind)


def changelog(bootstrap: str, app_id: str, table: str) -> dict[str, Any]:
    """A table as its changelog holds it: the last value of every key (tombstones dropped)."""
    state: dict[str, Any] = {}
    for _, _, key, value in read_all(bootstrap, f"{app_id}-{table}-changelog"):
        if value is None:
            state.pop(orjson.loads(key), None)
        else:
            state[orjson.loads(key)] = changelog_view(table, value)
    return state


def rocksdb_tables(state_dir: Path, app_id: str, table: str) -> dict[str, Any]:
    """A table as the stopped worker's RocksDB files hold it (all partitions)."""
    from rocksdict import AccessType, Options, Rdict

    tables = state_dir / f"{app_id}-data" / "v1" / "tables"
    state: dict[str, Any] = {}
    for path in sorted(tables.glob(f"{table}-*.db")):
        db = Rdict(str(path), options=Options(raw_mode=True), access_type=AccessType.read_only())
        try:
            for key, value in db.items():
                if key.startswith(b"__faust"):
                    continue
                state[orjson.loads(key)] = changelog_view(table, value)
        finally:
            db.close()
    return state


class ScoreTail:
    """Follows ``scores`` from the beginning, keeping each envelope's event id and scored_at."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.consumer = _consumer(bootstrap)
        self.consumer.subscribe([topic])
        self.seen: Counter[str] = Counter()
        self.n = 0

    def poll(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            for msg in self.consumer.consume(5000, timeout=min(left, 0.5)):
                if msg.error() is None:
                    self.seen[orjson.loads(msg.value())["event_id"]] += 1
                    self.n += 1

    def wait_covered(
        self, event_ids: Iterable[str], timeout: float, worker: Worker | None = None
    ) -> None:
        """Until every one of ``event_ids`` has a score (AssertionError after ``timeout``)."""
        wanted = set(event_ids)
        deadline = time.monotonic() + timeout
        while True:
            missing = wanted.difference(self.seen)
            if not missing:
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{len(missing):,} of {len(wanted):,} events have no score after "
                    f"{timeout:.0f} s, e.g. {sorted(missing)[:5]}"
                )
            if worker is not None:
                worker.ensure_alive()
                worker.sample_rss()
            self.poll(1.0)

    def close(self) -> None:
        self.consumer.close()


# --- checking ------------------------------------------------------------------------------------


@dataclass
class Envelope:
    event_id: str
    scored_at: float  # epoch seconds
    features: dict[str, float]
    partition: int
    offset: int


def envelopes(bootstrap: str, topic: str) -> list[Envelope]:
    out = []
    for msg in read_all(bootstrap, topic):
        env = orjson.loads(msg.value or b"")
        out.append(
            Envelope(
                env["event_id"],
                datetime.fromisoformat(env["scored_at"]).timestamp(),
                env["features"],
                msg.partition,
                msg.offset,
            )
        )
    return out


@dataclass
class ScoreCheck:
    """Envelopes against the input: lost, duplicated, features unequal to the offline ones."""

    events: int
    scores: int
    lost: list[str]
    unknown: list[str]
    duplicates: int  # scores beyond the first per event
    duplicated_events: int
    mismatches: list[str] = field(default_factory=list)  # "event_id FEATURE live offline"
    compared: int = 0  # envelopes whose 15 features were compared

    def assert_sound(self) -> None:
        """Every event scored, no score for a stranger, every envelope's features compared and
        equal to the offline ones."""
        assert not self.lost, f"{len(self.lost)} events never scored, e.g. {self.lost[:5]}"
        assert not self.unknown, f"scores of events never published, e.g. {self.unknown[:5]}"
        assert self.compared == self.scores
        assert not self.mismatches, (len(self.mismatches), self.mismatches[:10])

    def summary(self) -> str:
        return (
            f"{self.events:,} events, {self.scores:,} scores, lost {len(self.lost)}, "
            f"duplicates {self.duplicates:,} (on {self.duplicated_events:,} events), "
            f"features compared on {self.compared:,} envelopes, mismatches {len(self.mismatches)}"
        )


def check_scores(stream: Stream, envs: Sequence[Envelope], event_ids=None) -> ScoreCheck:
    """Compare every envelope (duplicates included) with the offline features, exactly."""
    wanted = list(stream.event_ids if event_ids is None else event_ids)
    counts = Counter(e.event_id for e in envs)
    offline = stream.offline
    check = ScoreCheck(
        events=len(wanted),
        scores=len(envs),
        lost=[eid for eid in wanted if counts[eid] == 0],
        unknown=sorted(eid for eid in counts if eid not in offline),
        duplicates=sum(c - 1 for c in counts.values() if c > 1),
        duplicated_events=sum(1 for c in counts.values() if c > 1),
    )
    names = list(FEATURE_NAMES)
    for env in envs:
        row = offline.get(env.event_id)
        if row is None:
            continue
        check.compared += 1
        live = [env.features[name] for name in names]
        if live != row.tolist():
            for name, a, b in zip(names, live, row.tolist(), strict=True):
                if a != b:
                    check.mismatches.append(f"{env.event_id} {name} live={a!r} offline={b!r}")
    return check


@dataclass
class TerminalLateness:
    """Terminal-count features that differ from the offline ones, sorted out by the order in
    which the terminal stage received the transactions (``transactions.by-terminal``)."""

    double: list[str] = field(default_factory=list)  # live above offline: counted twice
    unexplained: list[str] = field(default_factory=list)  # below what had arrived before it
    late: int = 0  # envelopes whose window missed transactions that arrived after them
    max_lag_days: float = 0.0  # event time by which a late transaction trailed the event


def terminal_lateness(
    stream: Stream, envs: Sequence[Envelope], by_terminal: Sequence[Msg]
) -> tuple[TerminalLateness, list[str]]:
    """Explain envelopes whose TERMINAL_ID_NB_TX_* differ from the offline builder's.

    The terminal stage reads each by-terminal partition in offset order, and stage 1 feeds it
    from three transactions partitions that progress unevenly during a backlog, so a transaction
    can reach its terminal after a later event of that terminal was scored: that event's window
    then lacks it, while the offline builder, in event-time order, has it. Such a deficit is
    explained when the live count is at least the number of window transactions whose first
    by-terminal copy precedes the event's own first copy. Above the offline count is a double
    count. Returns the sorting and the other mismatches (any other feature: always wrong).
    """
    first: dict[str, tuple[int, int]] = {}
    for msg in by_terminal:
        eid = forward_view(msg.value or b"")["event_id"]
        if eid not in first or (msg.partition, msg.offset) < first[eid]:
            first[eid] = (msg.partition, msg.offset)
    info = {
        item.event["event_id"]: (
            item.event["terminal_id"],
            datetime.fromisoformat(item.event["event_time"]).timestamp(),
        )
        for item in stream.items
    }
    by_terminal_events: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for eid, (tid, ts) in info.items():
        by_terminal_events[tid].append((ts, eid))
    counts = {f.name: f for f in window_features(Entity.TERMINAL) if f.aggregate is Aggregate.COUNT}
    names = list(FEATURE_NAMES)
    offline = stream.offline
    out, other = TerminalLateness(), []
    for env in envs:
        row = offline.get(env.event_id)
        if row is None:
            continue
        late_here = False
        for name, expected in zip(names, row.tolist(), strict=True):
            live = env.features[name]
            if live == expected:
                continue
            mismatch = f"{env.event_id} {name} live={live!r} offline={expected!r}"
            if name not in counts:
                other.append(mismatch)
                continue
            if live > expected:
                out.double.append(mismatch)
                continue
            tid, ts = info[env.event_id]
            start, end = counts[name].bounds(ts)
            window = [(t, e) for t, e in by_terminal_events[tid] if start < t <= end]
            before = sum(first[e] < first[env.event_id] for _, e in window)
            if live < before:
                out.unexplained.append(f"{mismatch} (arrived before it: {before})")
                continue
            late_here = True
            lag = max(ts - t for t, e in window if first[e] > first[env.event_id])
            out.max_lag_days = max(out.max_lag_days, lag / 86_400)
        out.late += late_here
    return out, other


def expected_states(stream: Stream, n: int, lateness_s: float = 3600.0):
    """What the tables must hold after the first ``n`` events, recomputed offline:
    customer id -> (times, amounts) with the worker's retention, and terminal id -> its
    (event_id, time) pairs in event-time order, all of them (the verifier checks suffixes)."""
    retention = Retention.for_lateness(lateness_s)
    customers: dict[str, CustomerState] = {}
    histories: dict[str, CustomerState] = {}
    terminals: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for item in stream.items[:n]:
        event = item.event
        ts = datetime.fromisoformat(event["event_time"]).timestamp()
        amount = float(event["amount"])
        state = customers.setdefault(event["customer_id"], CustomerState())
        state.apply(ts, amount, -1, retention.customer_s)
        history = histories.setdefault(event["customer_id"], CustomerState())
        history.apply(ts, amount, -1, float("inf"))
        terminals[event["terminal_id"]].append((event["event_id"], ts))
    return customers, histories, terminals


def _key_differences(entity: str, got: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    differ = set(got) ^ set(expected)
    return [f"{entity} keys differ: {len(differ)} not in both tables"] if differ else []


def table_problems(bootstrap: str, app_id: str, stream: Stream, n: int) -> list[str]:
    """:func:`check_states` on the tables as their changelogs hold them."""
    return check_states(
        stream,
        n,
        changelog(bootstrap, app_id, "customer-state"),
        changelog(bootstrap, app_id, "terminal-state"),
    )


def check_states(
    stream: Stream, n: int, customer: Mapping[str, Any], terminal: Mapping[str, Any]
) -> list[str]:
    """Problems in the tables' contents after the first ``n`` events (empty when right).

    Eviction follows the replay floor (``stream_app.pipeline.floors``: the event time at the last
    committed offset), which may trail an entity's newest event by what one commit interval
    covered, so an entity must hold a time-ordered *suffix* of its offline history: every event
    at or after its oldest kept time, each exactly once, at its event time; a customer at least
    what the offline recomputation with the worker's retention keeps (its own newest event less
    the retention).
    """
    customers, histories, terminals = expected_states(stream, n)
    problems = _key_differences("customer", customer, customers)
    for cid, expected in customers.items():
        got = customer.get(cid)
        if got is None:
            continue
        full = histories[cid].value
        oldest = got["t"][0] if got["t"] else float("inf")
        start = next((i for i, t in enumerate(full["t"]) if t >= oldest), len(full["t"]))
        if (
            got["t"] != full["t"][start:]
            or got["a"] != full["a"][start:]
            or len(got["t"]) < len(expected.value["t"])
        ):
            problems.append(
                f"customer {cid}: {len(got['t'])} samples, expected {len(expected.value['t'])} "
                f"or a longer suffix of its {len(full['t'])}"
            )
    problems += _key_differences("terminal", terminal, terminals)
    for tid, history in terminals.items():
        got = terminal.get(tid)
        if got is None:
            continue
        ids, times = got["i"], got["t"]
        dupes = [eid for eid, c in Counter(ids).items() if c > 1]
        if dupes:
            problems.append(f"terminal {tid}: counted twice: {dupes[:5]}")
            continue
        oldest = times[0] if times else float("inf")
        suffix = [(eid, ts) for eid, ts in history if ts >= oldest]
        if sorted(zip(ids, times, strict=True), key=lambda x: (x[1], x[0])) != sorted(
            suffix, key=lambda x: (x[1], x[0])
        ):
            problems.append(f"terminal {tid}: {len(ids)} samples, expected {len(suffix)}")
    return problems


def spread_moments(rng: random.Random, k: int, lo: float, hi: float) -> list[float]:
    """``k`` random points in ``[lo, hi)``, one uniformly in each of ``k`` equal strata."""
    width = (hi - lo) / k
    return [lo + width * (i + rng.random()) for i in range(k)]


def first_after(envs: Sequence[Envelope], moment: float) -> float | None:
    """scored_at of the first envelope produced after ``moment``."""
    later = [e.scored_at for e in envs if e.scored_at > moment]
    return min(later) if later else None


# --- duplicates after a kill ---------------------------------------------------------------------


@dataclass
class KillPoint:
    """The logs and the group's commits right after a SIGKILL (the dead member commits no more)."""

    killed_at: float
    scores_end: dict[int, int]
    by_terminal_end: dict[int, int]
    tx_committed: dict[int, int]
    bt_committed: dict[int, int]


def kill_point(watch: TopicWatch, bootstrap: str, settings: Settings) -> KillPoint:
    killed_at = time.time()
    tx, bt = settings.topic("transactions"), settings.topic("transactions.by-terminal")
    by_terminal_end = watch.ends(bt)
    return KillPoint(
        killed_at,
        watch.ends(settings.topic("scores")),
        by_terminal_end,
        committed(bootstrap, settings.app_id, tx, watch.partitions(tx)),
        committed(bootstrap, settings.app_id, bt, by_terminal_end),
    )


def in_flight(
    point: KillPoint, envs: Sequence[Envelope], by_terminal: Sequence[Msg]
) -> tuple[int, int]:
    """Scores the restart must produce again: what was processed after the last commit.

    Stage 1 re-reads ``transactions`` from its committed offset and forwards again everything up
    to the newest record it had forwarded (each by-terminal record names its source offset): one
    extra score each. Stage 2 re-reads ``transactions.by-terminal`` from its committed offset: every
    record there whose event already had a score is scored again. Returns (stage 1, stage 2).
    """
    scored = {e.event_id for e in envs if e.offset < point.scores_end.get(e.partition, 0)}
    newest: dict[int, int] = {}
    stage2 = 0
    for msg in by_terminal:
        if msg.offset >= point.by_terminal_end.get(msg.partition, 0):
            continue
        fwd = forward_view(msg.value or b"")
        source_partition, source_offset = fwd["source_partition"], fwd["source_offset"]
        newest[source_partition] = max(newest.get(source_partition, -1), source_offset)
        if msg.offset >= max(point.bt_committed.get(msg.partition, -1), 0):
            stage2 += fwd["event_id"] in scored
    stage1 = sum(max(0, newest.get(p, -1) + 1 - max(c, 0)) for p, c in point.tx_committed.items())
    return stage1, stage2


def duplicates_per_epoch(envs: Sequence[Envelope], epochs: Sequence[Epoch]) -> list[int]:
    """Scores beyond an event's first, by the worker life that produced them (scored_at)."""
    first: dict[str, float] = {}
    for env in sorted(envs, key=lambda e: e.scored_at):
        first.setdefault(env.event_id, env.scored_at)
    out = [0] * len(epochs)
    for env in envs:
        if env.scored_at > first[env.event_id]:
            out[max(i for i, e in enumerate(epochs) if e.started <= env.scored_at)] += 1
    return out


def forward_copies(by_terminal: Sequence[Msg]) -> Counter[str]:
    """event_id -> its records on ``transactions.by-terminal`` (more than one when stage 1
    re-read and forwarded it again after a kill)."""
    return Counter(forward_view(m.value or b"")["event_id"] for m in by_terminal)


def split_duplicates(
    envs: Sequence[Envelope], epochs: Sequence[Epoch], copies: Mapping[str, int] | None = None
) -> tuple[list[int], list[int]]:
    """Every score of an event beyond its first, by the worker life that produced it: (those a
    restart explains, those of a record one life scored twice), each a count per life.

    A score is a restart's when no earlier copy comes from the same life, or when the life has
    scored the event fewer times than it has by-terminal records (``copies``, from
    :func:`forward_copies`; 1 each without it): a life that reaches both a record and stage 1's
    re-forward of it (left in flight by a kill, appended far behind where stage 2 reads) scores
    each once. Copies are ordered by scored_at, then partition and offset, so two copies of one
    envelope (same scored_at) count too."""
    copies = copies or {}
    lives: dict[str, list[int]] = defaultdict(list)
    after_restart, same_life = [0] * len(epochs), [0] * len(epochs)
    for env in sorted(envs, key=lambda e: (e.scored_at, e.partition, e.offset)):
        life = max(i for i, e in enumerate(epochs) if e.started <= env.scored_at)
        earlier = lives[env.event_id]
        if earlier:
            twice = earlier.count(life) >= copies.get(env.event_id, 1)
            (same_life if twice else after_restart)[life] += 1
        earlier.append(life)
    return after_restart, same_life


def peak_rate(envs: Sequence[Envelope], window_s: float = 5.0) -> float:
    """Highest scores/s over any ``window_s`` of the run."""
    times = sorted(e.scored_at for e in envs)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] > window_s:
            lo += 1
        best = max(best, hi - lo + 1)
    return best / window_s
