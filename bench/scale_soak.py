"""Scale-out (1 vs 2 worker processes) and a soak (RSS and state over time at a fixed rate).

Against a broker of its own (free ports, temporary directory, stopped by pid), the full
pipeline (both stages, changelogged tables, champion, drift; ``--challenger`` adds the shadow):

1. **Scale-out**: ``--events`` synthetic transactions preloaded into a 6-partition topic, read
   from the full topic by one worker, then (fresh topics, same events) by two worker processes
   of one app id. Reported: events/s from the first score to the last, per-process main-thread
   CPU, and the ratio two/one.
2. **Soak**: one worker, events published at ``--rate`` events/s (about half of the measured
   maximum on this machine) for ``--minutes``; every ``--every`` seconds the worker's RSS
   (``/proc/PID/status`` VmRSS), its table keys and consumer lag (from ``/metrics``) are sampled.
   Reported: first and last values, and the least-squares slope of RSS and of table keys over
   the second half of the run (the first half warms up: tables fill, allocator pools grow).

    .venv/bin/python bench/scale_soak.py [--events 30000] [--rate 600] [--minutes 10]

Writes ``bench/results/scale_soak.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.revisions import thread_cpu_s  # noqa: E402
from bench.shadow_latency import train_models  # noqa: E402
from stream_app.broker import LocalBroker, free_port, free_ports  # noqa: E402
from stream_app.cli.publish import run_publish  # noqa: E402
from stream_app.config import Settings  # noqa: E402
from stream_app.devtools.worker_process import WorkerProcess  # noqa: E402
from stream_app.operations.top import by_label, scrape  # noqa: E402

PARTITIONS = 6


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ``ys`` over ``xs`` (0.0 for fewer than two distinct xs)."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Setup:
    """Broker, models and per-run environments."""

    def __init__(self, home: Path, args: argparse.Namespace) -> None:
        self.home, self.args = home, args
        port, controller = free_ports(2)
        self.broker = LocalBroker(home / "broker", port=port, controller_port=controller)
        self.bootstrap = ""

    def start(self) -> None:
        self.bootstrap = self.broker.start(timeout=120)
        self.champion, self.challenger = train_models(self.home / "models")

    def env(self, tag: str) -> tuple[dict[str, str], Settings]:
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "STREAM_APP_TOPIC_PREFIX": f"ss-{tag}.",
            "STREAM_APP_APP_ID": f"ss-{tag}",
            "STREAM_APP_MODELS_DIR": str(self.home / "models"),
            "STREAM_APP_CHAMPION": self.champion,
            "STREAM_APP_PARTITIONS": str(PARTITIONS),
        }
        if self.args.challenger:
            env["STREAM_APP_CHALLENGER"] = self.challenger
        settings = Settings(
            kafka_bootstrap_servers=self.bootstrap,
            topic_prefix=env["STREAM_APP_TOPIC_PREFIX"],
            partitions=PARTITIONS,
        )
        return env, settings

    def worker(self, env: dict[str, str], tag: str, name: str) -> WorkerProcess:
        own = {
            **env,
            "STREAM_APP_STATE_DIR": str(self.home / tag / name),
            "STREAM_APP_WEB_PORT": str(free_port()),
        }
        return WorkerProcess(self.home / tag, own, name=name)

    def publish(self, settings: Settings, events: int, rate: float = 0.0) -> None:
        run_publish(
            settings,
            synthetic=events,
            rate=rate,
            labels=False,
            seed=7,
            customers=2000,
            terminals=4000,
            progress=False,
        )

    def stop(self) -> None:
        self.broker.stop()


def throughput(setup: Setup, workers: int) -> dict[str, Any]:
    """Events/s of ``workers`` processes from a full topic of ``--events`` transactions."""
    tag = uuid.uuid4().hex[:8]
    env, settings = setup.env(tag)
    events = setup.args.events
    setup.publish(settings, events)
    consumer = Consumer(
        {
            "bootstrap.servers": setup.bootstrap,
            "group.id": f"count-{tag}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([settings.topic("scores")])
    consumer.consume(1, 3.0)
    procs = [setup.worker(env, tag, f"worker-{i}") for i in range(workers)]
    for proc in procs:
        proc.start()
    try:
        for proc in procs:
            proc.wait_ready()
        scored, first, started = 0, None, time.monotonic()
        while scored < events and time.monotonic() - started < setup.args.timeout:
            for message in consumer.consume(1000, 1.0):
                if message.error() is None:
                    scored += 1
                    first = first or time.monotonic()
        last = time.monotonic()
        cpu = [thread_cpu_s(p.proc.pid).get("main", 0.0) for p in procs if p.proc]
    finally:
        for proc in procs:
            proc.stop()
        consumer.close()
    rate = scored / (last - first) if first and last > first else 0.0
    return {
        "workers": workers,
        "scored": scored,
        "events_per_s": round(rate, 1),
        "main_thread_cpu_s": [round(c, 2) for c in cpu],
    }


def soak(setup: Setup) -> dict[str, Any]:
    """RSS, table keys and lag of one worker fed ``--rate`` events/s for ``--minutes``."""
    tag = uuid.uuid4().hex[:8]
    env, settings = setup.env(tag)
    args = setup.args
    total = int(args.rate * args.minutes * 60)
    worker = setup.worker(env, tag, "worker")
    worker.start()
    samples: list[dict[str, float]] = []
    try:
        worker.wait_ready()
        assert worker.proc is not None
        url = f"http://127.0.0.1:{worker.env['STREAM_APP_WEB_PORT']}/metrics"
        publisher = threading.Thread(
            target=setup.publish, args=(settings, total, args.rate), daemon=True
        )
        started = time.monotonic()
        publisher.start()
        while publisher.is_alive():
            time.sleep(args.every)
            metrics = scrape(url)
            keys = by_label(metrics, "stream_app_table_keys", "table")
            lag = by_label(metrics, "stream_app_consumer_lag", "topic", "partition")
            samples.append(
                {
                    "t_s": round(time.monotonic() - started, 1),
                    "rss_mb": round(rss_mb(worker.proc.pid), 1),
                    "table_keys": sum(keys.values()),
                    "lag": sum(lag.values()),
                }
            )
            print(f"soak {samples[-1]}", flush=True)
        publisher.join()
    finally:
        worker.stop()
    half = samples[len(samples) // 2 :]
    ts = [s["t_s"] / 60 for s in half]
    return {
        "rate": args.rate,
        "minutes": args.minutes,
        "events": total,
        "samples": samples,
        "rss_mb_first_last": [samples[0]["rss_mb"], samples[-1]["rss_mb"]] if samples else [],
        "rss_slope_mb_per_min_second_half": round(slope(ts, [s["rss_mb"] for s in half]), 3),
        "table_keys_slope_per_min_second_half": round(
            slope(ts, [s["table_keys"] for s in half]), 1
        ),
        "max_lag": max((s["lag"] for s in samples), default=0.0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=30_000, help="Scale-out events.")
    parser.add_argument("--rate", type=float, default=600.0, help="Soak rate, events/s.")
    parser.add_argument("--minutes", type=float, default=10.0, help="Soak length.")
    parser.add_argument("--every", type=float, default=10.0, help="Soak sampling, seconds.")
    parser.add_argument("--challenger", action="store_true", help="Shadow a challenger too.")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--no-scale", action="store_true", help="Soak only.")
    parser.add_argument("--no-soak", action="store_true", help="Scale-out only.")
    args = parser.parse_args()
    document: dict[str, Any] = {"args": vars(args)}
    with tempfile.TemporaryDirectory(prefix="bench-scale-soak-") as tmp:
        setup = Setup(Path(tmp), args)
        setup.start()
        try:
            if not args.no_scale:
                one, two = throughput(setup, 1), throughput(setup, 2)
                ratio = two["events_per_s"] / one["events_per_s"] if one["events_per_s"] else 0.0
                document["scale_out"] = {"one": one, "two": two, "ratio": round(ratio, 3)}
                print(f"scale-out: {document['scale_out']}", flush=True)
            if not args.no_soak:
                document["soak"] = soak(setup)
                summary = {k: v for k, v in document["soak"].items() if k != "samples"}
                print(f"soak: {summary}", flush=True)
        finally:
            setup.stop()
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale_soak.json").write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
