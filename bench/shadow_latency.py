"""Champion latency with the challenger's shadow off and on, side by side in one run.

Starts its own Kafka broker (free ports, temporary directory, stopped by pid), trains a logistic
champion and a gradient-boosting challenger on the project's generator, then alternates runs
(off, on, off, on, ...): each run is a fresh worker on fresh topics, fed the same synthetic
events at a fixed rate; the champion's end-to-end latency is read from its envelopes'
``latency_ms`` (Kafka timestamp of the transaction to scored). Prints p50/p95/p99 per mode and
the ratio on/off, and writes them to ``bench/results/shadow_latency.json``.

    .venv/bin/python bench/shadow_latency.py [--events 6000] [--rate 300] [--rounds 4]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stream_app.broker import LocalBroker, free_port, free_ports  # noqa: E402
from stream_app.cli.publish import run_publish  # noqa: E402
from stream_app.config import Settings  # noqa: E402
from stream_app.devtools.worker_process import WorkerProcess  # noqa: E402
from stream_app.sources.schedule import batch_from_events  # noqa: E402
from stream_app.sources.simulator import simulate  # noqa: E402
from stream_app.training import train  # noqa: E402
from tests.kafka_reader import read_topic  # noqa: E402


def train_models(root: Path) -> tuple[str, str]:
    batch = batch_from_events(
        simulate(
            n_customers=300,
            n_terminals=500,
            days=58,
            seed=3,
            start=datetime(2026, 1, 1, tzinfo=UTC),
        )
    )
    versions = [
        train(
            batch,
            model_type=kind,
            train_start=datetime(2026, 2, 7, tzinfo=UTC),
            models_dir=root,
            data_tag="bench",
            seed=3,
        ).version
        for kind in ("logreg", "hgb")
    ]
    return versions[0], versions[1]


def one_run(
    bootstrap: str, home: Path, models: Path, champion: str, challenger: str | None, args: Any
) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "STREAM_APP_TOPIC_PREFIX": f"bench-{tag}.",
        "STREAM_APP_APP_ID": f"bench-{tag}",
        "STREAM_APP_MODELS_DIR": str(models),
        "STREAM_APP_CHAMPION": champion,
        "STREAM_APP_STATE_DIR": str(home / tag),
        "STREAM_APP_WEB_PORT": str(free_port()),
        "STREAM_APP_PARTITIONS": "3",
    }
    if challenger:
        env["STREAM_APP_CHALLENGER"] = challenger
    settings = Settings(
        kafka_bootstrap_servers=bootstrap, topic_prefix=env["STREAM_APP_TOPIC_PREFIX"], partitions=3
    )
    worker = WorkerProcess(home / tag, env)
    worker.start()
    try:
        worker.wait_ready()
        run_publish(
            settings,
            synthetic=args.events,
            rate=args.rate,
            labels=False,
            seed=7,
            customers=2000,
            terminals=4000,
            progress=False,
        )
        scores = read_topic(bootstrap, settings.topic("scores"), expect=args.events, timeout=120)
        shadow = (
            read_topic(bootstrap, settings.topic("scores.shadow"), expect=args.events, timeout=60)
            if challenger
            else []
        )
    finally:
        worker.stop()
    envelopes = sorted((orjson.loads(m.value()) for m in scores), key=lambda e: e["scored_at"])
    latency = np.array([e["latency_ms"] for e in envelopes])
    warm = latency[len(latency) // 10 :]  # the first tenth (in scoring order) warms up
    deciles = [float(np.median(part)) for part in np.array_split(latency, 10)]
    return {
        "scored": float(len(scores)),
        "shadow_records": float(len(shadow)),
        "p50_ms": float(np.percentile(warm, 50)),
        "p95_ms": float(np.percentile(warm, 95)),
        "p99_ms": float(np.percentile(warm, 99)),
        "mean_ms": float(warm.mean()),
        "median_per_decile_ms": deciles,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=6000)
    parser.add_argument("--rate", type=float, default=300.0)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="Rounds run first and not counted (a fresh broker's first runs lag by seconds).",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-shadow-") as tmp:
        home = Path(tmp)
        port, controller = free_ports(2)
        broker = LocalBroker(home / "broker", port=port, controller_port=controller)
        bootstrap = broker.start(timeout=120)
        try:
            champion, challenger = train_models(home / "models")
            runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
            for round_ in range(args.warmup + args.rounds):
                counted = round_ >= args.warmup
                for mode in ("off", "on"):
                    started = time.monotonic()
                    result = one_run(
                        bootstrap,
                        home,
                        home / "models",
                        champion,
                        challenger if mode == "on" else None,
                        args,
                    )
                    if counted:
                        runs[mode].append(result)
                    label = "round" if counted else "warm-up"
                    print(
                        f"{label} {round_ + 1} shadow {mode:3}: p50 {result['p50_ms']:.1f} ms, "
                        f"p95 {result['p95_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
                        f"shadow records {result['shadow_records']:.0f}, median per tenth "
                        f"{[round(x) for x in result['median_per_decile_ms']]} "
                        f"({time.monotonic() - started:.0f} s)",
                        flush=True,
                    )
        finally:
            broker.stop()
    summary = {
        mode: {
            k: float(np.median([r[k] for r in rs])) for k in rs[0] if k != "median_per_decile_ms"
        }
        for mode, rs in runs.items()
    }
    ratios = {k: summary["on"][k] / summary["off"][k] for k in ("p50_ms", "p95_ms", "p99_ms")}
    print(
        "median over rounds: "
        + ", ".join(
            f"{k} off {summary['off'][k]:.1f} on {summary['on'][k]:.1f} (x{ratios[k]:.3f})"
            for k in ratios
        )
    )
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    document = {"args": vars(args), "runs": runs, "median": summary, "ratio_on_off": ratios}
    (out / "shadow_latency.json").write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
