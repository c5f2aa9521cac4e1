"""``stream-app models list|promote|rollback``: the registry and which versions serve."""

from __future__ import annotations

from typing import Annotated

import typer

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


@app.command()
def promote(
    version: Annotated[
        str, typer.Argument(help="Registered version (`none` with --challenger: stop shadowing).")
    ],
    challenger: Annotated[
        bool, typer.Option("--challenger", help="Promote to challenger instead of champion.")
    ] = False,
) -> None:
    """Make VERSION the champion (or challenger) in models/serving.json, after it loads with its
    SHA-256 matching its manifest and features the feature module computes."""
    from stream_app.config import get_settings
    from stream_app.exceptions import ModelIntegrityError, ModelNotFoundError
    from stream_app.scoring.serving import Role
    from stream_app.scoring.serving import promote as do_promote

    settings = get_settings()
    role: Role = "challenger" if challenger else "champion"
    target = None if challenger and version.lower() == "none" else version
    try:
        serving = do_promote(settings.models_dir, target, role)
    except (ModelIntegrityError, ModelNotFoundError) as exc:
        typer.echo(f"error: not promoted: {exc}", err=True)
        raise typer.Exit(EXIT_ERROR) from exc
    last = serving.history[-1]
    typer.echo(
        f"{role}: {last['previous']} -> {last['version']} ({settings.models_dir}/serving.json)"
    )


@app.command()
def rollback(
    challenger: Annotated[
        bool, typer.Option("--challenger", help="Roll back the challenger instead.")
    ] = False,
) -> None:
    """Serve the version the champion (or challenger) had before its latest promotion."""
    from stream_app.config import get_settings
    from stream_app.exceptions import ModelIntegrityError, ModelNotFoundError
    from stream_app.scoring.serving import rollback as do_rollback

    settings = get_settings()
    role = _role(challenger)
    try:
        serving = do_rollback(settings.models_dir, "challenger" if challenger else "champion")
    except (ModelIntegrityError, ModelNotFoundError) as exc:
        typer.echo(f"error: not rolled back: {exc}", err=True)
        raise typer.Exit(EXIT_ERROR) from exc
    last = serving.history[-1]
    typer.echo(f"{role}: {last['previous']} -> {last['version']} (rollback)")
