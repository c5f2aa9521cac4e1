"""Where an effective setting comes from, for ``stream-app config``: the environment or a
default, and which default."""

from __future__ import annotations

from pathlib import Path

from stream_app.config import Settings, xdg_data_home


def models_dir_source(settings: Settings) -> str:
    """Where ``settings.models_dir`` comes from, for ``stream-app config``: the setting, the
    working directory's ``./models``, or the per-user default (see :func:`default_models_dir`)."""
    if "models_dir" in settings.model_fields_set:
        return "set by STREAM_APP_MODELS_DIR"
    if settings.models_dir == Path.cwd() / "models":
        return "default: ./models of the working directory"
    base = "$XDG_DATA_HOME" if xdg_data_home() is not None else "~/.local/share"
    return f"default: per-user, under {base}; no ./models in the working directory"
