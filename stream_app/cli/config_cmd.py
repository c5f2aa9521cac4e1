"""``stream-app config``: print the effective settings, secrets masked."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from stream_app.cli.settings import command_settings
from stream_app.config import Settings
from stream_app.config_sources import models_dir_source


def config() -> None:
    """Print every setting with its effective value (secrets masked) and its description, then
    the models directory and where it comes from."""
    settings = command_settings()
    table = Table("setting", "value", "description")
    for name, value in settings.describe().items():
        table.add_row(name, value, Settings.model_fields[name].description or "")
    console = Console()
    console.print(table)
    console.print(
        f"models directory: {settings.models_dir} ({models_dir_source(settings)})",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
