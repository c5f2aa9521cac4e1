"""Where the worker's main-thread CPU goes, per transaction, on the handbook workload (py-spy).

What it measures: one ``stream-app worker`` process (full pipeline: both stages, changelogged
tables, champion, the challenger in shadow unless ``--no-challenger``, drift) scoring the first
``--events`` handbook transactions and their labels from full topics, sampled by py-spy. Every
main-thread sample is put in one step of the rule table in ``bench/profile_steps.py`` (decode,
stage state and features, predict_proba, envelopes, changelog writes, produce, Faust's per-event
machinery, the event loop, ...); a step's µs per transaction is its share of the main thread's
busy (non-idle) samples x the main thread's CPU seconds (from ``/proc``) / transactions scored.

How, against a Kafka broker of its own (free ports, temporary directory, stopped by its pid):

1. Models: ``--models DIR`` reuses the newest -logreg (champion) and -hgb (challenger) of DIR;
   otherwise the handbook protocol's two are trained (about 2 min) into a temporary directory,
   or into ``--save-models DIR``, which is kept.
2. The first ``--events`` transactions and all their labels are preloaded into 6-partition
   topics under a fresh prefix (``bench.harness.prepare``).
3. One worker starts (``--worker-rev REV``: from a clean ``git archive`` of REV; ``--env K=V``:
   extra settings). **py-spy attaches once the worker logs Ready** (start-up, imports and model
   loading are left out; what the worker scored before py-spy sampled is subtracted):
   ``py-spy record --pid PID --format raw --rate 250 --threads --idle``. ``/proc/PID/task/*/stat``
   gives each thread's CPU seconds over the same window.
4. A consumer counts score envelopes until ``--events`` have arrived (no progress for
   ``--stall-seconds`` fails the run), then py-spy is stopped (SIGINT: it writes its file), then
   the worker.
5. The main thread's samples (tid == pid) are classified, printed and written to ``--json``
   (default ``bench/results/profile.json``), a Markdown copy beside it, and the raw py-spy file
   (``--raw``, default beside the JSON) is kept so that ``--reaggregate`` can classify it again
   after the rule table changes.

    .venv/bin/python -m bench.profile [--events 200000] [--models DIR] [--no-challenger]
    .venv/bin/python bench/profile.py --reaggregate RAW --cpu-seconds S --transactions N
    make profile PROFILE_ARGS="--events 50000 --models /work/profile-models"

Needs py-spy in the venv (``.venv/bin/pip install py-spy``), root or ptrace rights over the
worker, and the fraud-handbook dataset (``$FRAUD_HANDBOOK_DIR`` or
``../shared/datasets/fraud-handbook/transactions.csv.gz``).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    # Run as a script: Python put bench/ first on sys.path, where this file would stand in for
    # the standard library's ``profile`` module (cProfile imports it). The repository instead.
    _bench = (ROOT / "bench").resolve()
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _bench]
    sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import json  # noqa: E402
import linecache  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from dataclasses import asdict  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from typing import Any  # noqa: E402

from rich.table import Table  # noqa: E402

from bench.harness import (  # noqa: E402
    PARTITIONS,
    OutputWatcher,
    console,
    descendants,
    existing_models,
    export_revision,
    machine,
    markdown,
    prepare,
    process_name,
    progress_bar,
    train_models,
)
from bench.profile_steps import (  # noqa: E402
    GC,
    IDLE,
    STEPS,
    Breakdown,
    Stack,
    breakdown,
    has_native_frames,
    main_thread_id,
    only_thread,
    parse_raw,
    thread_samples,
    with_source,
)
from stream_app.broker import LocalBroker, free_port, free_ports  # noqa: E402
from stream_app.devtools.worker_process import WorkerProcess  # noqa: E402
from stream_app.sources.handbook_csv import default_csv_path  # noqa: E402

RATE = 250
RESULTS = ROOT / "bench" / "results"
TICKS = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------------------------
# /proc: CPU seconds per thread and per process
# --------------------------------------------------------------------------------------------


def _stat_cpu(stat: str) -> tuple[str, float]:
    """(comm, utime + stime in seconds) of a ``/proc/.../stat`` line."""
    name = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()
    return name, (int(fields[11]) + int(fields[12])) / TICKS


def thread_times(pid: int) -> dict[int, tuple[str, float]]:
    """``{tid: (thread name, CPU seconds)}`` of every live thread of ``pid``."""
    out: dict[int, tuple[str, float]] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            out[int(tid)] = _stat_cpu(Path(f"/proc/{pid}/task/{tid}/stat").read_text())
        except (OSError, ValueError):
            continue  # the thread ended meanwhile
    return out


def process_cpu_s(pid: int) -> float | None:
    """CPU seconds of the whole process (ended threads included), or None when it is gone."""
    try:
        return _stat_cpu(Path(f"/proc/{pid}/stat").read_text())[1]
    except (OSError, ValueError):
        return None


class CpuWatch:
    """Per-thread CPU of a process, sampled now and then: threads that end between two samples
    keep their last reading; the window's figure is the last reading minus the first."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.start: dict[int, tuple[str, float]] = {}
        self.latest: dict[int, tuple[str, float]] = {}
        self.process_start: float | None = None
        self.process_end: float | None = None
        self.children_start: dict[int, float] = {}
        self.children_latest: dict[int, tuple[str, float]] = {}
        self.load_max = os.getloadavg()[0]  # the machine's 1-minute load, highest seen

    def begin(self) -> None:
        self.start = thread_times(self.pid)
        self.latest = dict(self.start)
        self.process_start = process_cpu_s(self.pid)
        for child in descendants(self.pid):
            cpu = process_cpu_s(child)
            if cpu is not None:
                self.children_start[child] = cpu
                self.children_latest[child] = (process_name(child), cpu)

    def sample(self) -> None:
        self.load_max = max(self.load_max, os.getloadavg()[0])
        self.latest.update(thread_times(self.pid))
        cpu = process_cpu_s(self.pid)
        if cpu is not None:
            self.process_end = cpu
        for child in descendants(self.pid):
            cpu = process_cpu_s(child)
            if cpu is not None:
                name = self.children_latest.get(child, (process_name(child), 0.0))[0]
                self.children_latest[child] = (name, cpu)

    def threads(self) -> dict[int, tuple[str, float]]:
        """``{tid: (name, CPU seconds in the window)}``."""
        return {
            tid: (name, cpu - self.start.get(tid, (name, 0.0))[1])
            for tid, (name, cpu) in self.latest.items()
        }

    def children(self) -> dict[str, float]:
        """CPU seconds in the window per child process name (the challenger's process...)."""
        out: dict[str, float] = {}
        for pid, (name, cpu) in self.children_latest.items():
            out[name] = out.get(name, 0.0) + cpu - self.children_start.get(pid, 0.0)
        return out


