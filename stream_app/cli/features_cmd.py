"""``stream-app features``: the broker-less feature path, exported for comparison or training."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated

import typer


def features(
    csv: Annotated[Path, typer.Option("--csv", help="Handbook-format CSV (.csv or .csv.gz).")],
    out: Annotated[Path, typer.Option("--out", help="Parquet file to write.")],
    date_from: Annotated[
        str | None, typer.Option("--from", help="First day, YYYY-MM-DD (inclusive).")
    ] = None,
    date_to: Annotated[
        str | None, typer.Option("--to", help="Last day, YYYY-MM-DD (inclusive).")
    ] = None,
    label_delay_days: Annotated[
        float, typer.Option(help="Days after a transaction its label becomes known.")
    ] = 7.0,
) -> None:
    """Compute every feature of every transaction with the worker's own state code, no broker.

    Writes event_id, event_time, customer_id, terminal_id, each feature under its definition's
    name, and the label, one row per transaction in event-time order.
    """
    import pandas as pd
    from rich.console import Console

    from stream_app.features.definitions import FEATURE_NAMES
    from stream_app.features.offline import build_features
    from stream_app.sources.handbook_csv import read_csv_events
    from stream_app.sources.schedule import batch_from_events

    console = Console()
    first = date.fromisoformat(date_from) if date_from else None
    last = date.fromisoformat(date_to) if date_to else None
    with console.status(f"Reading {csv}…"):
        batch = batch_from_events(read_csv_events(csv, date_from=first, date_to=last))
    X = build_features(batch, label_delay_days=label_delay_days, progress=True)
    frame = pd.DataFrame(X, columns=list(FEATURE_NAMES))
    frame.insert(0, "terminal_id", batch.terminal_id)
    frame.insert(0, "customer_id", batch.customer_id)
    frame.insert(0, "event_time", pd.to_datetime(batch.ts, unit="s", utc=True))
    frame.insert(0, "event_id", batch.event_id)
    frame["label"] = batch.label
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(out, index=False)
    console.print(f"{len(frame):,} rows, {len(FEATURE_NAMES)} features → {out}")
