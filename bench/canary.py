"""The champion's throughput with a canary on: canary off and a 5 % canary, alternated in one run.

Every variant runs the same code (a ``git archive`` of ``--revision``, HEAD by default) on one
broker: a fresh worker reads ``--events`` preloaded synthetic transactions of 2,000 customers
(the full pipeline: both stages, changelogged tables, the logistic champion, drift, a challenger
in shadow). A canary variant adds ``STREAM_APP_CANARY_SHARE`` (default 0.05): the challenger
decides for that share of customers on the scoring path, its own ``predict_proba`` per
micro-batch. Two challengers, each against its own baseline (the same challenger in shadow
only): the gradient-boosting one (400 trees, explained by occlusion: about a hundred times the
champion's cost per row) and a logistic regression trained on other simulated data (the champion's
cost). The variants alternate within each round, so a slow spell of the machine hits all alike;
each canary/off ratio is taken pair by pair, and the median of the pairs is the figure (issue 16
asks that it not fall below 0.90).

    .venv/bin/python bench/canary.py [--events 20000] [--rounds 3] [--share 0.05]

Writes ``bench/results/canary.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.revisions import checkout, one_run  # noqa: E402
from bench.shadow_latency import train_models  # noqa: E402
from stream_app.broker import LocalBroker, free_ports  # noqa: E402
from stream_app.sources.schedule import batch_from_events  # noqa: E402
from stream_app.sources.simulator import simulate  # noqa: E402
from stream_app.training import train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--revision", default="HEAD", help="git revision to run (default HEAD)")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--share", type=float, default=0.05, help="The canary's share (0-1).")
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600.0, help="Per run, seconds.")
    args = parser.parse_args()
    args.challenger = True  # a canary is the challenger deciding: every variant shadows it
    share = {"STREAM_APP_CANARY_SHARE": str(args.share)}
    # (challenger, settings) per variant; each canary variant has its own baseline: the same
    # challenger in shadow only, so the pair differs by the canary alone.
    variants: dict[str, tuple[str, dict[str, str]]] = {
        "off (hgb in shadow)": ("hgb", {}),
        "canary hgb": ("hgb", share),
        "off (logreg in shadow)": ("logreg", {}),
        "canary logreg": ("logreg", share),
    }
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory(prefix="bench-canary-") as tmp:
        home = Path(tmp)
        tree = checkout(args.revision, home / "tree")
        port, controller = free_ports(2)
        broker = LocalBroker(home / "broker", port=port, controller_port=controller)
        bootstrap = broker.start(timeout=120)
        try:
            champion, hgb = train_models(home / "models")
            challengers = {"hgb": hgb, "logreg": second_logreg(home / "models")}
            for round_ in range(args.rounds):
                for name, (kind, extra) in variants.items():
                    models = {
                        "dir": str(home / "models"),
                        "champion": champion,
                        "challenger": challengers[kind],
                    }
                    result = one_run(bootstrap, home, models, tree, args, extra)
                    runs[name].append(result)
                    print(f"round {round_ + 1} {name}: {result}", flush=True)
        finally:
            broker.stop()
    pairs = {
        "hgb": ("off (hgb in shadow)", "canary hgb"),
        "logreg": ("off (logreg in shadow)", "canary logreg"),
    }
    ratios = {
        kind: [
            round(c["events_per_s"] / o["events_per_s"], 3) if o["events_per_s"] else None
            for o, c in zip(runs[off], runs[on], strict=True)
        ]
        for kind, (off, on) in pairs.items()
    }
    medians = {
        kind: statistics.median([r for r in values if r is not None]) if any(values) else None
        for kind, values in ratios.items()
    }
    document = {
        "args": vars(args),
        "runs": runs,
        "ratio_canary_over_off": ratios,
        "median_ratio": medians,
    }
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "canary.json").write_text(json.dumps(document, indent=2) + "\n")
    for name, results in runs.items():
        print(f"{name}: events/s {[r['events_per_s'] for r in results]}")
    for kind in pairs:
        print(f"canary {kind}/off pair by pair: {ratios[kind]}; median {medians[kind]}")


def second_logreg(models: Path) -> str:
    """A logistic regression trained on other simulated data: a canary as heavy as the champion."""
    batch = batch_from_events(
        simulate(
            n_customers=300,
            n_terminals=500,
            days=58,
            seed=4,
            start=datetime(2026, 1, 1, tzinfo=UTC),
        )
    )
    return train(
        batch,
        model_type="logreg",
        train_start=datetime(2026, 2, 7, tzinfo=UTC),
        models_dir=models,
        data_tag="bench-canary",
        seed=4,
    ).version


if __name__ == "__main__":
    main()