# --------------------------------------------------------------------------------------------
# py-spy
# --------------------------------------------------------------------------------------------


def pyspy_binary() -> str:
    """The py-spy beside this interpreter, else on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    if beside.exists():
        return str(beside)
    found = shutil.which("py-spy")
    if not found:
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
    return found


class PySpy:
    """``py-spy record`` on a pid, its output in a log file, stopped by SIGINT to its pid."""

    def __init__(self, pid: int, raw: Path, log: Path, idle: bool, native: bool) -> None:
        self.raw = raw
        self.log = log
        self.argv = [
            pyspy_binary(),
            "record",
            "--pid",
            str(pid),
            "--format",
            "raw",
            "--rate",
            str(RATE),
            "--threads",
            "--output",
            str(raw),
        ]
        if idle:
            self.argv.append("--idle")
        if native:
            self.argv.append("--native")
        raw.parent.mkdir(parents=True, exist_ok=True)
        raw.unlink(missing_ok=True)
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_sampling(self, timeout: float = 30.0) -> None:
        """Until py-spy says it samples (it has attached)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "Sampling process" in self.text():
                return
            if self.proc.poll() is not None:
                raise SystemExit(f"py-spy exited with {self.proc.returncode}:\n{self.text()}")
            time.sleep(0.05)
        raise SystemExit(f"py-spy did not start sampling within {timeout:.0f} s:\n{self.text()}")

    def stop(self, timeout: float = 120.0) -> int | None:
        """SIGINT (py-spy then writes its file), wait; SIGKILL only if it does not end."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def counts(self) -> dict[str, int]:
        """``Samples: N Errors: E`` as py-spy reported them when it wrote the file."""
        match = re.search(r"Samples: (\d+) Errors: (\d+)", self.text())
        return {"samples": int(match[1]), "errors": int(match[2])} if match else {}


def pyspy_version() -> str:
    try:
        return subprocess.run(
            [pyspy_binary(), "--version"], capture_output=True, text=True, timeout=30
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


# --------------------------------------------------------------------------------------------
# Aggregation and report
# --------------------------------------------------------------------------------------------


def source_lines(root: Path) -> Any:
    """``(file, line) -> source text`` for py-spy's file names (relative to the worker's source
    tree, or absolute)."""

    def lookup(file: str, line: int) -> str:
        path = Path(file)
        if not path.is_absolute():
            path = root / file
        return linecache.getline(str(path), line)

    return lookup


def aggregate(
    raw: Path,
    cpu_seconds: float,
    transactions: int,
    pid: int | None,
    source_root: Path,
) -> tuple[Breakdown, dict[str, Any]]:
    """Classify the main thread's samples of ``raw``; also samples per thread."""
    stacks: list[Stack] = parse_raw(raw.read_text().splitlines())
    main = main_thread_id(stacks, pid)
    mine = with_source(only_thread(stacks, main), source_lines(source_root))
    # Without --native, collections run inside the frame that triggered them: no GC row.
    omit = () if has_native_frames(stacks) else (GC,)
    result = breakdown(mine, cpu_seconds, transactions, omit=omit)
    per_thread = {
        str(tid): {"name": name, "samples": n, "main": tid == main}
        for tid, (name, n) in sorted(thread_samples(stacks).items(), key=lambda kv: -kv[1][1])
    }
    return result, {"main_thread_id": main, "samples_per_thread": per_thread}


def fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def step_table(result: Breakdown, title: str) -> Table:
    table = Table(title=title)
    for column, right in (
        ("step", False),
        ("samples", True),
        ("share of main-thread samples", True),
        ("share of busy samples", True),
        ("µs / transaction", True),
    ):
        table.add_column(column, justify="right" if right else "left")
    total_us = 0.0
    for row in result.rows:
        total_us += row.us_per_tx or 0.0
        table.add_row(
            row.step,
            f"{row.samples:,}",
            f"{row.share_all:.1%}",
            fmt(row.share_busy, ".1%"),
            fmt(row.us_per_tx, ",.1f"),
        )
    table.add_row(
        "total",
        f"{result.total:,}",
        "100.0%" if result.total else "—",
        "100.0%" if result.busy else "—",
        f"{total_us:,.1f}" if total_us else "—",
    )
    return table


def leaves_table(result: Breakdown) -> Table:
    table = Table(title=f"Top {len(result.top_leaves)} leaf functions, main thread")
    table.add_column("leaf function (innermost Python frame)")
    table.add_column("samples", justify="right")
    table.add_column("share of main-thread samples", justify="right")
    for label, n in result.top_leaves:
        table.add_row(label, f"{n:,}", f"{n / result.total:.1%}" if result.total else "—")
    return table


def figures_table(figures: list[tuple[str, str]]) -> Table:
    table = Table(title="Run")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, value in figures:
        table.add_row(name, value)
    return table


def breakdown_json(result: Breakdown) -> dict[str, Any]:
    return {
        "rows": [asdict(row) for row in result.rows],
        "main_thread_samples": result.total,
        "idle_samples": result.idle,
        "busy_samples": result.busy,
        "top_leaves": [{"leaf": label, "samples": n} for label, n in result.top_leaves],
        "rules": [{"step": s.name, "takes": s.doc} for s in STEPS]
        + [{"step": "other", "takes": "what no rule above took"}],
    }


