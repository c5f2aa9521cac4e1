"""Worker throughput of several git revisions, side by side on one broker, alternated.

For each revision (``git archive`` into a temporary directory), a fresh worker of that code
(``python -m stream_app worker`` with ``PYTHONPATH`` at the revision and its working directory
outside the repository, so the revision's package is the one imported) reads ``--events``
synthetic transactions from full topics: the full pipeline (both stages, changelogged tables,
champion, drift; ``--challenger`` adds the shadow). Reported per run: time to ready, events/s
from the first score to the last, and the worker's CPU seconds per thread read from ``/proc``
(the main thread's is the figure that stays stable on a shared machine). Revisions alternate
within each round, so a slow spell of the machine hits them all alike.

    .venv/bin/python bench/revisions.py 28d59f1 HEAD [--events 20000] [--rounds 2]

With ``--rate R`` the worker starts on empty topics instead and the events (with their labels)
are published at ``R`` records/s while it runs: a live stream, measured by the champion's
end-to-end latency (``latency_ms`` of each envelope: p50, p95, p99) rather than throughput.

Writes ``bench/results/revisions.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Consumer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.shadow_latency import train_models  # noqa: E402
from stream_app.broker import LocalBroker, free_port, free_ports  # noqa: E402
from stream_app.cli.publish import run_publish  # noqa: E402
from stream_app.config import Settings  # noqa: E402
from stream_app.devtools.worker_process import WorkerProcess  # noqa: E402


def checkout(revision: str, into: Path) -> Path:
    """The tree of ``revision`` in ``into``; returns it."""
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def thread_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) per thread name of ``pid``; the main thread is ``main``."""
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        name = "main" if tid == str(pid) else stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return out


def one_run(
    bootstrap: str,
    home: Path,
    models: dict[str, str],
    tree: Path,
    args: argparse.Namespace,
    extra_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One fresh worker of ``tree`` over ``args.events`` preloaded synthetic transactions
    (``extra_env``: settings of this run, e.g. a canary share)."""
    tag = uuid.uuid4().hex[:8]
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "STREAM_APP_TOPIC_PREFIX": f"rev-{tag}.",
        "STREAM_APP_APP_ID": f"rev-{tag}",
        "STREAM_APP_MODELS_DIR": models["dir"],
        "STREAM_APP_CHAMPION": models["champion"],
        "STREAM_APP_STATE_DIR": str(home / tag),
        "STREAM_APP_WEB_PORT": str(free_port()),
        "STREAM_APP_PARTITIONS": str(args.partitions),
        "PYTHONPATH": str(tree),
    }
    if args.challenger:
        env["STREAM_APP_CHALLENGER"] = models["challenger"]
    env |= extra_env or {}
    settings = Settings(
        kafka_bootstrap_servers=bootstrap,
        topic_prefix=env["STREAM_APP_TOPIC_PREFIX"],
        partitions=args.partitions,
    )
    subprocess.run(
        [sys.executable, "-m", "stream_app", "topics", "apply"],
        env={**os.environ, **env},
        cwd=tree,
        check=True,
        capture_output=True,
    )

    def publish() -> None:
        run_publish(
            settings,
            synthetic=args.events,
            rate=args.rate,
            labels=args.rate > 0,
            label_delay_days=0.5,
            seed=7,
            customers=2000,
            terminals=4000,
            progress=False,
        )

    if not args.rate:
        publish()
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"rev-{tag}-scores",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([settings.topic("scores")])
    consumer.consume(1, 3.0)  # join the group before the worker starts
    worker = WorkerProcess(home / tag, env, cwd=tree)  # cwd: the revision's package, not ours
    started = time.monotonic()
    worker.start()
    latencies: list[float] = []
    try:
        worker.wait_ready()
        ready = time.monotonic() - started
        if args.rate:
            threading.Thread(target=publish, daemon=True).start()
        scored, first = 0, None
        while scored < args.events and time.monotonic() - started < args.timeout:
            for message in consumer.consume(1000, 1.0):
                if message.error() is None:
                    scored += 1
                    first = first or time.monotonic()
                    if args.rate:
                        latencies.append(orjson.loads(message.value())["latency_ms"])
        last = time.monotonic()
        assert worker.proc is not None
        cpu = thread_cpu_s(worker.proc.pid)
    finally:
        worker.stop()
        consumer.close()
    result: dict[str, Any] = {
        "ready_s": round(ready, 1),
        "scored": scored,
        "events_per_s": round(scored / (last - first), 1) if first and last > first else 0.0,
        "main_thread_cpu_s": round(cpu.get("main", 0.0), 2),
        "process_cpu_s": round(sum(cpu.values()), 2),
    }
    if latencies:
        p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
        result |= {
            "p50_ms": round(float(p50), 1),
            "p95_ms": round(float(p95), 1),
            "p99_ms": round(float(p99), 1),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("revisions", nargs="+", help="git revisions (commits, tags, HEAD)")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--challenger", action="store_true", help="Shadow a challenger too.")
    parser.add_argument("--timeout", type=float, default=600.0, help="Per run, seconds.")
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="Publish while the worker runs, at this many records/s (with labels), and report "
        "latency; 0 (default): preloaded topics, throughput.",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-revisions-") as tmp:
        home = Path(tmp)
        trees = {rev: checkout(rev, home / f"tree-{i}") for i, rev in enumerate(args.revisions)}
        port, controller = free_ports(2)
        broker = LocalBroker(home / "broker", port=port, controller_port=controller)
        bootstrap = broker.start(timeout=120)
        runs: dict[str, list[dict[str, Any]]] = {rev: [] for rev in args.revisions}
        try:
            champion, challenger = train_models(home / "models")
            models = {"dir": str(home / "models"), "champion": champion, "challenger": challenger}
            for round_ in range(args.rounds):
                for rev, tree in trees.items():
                    result = one_run(bootstrap, home, models, tree, args)
                    runs[rev].append(result)
                    print(f"round {round_ + 1} {rev}: {result}", flush=True)
        finally:
            broker.stop()
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    document = {"args": vars(args), "runs": runs}
    (out / "revisions.json").write_text(json.dumps(document, indent=2) + "\n")
    for rev, results in runs.items():
        if args.rate:
            print(
                f"{rev}: latency ms p50 {[r.get('p50_ms') for r in results]}, p95 "
                f"{[r.get('p95_ms') for r in results]}, p99 {[r.get('p99_ms') for r in results]}"
            )
            continue
        print(
            f"{rev}: events/s {[r['events_per_s'] for r in results]}, main-thread CPU s "
            f"{[r['main_thread_cpu_s'] for r in results]}"
        )


if __name__ == "__main__":
    main()
