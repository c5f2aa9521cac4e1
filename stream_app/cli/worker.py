"""``stream-app worker``: run the Faust scoring worker."""

from __future__ import annotations

from typing import Annotated

import typer


def worker(
    champion: Annotated[
        str | None,
        typer.Option(help="Champion model version (default: STREAM_APP_CHAMPION or the newest)."),
    ] = None,
    challenger: Annotated[
        str | None,
        typer.Option(
            help="Challenger version to shadow on scores.shadow (default: STREAM_APP_CHALLENGER; "
            "unset: no shadow).",
        ),
    ] = None,
) -> None:
    """Consume transactions and labels, keep windowed state, publish score envelopes.

    Loads the champion (and any challenger) only after its SHA-256 matches its manifest, makes
    sure the declared topics exist, then runs until SIGINT/SIGTERM (in-flight batches finish,
    offsets commit). Drift statistics go to `drift`, challenger scores to `scores.shadow`.
    """
    import faust

    from stream_app.app import create_app
    from stream_app.config import get_settings
    from stream_app.io.topics import ensure_topics
    from stream_app.logs import logging_config
    from stream_app.scoring.model import ScoringModel
    from stream_app.scoring.registry import resolve_version

    settings = get_settings()
    model = ScoringModel.load(resolve_version(settings.models_dir, champion or settings.champion))
    typer.echo(
        f"champion {model.version} (sha256 {model.sha256[:12]}…, "
        f"{len(model.features)} features) · broker {settings.kafka_bootstrap_servers}"
    )
    shadow = None
    shadow_version = challenger or settings.challenger
    if shadow_version:
        shadow = ScoringModel.load(resolve_version(settings.models_dir, shadow_version))
        typer.echo(f"challenger {shadow.version} (sha256 {shadow.sha256[:12]}…) in shadow")
    ensure_topics(settings)
    app = create_app(settings, model, challenger=shadow)
    faust.Worker(
        app,
        loglevel=settings.log_level.lower(),
        logging_config=logging_config(settings),
        quiet=True,
    ).execute_from_commandline()
