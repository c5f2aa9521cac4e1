"""The champion's throughput with a canary on: canary off and a 5 % canary, alternated in one run.

Both variants run the same code (a ``git archive`` of ``--revision``, HEAD by default) on one
broker: a fresh worker reads ``--events`` preloaded synthetic transactions of 2,000 customers
(the full pipeline: both stages, changelogged tables, champion, drift, the gradient-boosting
challenger in shadow). The canary variant adds ``STREAM_APP_CANARY_SHARE`` (default 0.05): the
challenger decides for that share of customers on the scoring path, its own ``predict_proba``
per micro-batch. The variants alternate within each round, so a slow spell of the machine hits
both alike; the ratio canary/off is taken pair by pair, and the median of the pairs is the
figure (issue 16 asks that it not fall below 0.90).

    .venv/bin/python bench/canary.py [--events 20000] [--rounds 3] [--share 0.05]

Writes ``bench/results/canary.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.revisions import checkout, one_run  # noqa: E402
from bench.shadow_latency import train_models  # noqa: E402
from stream_app.broker import LocalBroker, free_ports  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--revision", default="HEAD", help="git revision to run (default HEAD)")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--share", type=float, default=0.05, help="The canary's share (0-1).")
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600.0, help="Per run, seconds.")
    args = parser.parse_args()
    args.challenger = True  # a canary is the challenger deciding: both variants shadow it
    variants = {"off": {}, "canary": {"STREAM_APP_CANARY_SHARE": str(args.share)}}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory(prefix="bench-canary-") as tmp:
        home = Path(tmp)
        tree = checkout(args.revision, home / "tree")
        port, controller = free_ports(2)
        broker = LocalBroker(home / "broker", port=port, controller_port=controller)
        bootstrap = broker.start(timeout=120)
        try:
            champion, challenger = train_models(home / "models")
            models = {"dir": str(home / "models"), "champion": champion, "challenger": challenger}
            for round_ in range(args.rounds):
                for name, extra in variants.items():
                    result = one_run(bootstrap, home, models, tree, args, extra)
                    runs[name].append(result)
                    print(f"round {round_ + 1} {name}: {result}", flush=True)
        finally:
            broker.stop()
    ratios = [
        round(c["events_per_s"] / o["events_per_s"], 3) if o["events_per_s"] else None
        for o, c in zip(runs["off"], runs["canary"], strict=True)
    ]
    valid = [r for r in ratios if r is not None]
    document = {
        "args": vars(args),
        "runs": runs,
        "ratio_canary_over_off": ratios,
        "median_ratio": statistics.median(valid) if valid else None,
    }
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "canary.json").write_text(json.dumps(document, indent=2) + "\n")
    for name, results in runs.items():
        print(f"{name}: events/s {[r['events_per_s'] for r in results]}")
    print(f"canary/off pair by pair: {ratios}; median {document['median_ratio']}")


if __name__ == "__main__":
    main()
