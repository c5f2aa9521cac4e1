"""``stream-app train``: fit a model on the project's generator or a handbook-format CSV."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from stream_app.features.definitions import DAY_S, Entity, horizon_s

HISTORY_DAYS = int(horizon_s(Entity.TERMINAL) // DAY_S)  # window history needed before training
PROTOCOL_DAYS = 21  # 7 train + 7 delay + 7 test


def train(
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="Handbook-format CSV (.csv or .csv.gz). Default: the project's generator.",
        ),
    ] = None,
    train_start: Annotated[
        str | None,
        typer.Option(
            "--train-start",
            help="First training day, YYYY-MM-DD. Default: 2018-07-25 for --data, "
            f"day {HISTORY_DAYS} of the simulation otherwise.",
        ),
    ] = None,
    model: Annotated[str, typer.Option("--model", help="logreg, hgb or rf.")] = "logreg",
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write the version here instead of models/<version>/."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed (generator and estimator).")] = 7,
    customers: Annotated[int, typer.Option(help="Simulated customers.")] = 1000,
    terminals: Annotated[int, typer.Option(help="Simulated terminals.")] = 2000,
    reason: Annotated[
        str | None,
        typer.Option(
            "--reason",
            help="Why this model was trained, for the audit trail (models.audit). Default: the "
            "training data and the test metrics.",
            show_default=False,
        ),
    ] = None,
    by: Annotated[
        str | None,
        typer.Option(
            "--by", help="Who trains it (default: the OS user as user@host).", show_default=False
        ),
    ] = None,
) -> None:
    """Train with the worker's feature code, evaluate on the handbook protocol, register (and
    record the registration in the audit topic models.audit, unless --out writes elsewhere)."""
    from rich.console import Console

    from stream_app.cli.settings import command_settings
    from stream_app.sources.schedule import batch_from_events
    from stream_app.training import train as run_training

    if model not in ("logreg", "hgb", "rf"):
        raise typer.BadParameter("--model must be logreg, hgb or rf")
    console = Console()
    settings = command_settings()
    if data is not None:
        from stream_app.sources.handbook_csv import read_csv_events

        start = date.fromisoformat(train_start or "2018-07-25")
        first = start - timedelta(days=HISTORY_DAYS)
        last = start + timedelta(days=PROTOCOL_DAYS - 1)
        with console.status(f"Reading {data} from {first} to {last}…"):
            batch = batch_from_events(read_csv_events(data, date_from=first, date_to=last))
        tag = f"{data.name}:{first}..{last}"
    else:
        from stream_app.sources.simulator import simulate

        sim_start = datetime(2026, 1, 1, tzinfo=UTC)
        days = HISTORY_DAYS + PROTOCOL_DAYS
        with console.status(f"Simulating {days} days of {customers} customers…"):
            batch = batch_from_events(
                simulate(
                    n_customers=customers,
                    n_terminals=terminals,
                    start=sim_start,
                    days=days,
                    seed=seed,
                )
            )
        start = (sim_start + timedelta(days=HISTORY_DAYS)).date()
        tag = f"synthetic:seed={seed},customers={customers},terminals={terminals},days={days}"
    console.print(
        f"{len(batch):,} transactions, {int(batch.label.sum()):,} frauds"  # type: ignore[union-attr]
        f" · training week from {start}"
    )
    result = run_training(
        batch,
        model_type=model,  # type: ignore[arg-type]
        train_start=datetime(start.year, start.month, start.day, tzinfo=UTC),
        models_dir=settings.models_dir,
        data_tag=tag,
        out=out,
        seed=seed,
        progress=True,
    )
    m = result.metrics
    console.print(
        f"[bold green]Model {result.version}[/] → {result.path}\n"
        f"train rows {result.train_rows:,} · test rows {result.test_rows:,} · "
        f"AUC ROC {m['auc_roc']:.3f} · AP {m['average_precision']:.3f} · "
        f"CP@100 {m['card_precision_at_100']:.3f}"
    )
    if out is None:
        from stream_app.cli.models import audit_registration
        from stream_app.scoring.registry import read_manifest

        default = (
            f"trained by stream-app train --model {model} on {tag}: test AUC "
            f"{m['auc_roc']:.3f}, AP {m['average_precision']:.3f}"
        )
        sha256 = read_manifest(result.path).sha256
        typer.echo(audit_registration(result.version, sha256, reason or default, by))