def write_report(path: Path, header: str, tables: list[Table], document: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    md = path.with_suffix(".md")
    md.write_text(header + "\n\n" + "\n".join(markdown(t) for t in tables))
    return md


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def command_line() -> str:
    """How this run was started (the interpreter relative to the working directory)."""
    try:
        python = os.path.relpath(sys.executable)
    except ValueError:
        python = sys.executable
    if __spec__ is not None and __spec__.name == "bench.profile":
        return shlex.join([python, "-m", "bench.profile", *sys.argv[1:]])
    return shlex.join([python, *sys.argv])


def parse_env(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--env wants KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def wait_for_scores(
    watcher: OutputWatcher, worker: WorkerProcess, cpu: CpuWatch, expected: int, stall_s: float
) -> str | None:
    """Until ``expected`` scores have arrived; the reason when the worker stalled or died."""
    last_count, last_change = watcher.count, time.monotonic()
    with progress_bar() as bar:
        task = bar.add_task(f"worker under py-spy: {expected:,} scores", total=expected)
        while watcher.count < expected:
            time.sleep(0.5)
            cpu.sample()
            bar.update(task, completed=watcher.count)
            if watcher.count != last_count:
                last_count, last_change = watcher.count, time.monotonic()
            if not worker.running and time.monotonic() - last_change > 10:
                return f"the worker exited with {watcher.count:,} of {expected:,} scores"
            if time.monotonic() - last_change > stall_s:
                hint = (
                    " (from full topics the worker first works through the preloaded labels and "
                    "scores nothing for a while, longer under py-spy --native or on a loaded "
                    "machine: raise --stall-seconds if its log shows it consuming)"
                    if watcher.count == 0
                    else ""
                )
                return (
                    f"no new score for {stall_s:.0f} s at {watcher.count:,} of {expected:,}{hint}"
                )
    return None


def run(args: argparse.Namespace) -> None:
    csv = args.csv or default_csv_path()
    if not csv.is_file():
        raise SystemExit(
            f"the fraud-handbook dataset is missing: {csv} (set FRAUD_HANDBOOK_DIR or --csv; "
            "it is read where it lives, never copied)"
        )
    pyspy_binary()
    extra_env = parse_env(args.env)
    raw: Path = args.raw or args.json.with_suffix(".pyspy.txt")
    worker_log = args.json.with_suffix(".worker.log")
    started = time.monotonic()
    started_at = datetime.now(UTC)
    load_start = os.getloadavg()
    console.rule(f"stream_app profile · {args.events:,} transactions + labels · py-spy {RATE} Hz")
    console.log(f"load average at start: {' '.join(f'{x:.2f}' for x in load_start)}")
    with tempfile.TemporaryDirectory(prefix="stream-app-profile-") as tmp:
        home = Path(tmp)
        port, controller = free_ports(2)
        broker = LocalBroker(home / "broker", port=port, controller_port=controller)
        try:
            with console.status("Starting a Kafka broker of our own…"):
                bootstrap = broker.start(timeout=180)
            console.log(f"broker on {bootstrap} (pid {broker.running_pid()}, data in {home})")
            if args.models:
                models = args.models
                champion, challenger = existing_models(models)
                console.log(f"models reused from {models}")
            else:
                models = args.save_models or home / "models"
                console.log(
                    f"training the handbook protocol's champion (logreg) and challenger (hgb) "
                    f"into {models}" + (" (kept)" if args.save_models else " (temporary)")
                )
                champion, challenger = train_models(csv, models)
            console.log(
                f"champion {champion}"
                + ("; no challenger" if args.no_challenger else f", challenger {challenger}")
            )
            worker_src = export_revision(args.worker_rev, home) if args.worker_rev else None
            tag = f"profile-{uuid.uuid4().hex[:6]}"
            work = prepare(bootstrap, f"{tag}.", csv, args.events)
            env = {
                "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "STREAM_APP_TOPIC_PREFIX": work.prefix,
                "STREAM_APP_APP_ID": f"{tag}-worker",
                "STREAM_APP_MODELS_DIR": str(models),
                "STREAM_APP_CHAMPION": champion,
                "STREAM_APP_STATE_DIR": str(home / "worker-state"),
                "STREAM_APP_WEB_PORT": str(free_port()),
                "STREAM_APP_PARTITIONS": str(PARTITIONS),
                "STREAM_APP_MODEL_WATCH_INTERVAL_S": "0",
            }
            if not args.no_challenger:
                env["STREAM_APP_CHALLENGER"] = challenger
            if worker_src is not None:
                env["PYTHONPATH"] = str(worker_src)
            env.update(extra_env)
            watcher = OutputWatcher(bootstrap, work.settings.topic("scores"))
            watcher.start()
            worker = WorkerProcess(home / "worker", env, cwd=worker_src)
            spy: PySpy | None = None
            spy_counts: dict[str, int] = {}
            failure: str | None = None
            worker_started = time.time()
            worker.start()
            assert worker.proc is not None
            pid = worker.proc.pid
            try:
                ready_s = worker.wait_ready(timeout=180)
                console.log(
                    f"worker pid {pid} ready after {ready_s:.1f} s "
                    f"({watcher.count:,} scores so far); attaching py-spy"
                )
                cpu = CpuWatch(pid)
                spy = PySpy(
                    pid, raw, home / "py-spy.log", idle=not args.no_idle, native=args.native
                )
                spy.wait_sampling()
                cpu.begin()
                t0, count0 = time.monotonic(), watcher.count
                failure = wait_for_scores(watcher, worker, cpu, args.events, args.stall_seconds)
                cpu.sample()
                t1, count1 = time.monotonic(), watcher.count
                first_score_s = (
                    watcher.first_at - worker_started if watcher.first_at is not None else None
                )
            finally:
                if spy is not None:
                    code = spy.stop()
                    spy_counts = spy.counts()  # its log goes with the temporary directory
                    console.log(f"py-spy stopped (exit {code}): {spy_counts}")
                worker_tail = worker.tail(40)
                worker.stop()
                watcher.stop()
                if worker.log_path.exists():  # its stats lines, kept beside the results
                    worker_log.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(worker.log_path, worker_log)
            if failure is not None:
                console.log(f"[red]the run failed: {failure}")
                console.print(worker_tail)
                raise SystemExit(
                    f"profile run failed: {failure}; worker log above, raw py-spy file {raw}"
                )
            assert spy is not None
            window_s = t1 - t0
            transactions = count1 - count0
            threads = cpu.threads()
            main_cpu = threads.get(pid, ("", 0.0))[1]
            result, per_thread = aggregate(raw, main_cpu, transactions, pid, worker_src or ROOT)
        finally:
            broker.stop()
    wall_s = time.monotonic() - started
    load_end = os.getloadavg()
    console.log(f"load average at end: {' '.join(f'{x:.2f}' for x in load_end)}")

    # Python's thread names, as py-spy saw them (the OS name of a Python thread is "python").
    python_names = {
        int(tid): info["name"]
        for tid, info in per_thread["samples_per_thread"].items()
        if tid != "None" and info["name"]
    }
    others: dict[str, float] = {}
    for tid, (name, seconds) in threads.items():
        if tid == pid:
            continue
        label = f"{name} [{python_names[tid]}]" if tid in python_names else name
        others[label] = others.get(label, 0.0) + seconds
    others = dict(sorted(others.items(), key=lambda kv: -kv[1]))
    process_cpu = (
        cpu.process_end - cpu.process_start
        if cpu.process_end is not None and cpu.process_start is not None
        else None
    )
    children = cpu.children()
    busy_s = result.busy / RATE
    counts = spy_counts
    document: dict[str, Any] = {
        "started_at": started_at.isoformat(),
        "command": command_line(),
        "wall_seconds": wall_s,
        "machine": {
            **machine(),
            "load_average_start": load_start,
            "load_average_end": load_end,
            "load_1min_max_while_sampled": cpu.load_max,
        },
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "workload": {
            "csv": str(csv),
            "transactions": args.events,
            "labels": args.events,
            "partitions": PARTITIONS,
            "preload": work.preload,
            "models": {
                "dir": str(models),
                "champion": champion,
                "challenger": None if args.no_challenger else challenger,
            },
            "worker_source": worker_src.name.removeprefix("worker-")
            if worker_src
            else "working tree",
            "extra_env": extra_env,
        },
        "profiler": {
            "version": pyspy_version(),
            "argv": spy.argv,
            "rate_hz": RATE,
            "idle_included": not args.no_idle,
            "native": args.native,
            "blocking": True,
            "attached": "once the worker logged Ready",
            "raw_file": str(raw.resolve()),
            "worker_log": str(worker_log.resolve()),
            **counts,
            **per_thread,
        },
        "window": {
            "seconds": window_s,
            "worker_ready_after_s": ready_s,
            "first_score_after_worker_start_s": first_score_s,
            "scores_before_sampling": count0,
            "transactions": transactions,
            "transactions_per_s": transactions / window_s if window_s > 0 else None,
        },
        "cpu_seconds": {
            "main_thread": main_cpu,
            "main_thread_share_of_wall": main_cpu / window_s if window_s > 0 else None,
            "other_threads": others,
            "worker_process": process_cpu,
            "child_processes": children,
            "main_thread_busy_samples_over_rate": busy_s,
        },
        "steps": breakdown_json(result),
    }
    figures = [
        ("worker", f"pid {pid}, from {document['workload']['worker_source']}"),
        ("transactions scored while sampled", f"{transactions:,}"),
        ("window (py-spy attached → last score)", f"{window_s:,.1f} s"),
        ("transactions/s in the window", fmt(document["window"]["transactions_per_s"], ",.0f")),
        ("main-thread CPU", f"{main_cpu:,.1f} s ({main_cpu / window_s:.0%} of the window)"),
        ("main-thread CPU per transaction", f"{main_cpu / transactions * 1e6:,.1f} µs"),
        ("main-thread samples busy / rate", f"{busy_s:,.1f} s (cross-check of the CPU)"),
        (
            "main-thread samples idle",
            f"{result.idle:,} of {result.total:,} ({result.idle / max(result.total, 1):.0%})",
        ),
        *[(f"other thread CPU: {name}", f"{s:,.1f} s") for name, s in others.items() if s >= 0.05],
        ("worker process CPU (all threads)", fmt(process_cpu, ",.1f") + " s"),
        *[(f"child process CPU: {name}", f"{s:,.1f} s") for name, s in children.items()],
        ("py-spy samples / errors", f"{counts.get('samples', '?')} / {counts.get('errors', '?')}"),
        ("wall time of the whole tool", f"{wall_s / 60:,.1f} min"),
        (
            "load average (1 min) start → highest while sampled → end",
            f"{load_start[0]:.2f} → {cpu.load_max:.2f} → {load_end[0]:.2f}",
        ),
        ("raw py-spy file", str(raw)),
        ("worker log", str(worker_log)),
    ]
    tables = [
        step_table(
            result,
            f"Main-thread samples by step · {transactions:,} transactions · "
            f"{main_cpu:,.1f} s main-thread CPU",
        ),
        leaves_table(result),
        figures_table(figures),
    ]
    for table in tables:
        console.print(table)
    header = (
        f"{started_at:%Y-%m-%d %H:%M} UTC · `{document['command']}` · "
        f"{args.events:,} transactions + labels · worker from "
        f"{document['workload']['worker_source']} (git HEAD {document['machine']['git_head']}) · "
        f"py-spy {RATE} Hz, attached at Ready, idle {'in' if not args.no_idle else 'ex'}cluded"
        f"{', native' if args.native else ''} · {os.cpu_count()} cores, broker on the machine · "
        f"load {load_start[0]:.2f} → {load_end[0]:.2f}\n\n"
        f"µs / transaction = share of the main thread's busy (non-{IDLE!r}) samples x "
        f"main-thread CPU s / transactions scored while sampled."
        + (
            ""
            if args.native
            else " Garbage collection has no row: without py-spy --native it is counted in the "
            "step whose allocation triggered it."
        )
    )
    md = write_report(args.json, header, tables, document)
    console.log(f"wrote {args.json}, {md} and the raw py-spy file {raw}")


def reaggregate(args: argparse.Namespace) -> None:
    """Only step 7: classify an existing raw file again."""
    if args.cpu_seconds is None or args.transactions is None:
        raise SystemExit("--reaggregate needs --cpu-seconds and --transactions")
    raw: Path = args.reaggregate
    if not raw.is_file():
        raise SystemExit(f"no such raw py-spy file: {raw}")
    result, per_thread = aggregate(raw, args.cpu_seconds, args.transactions, args.pid, args.source)
    out = args.json if args.json_given else RESULTS / "profile-reaggregated.json"
    document = {
        "reaggregated_at": datetime.now(UTC).isoformat(),
        "raw_file": str(raw.resolve()),
        "cpu_seconds_main_thread": args.cpu_seconds,
        "transactions": args.transactions,
        "source": str(args.source),
        **per_thread,
        "steps": breakdown_json(result),
    }
    tables = [
        step_table(
            result,
            f"Main-thread samples by step · {args.transactions:,} transactions · "
            f"{args.cpu_seconds:,.1f} s main-thread CPU",
        ),
        leaves_table(result),
    ]
    for table in tables:
        console.print(table)
    md = write_report(out, f"Re-aggregated from `{raw}`", tables, document)
    console.log(f"wrote {out} and {md}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.profile",
        description="Where the worker's main-thread CPU goes per transaction (py-spy, handbook "
        "workload, a broker of its own).",
    )
    parser.add_argument("--events", type=int, default=200_000, help="Transactions (with labels).")
    parser.add_argument(
        "--models",
        type=Path,
        default=None,
        help="Reuse the newest -logreg and -hgb of this models directory instead of training.",
    )
    parser.add_argument(
        "--save-models",
        type=Path,
        default=None,
        help="Train into this directory and keep it (default: a temporary one).",
    )
    parser.add_argument("--no-challenger", action="store_true", help="No shadow challenger.")
    parser.add_argument(
        "--csv",
        type=Path,
        default=None,
        help="The handbook CSV (default: "
        "$FRAUD_HANDBOOK_DIR or ../shared/datasets/fraud-handbook/).",
    )
    parser.add_argument(
        "--worker-rev",
        default=None,
        help="Run the worker from a clean "
        "export of this git revision (e.g. HEAD) instead of the working tree.",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Extra environment for the worker (repeatable), e.g. STREAM_APP_BATCH_MAX=1000.",
    )
    parser.add_argument(
        "--stall-seconds",
        type=float,
        default=180.0,
        help="No new score for this long fails the run.",
    )
    parser.add_argument(
        "--native",
        action="store_true",
        help="py-spy --native: C frames too (garbage collection becomes visible); slower sampling.",
    )
    parser.add_argument(
        "--no-idle",
        action="store_true",
        help="Leave py-spy's idle samples out (py-spy decides from the thread's state).",
    )
    parser.add_argument("--json", type=Path, default=RESULTS / "profile.json")
    parser.add_argument(
        "--raw",
        type=Path,
        default=None,
        help="Where py-spy writes (default: beside --json, .pyspy.txt).",
    )
    parser.add_argument(
        "--reaggregate",
        type=Path,
        default=None,
        metavar="RAWFILE",
        help="Only classify this raw py-spy file again (no broker, no worker).",
    )
    parser.add_argument(
        "--cpu-seconds",
        type=float,
        default=None,
        help="With --reaggregate: the main thread's CPU seconds of the run.",
    )
    parser.add_argument(
        "--transactions",
        type=int,
        default=None,
        help="With --reaggregate: transactions scored while sampled.",
    )
    parser.add_argument(
        "--pid",
        type=int,
        default=None,
        help="With --reaggregate: the worker's "
        "pid (main thread); default: MainThread, else the lowest thread id.",
    )
    parser.add_argument(
        "--source",
        type=Path,
        default=ROOT,
        help="With --reaggregate: the worker's source tree (rules read source lines).",
    )
    args = parser.parse_args(argv)
    args.json_given = any(a == "--json" or a.startswith("--json=") for a in (argv or sys.argv))
    if args.reaggregate is None and args.events < 1000:
        parser.error("--events must be at least 1000")
    if args.models and args.save_models:
        parser.error("--models and --save-models exclude each other")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.reaggregate is not None:
        reaggregate(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
