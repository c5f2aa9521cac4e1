"""``stream-app models list|promote|rollback``: the registry and which versions serve."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from stream_app.scoring.serving import Serving

EXIT_ERROR = 1

app = typer.Typer(
    help="The model registry: list versions, promote one to champion or challenger, roll back. "
    "Running workers that do not pin a role swap within STREAM_APP_MODEL_WATCH_INTERVAL_S.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _role(challenger: bool) -> str:
    return "challenger" if challenger else "champion"


@app.command("list")
def list_models() -> None:
    """Every registered version: type, training data, test metrics, hash, and its role."""
    from rich.console import Console
    from rich.table import Table

    from stream_app.config import get_settings
    from stream_app.scoring.registry import list_versions, read_manifest
    from stream_app.scoring.serving import read_serving

    settings = get_settings()
    serving = read_serving(settings.models_dir)
    versions = list_versions(settings.models_dir)
    table = Table(title=f"Models in {settings.models_dir}")
    for column in ("version", "role", "type", "training data", "AUC", "AP", "sha256"):
        table.add_column(column)
    for version in versions:
        m = read_manifest(settings.models_dir / version)
        role = ""
        if serving is not None:
            role = "champion" if serving.champion == version else ""
            role = "challenger" if serving.challenger == version else role
        elif version == versions[-1]:
            role = "champion (newest)"
        metrics = m.metrics.get("test", m.metrics)
        auc, ap = metrics.get("auc_roc"), metrics.get("average_precision")
        table.add_row(
            version,
            role,
            m.model_type,
            m.training_data_tag,
            f"{auc:.4f}" if isinstance(auc, float) else "",
            f"{ap:.4f}" if isinstance(ap, float) else "",
            m.sha256[:12],
        )
    Console().print(table)


def _apply(change: Callable[..., Serving], what: str, role: str, *args: Any) -> tuple[Serving, str]:
    """Run ``change`` (promote or rollback) on the group's current assignment (the control
    topic's, else this machine's serving.json), publish the result to the control topic, then
    write serving.json; (the new content, where it went). Errors exit with a message."""
    from stream_app.config import get_settings
    from stream_app.exceptions import ModelIntegrityError, ModelNotFoundError, StreamAppError
    from stream_app.scoring.assignment import (
        ASSIGNMENT_TOPIC,
        base_uri,
        from_serving,
        publish,
        read_latest,
        to_serving,
        who,
    )
    from stream_app.scoring.serving import write_serving

    settings = get_settings()
    by = who()
    topic = settings.topic(ASSIGNMENT_TOPIC)
    try:
        if settings.model_assignment == "file":
            serving = change(settings.models_dir, *args, by=by)
            return serving, f"{settings.models_dir}/serving.json"
        from stream_app.io.topics import ensure_topics

        ensure_topics(settings, [ASSIGNMENT_TOPIC])
        published = read_latest(settings)
        current = to_serving(published.assignment) if published is not None else None
        serving = change(settings.models_dir, *args, current=current, by=by, write=False)
        assignment = from_serving(
            serving,
            settings.models_dir,
            settings.app_id,
            base_uri(settings),
            by,
            published.assignment if published is not None else None,
        )
        offset = publish(settings, assignment)
    except (ModelIntegrityError, ModelNotFoundError) as exc:
        typer.echo(f"error: not {what}: {exc}", err=True)
        raise typer.Exit(EXIT_ERROR) from exc
    except StreamAppError as exc:
        typer.echo(
            f"error: not {what}: the assignment could not be published to {topic} ({exc}); "
            "serving.json is unchanged. STREAM_APP_MODEL_ASSIGNMENT=file changes serving.json "
            "only (workers of this machine).",
            err=True,
        )
        raise typer.Exit(EXIT_ERROR) from exc
    write_serving(settings.models_dir, serving)
    ref = assignment.get("champion" if role == "champion" else "challenger")
    source = f" from {ref.uri}" if ref is not None else ""
    return serving, (
        f"{topic}@{offset} for group {settings.app_id}{source}, and "
        f"{settings.models_dir}/serving.json; workers follow within "
        f"STREAM_APP_MODEL_WATCH_INTERVAL_S"
    )


@app.command()
def promote(
    version: Annotated[
        str, typer.Argument(help="Registered version (`none` with --challenger: stop shadowing).")
    ],
    challenger: Annotated[
        bool, typer.Option("--challenger", help="Promote to challenger instead of champion.")
    ] = False,
) -> None:
    """Make VERSION the champion (or challenger) of every worker of the group, after it loads
    with its SHA-256 matching its manifest and features the feature module computes: published
    to the control topic models.assignment (with its URI under STREAM_APP_MODELS_URI and its
    hashes) and written to models/serving.json."""
    from stream_app.scoring.serving import Role
    from stream_app.scoring.serving import promote as do_promote

    role: Role = "challenger" if challenger else "champion"
    target = None if challenger and version.lower() == "none" else version
    serving, where = _apply(do_promote, "promoted", role, target, role)
    last = serving.history[-1]
    typer.echo(f"{role}: {last['previous']} -> {last['version']} ({where})")


@app.command()
def rollback(
    challenger: Annotated[
        bool, typer.Option("--challenger", help="Roll back the challenger instead.")
    ] = False,
) -> None:
    """Serve the version the champion (or challenger) had before its latest promotion (in the
    group's assignment; published and written as `promote` does)."""
    from stream_app.scoring.serving import rollback as do_rollback

    role = _role(challenger)
    serving, where = _apply(do_rollback, "rolled back", role, role)
    last = serving.history[-1]
    typer.echo(f"{role}: {last['previous']} -> {last['version']} (rollback; {where})")


@app.command()
def assignment(
    publish_file: Annotated[
        bool,
        typer.Option(
            "--publish",
            help="Publish this machine's models/serving.json as the group's assignment (to "
            "initialise an empty control topic, or to undo a change made elsewhere).",
        ),
    ] = False,
) -> None:
    """Show the group's model assignment on the control topic models.assignment (what every
    worker that does not pin a role serves), with its audit trail."""
    import orjson

    from stream_app.config import get_settings
    from stream_app.exceptions import StreamAppError
    from stream_app.scoring.assignment import (
        ASSIGNMENT_TOPIC,
        base_uri,
        encode,
        from_serving,
        publish,
        read_latest,
        who,
    )
    from stream_app.scoring.serving import read_serving

    settings = get_settings()
    topic = settings.topic(ASSIGNMENT_TOPIC)
    try:
        if publish_file:
            from stream_app.io.topics import ensure_topics

            serving = read_serving(settings.models_dir)
            if serving is None:
                typer.echo(f"error: no {settings.models_dir}/serving.json to publish", err=True)
                raise typer.Exit(EXIT_ERROR)
            ensure_topics(settings, [ASSIGNMENT_TOPIC])
            by = who()
            serving.history.append(
                {
                    "role": None,
                    "version": None,
                    "previous": None,
                    "action": "publish",
                    "at": serving.updated_at,
                    "by": by,
                }
            )
            offset = publish(
                settings,
                from_serving(serving, settings.models_dir, settings.app_id, base_uri(settings), by),
            )
            typer.echo(f"published {settings.models_dir}/serving.json to {topic}@{offset}")
        published = read_latest(settings)
    except StreamAppError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_ERROR) from exc
    if published is None:
        typer.echo(
            f"no assignment of group {settings.app_id} on {topic}: workers follow their own "
            "models/serving.json (`stream-app models promote` or `models assignment --publish` "
            "publishes one)"
        )
        return
    data = orjson.loads(encode(published.assignment))
    typer.echo(f"{topic}@{published.offset} (group {settings.app_id}):")
    typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
