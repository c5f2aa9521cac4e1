"""``stream-app worker``: run the Faust scoring worker."""

from __future__ import annotations

from typing import Annotated

import typer


def worker(
    champion: Annotated[
        str | None,
        typer.Option(
            help="Pin the champion to this version (default: STREAM_APP_CHAMPION; unset: follow "
            "the group's model assignment on models.assignment, else models/serving.json, else "
            "the newest).",
            show_default=False,
        ),
    ] = None,
    challenger: Annotated[
        str | None,
        typer.Option(
            help="Pin the challenger shadowed on scores.shadow (default: STREAM_APP_CHALLENGER; "
            "unset: follow the model assignment, else models/serving.json, else no shadow).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Consume transactions and labels, keep windowed state, publish score envelopes.

    Loads the champion (and any challenger) only after its SHA-256 matches its manifest, makes
    sure the declared topics and the tables' changelogs exist, then runs until SIGINT/SIGTERM
    (in-flight batches finish, offsets commit). Drift statistics go to `drift`, challenger scores
    to `scores.shadow`.
    A role that is not pinned follows `stream-app models promote` / `rollback` while running:
    the new version is verified and loaded aside, then swapped in between two micro-batches.
    """
    import faust
    from threadpoolctl import threadpool_limits

    from stream_app.app import create_app
    from stream_app.cli.settings import command_settings
    from stream_app.exceptions import ModelIntegrityError, StreamAppError
    from stream_app.io.topics import ensure_changelogs, ensure_topics
    from stream_app.logs import logging_config
    from stream_app.monitoring.startup import wait_for_kafka
    from stream_app.scoring.artifacts import materialise
    from stream_app.scoring.assignment_topic import ASSIGNMENT_TOPIC, read_latest
    from stream_app.scoring.canary import CanarySpec
    from stream_app.scoring.model import ScoringModel
    from stream_app.scoring.registry import resolve_version
    from stream_app.scoring.serving import ROLES, Role, read_serving, served_version

    settings = command_settings()
    try:  # a broker that is down is waited for; refused credentials end the worker at once
        wait_for_kafka(settings, say=lambda line: typer.echo(line, err=True))
    except StreamAppError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    pinned = {
        "champion": champion or settings.champion,
        "challenger": challenger or settings.challenger,
    }
    follow: frozenset[Role] = frozenset(r for r in ROLES if not pinned[r])
    published = None
    if follow and settings.model_assignment == "topic":
        try:
            published = read_latest(settings)
        except StreamAppError as exc:
            typer.echo(f"warning: model assignment not read ({exc})", err=True)
    topic = settings.topic(ASSIGNMENT_TOPIC)

    def assigned(role: Role) -> tuple[ScoringModel | None, bool]:
        """The version the group's assignment names for ``role``: (model, whether one is named
        and loaded); (None, False) when the role is pinned, there is no assignment, or its
        version is refused here (then this machine's choice, as without an assignment)."""
        if published is None or role not in follow:
            return None, False
        ref = published.assignment.get(role)
        if ref is None:
            return None, True
        try:
            path, fetched = materialise(ref, settings.models_dir, settings.model_fetch_timeout_s)
            if fetched:
                typer.echo(
                    f"fetched {ref.version} from {ref.uri} into {path} (sha256 "
                    f"{ref.sha256[:12]}… matches the assignment and its manifest)"
                )
            loaded = ScoringModel.load(path)
        except ModelIntegrityError as exc:
            typer.echo(
                f"error: refused {role} {ref.version} of the model assignment "
                f"({topic}@{published.offset}): {exc}; starting with this machine's choice",
                err=True,
            )
            return None, False
        return loaded, True

    def how(role: Role) -> str:
        if role not in follow:
            return "pinned"
        if settings.model_assignment == "file":
            return "follows models/serving.json"
        if published is None:
            return f"follows models/serving.json until an assignment is published on {topic}"
        return f"follows the model assignment {topic}@{published.offset}"

    model, from_topic = assigned("champion")
    if model is None:
        champion_version = served_version(settings.models_dir, "champion", pinned["champion"])
        assert champion_version is not None
        model = ScoringModel.load(resolve_version(settings.models_dir, champion_version))
    typer.echo(
        f"champion {model.version} (sha256 {model.sha256[:12]}…, {len(model.features)} "
        f"features; {how('champion')}) · broker {settings.kafka_bootstrap_servers}"
    )
    shadow, from_topic = assigned("challenger")
    if shadow is None and not from_topic:
        shadow_version = served_version(settings.models_dir, "challenger", pinned["challenger"])
        if shadow_version:
            shadow = ScoringModel.load(resolve_version(settings.models_dir, shadow_version))
    if shadow is not None:
        typer.echo(
            f"challenger {shadow.version} (sha256 {shadow.sha256[:12]}…) in shadow; "
            f"{how('challenger')}"
        )
    try:  # also the pre-flight: a wrong password or CA fails here, clearly, within seconds
        ensure_topics(settings)
        ensure_changelogs(settings)  # before Faust: a fresh app id's first metadata lacks them
    except StreamAppError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    canary = None
    if "challenger" in follow:
        if published is not None:
            canary = published.assignment.canary_spec()
        else:
            serving = read_serving(settings.models_dir)
            canary = CanarySpec.of(serving.canary) if serving is not None else None
    if settings.canary_share is not None and shadow is not None:
        canary = CanarySpec(shadow.version, settings.canary_share)
    if canary is not None:
        on = shadow is not None and shadow.version == canary.version
        typer.echo(
            f"canary {canary.describe()}"
            + ("" if on else f" (not on: the challenger is {shadow.version if shadow else None})")
            + (" (pinned by STREAM_APP_CANARY_SHARE)" if settings.canary_share is not None else "")
        )
    app = create_app(settings, model, challenger=shadow, follow=follow, canary=canary)
    # Native thread pools (OpenMP in tree models, BLAS) held to one thread in the worker, as in
    # the challenger's process: a micro-batch is too small to gain from more, and idle pool
    # threads spin-wait on cores the broker and the event loop need.
    threadpool_limits(limits=1)
    faust.Worker(
        app,
        loglevel=settings.log_level.lower(),
        logging_config=logging_config(settings),
        quiet=True,
    ).execute_from_commandline()
