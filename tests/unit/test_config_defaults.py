"""Defaults that depend on where stream-app runs: the model registry never in site-packages."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from stream_app.config import Settings, default_models_dir
from stream_app.config_sources import models_dir_source


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory without models/, a home of its own, no XDG_DATA_HOME or override."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.delenv("STREAM_APP_MODELS_DIR", raising=False)
    return tmp_path


def test_models_dir_is_the_working_directorys_models_when_there_is_one(elsewhere: Path) -> None:
    (elsewhere / "cwd" / "models").mkdir()
    assert Settings().models_dir == elsewhere / "cwd" / "models"


def test_models_dir_is_per_user_otherwise(elsewhere: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    per_user = elsewhere / "home" / ".local" / "share" / "stream-app" / "models"
    assert default_models_dir() == per_user
    monkeypatch.setenv("XDG_DATA_HOME", str(elsewhere / "xdg"))
    assert Settings().models_dir == elsewhere / "xdg" / "stream-app" / "models"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")  # the XDG spec: absolute only
    assert Settings().models_dir == per_user


def test_models_dir_is_never_inside_the_package(elsewhere: Path) -> None:
    import stream_app

    package_parent = Path(stream_app.__file__).resolve().parent.parent
    assert not Settings().models_dir.is_relative_to(package_parent)


def test_the_setting_wins(elsewhere: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (elsewhere / "cwd" / "models").mkdir()
    monkeypatch.setenv("STREAM_APP_MODELS_DIR", str(elsewhere / "registry"))
    assert Settings().models_dir == elsewhere / "registry"


def test_config_command_shows_the_effective_models_dir(elsewhere: Path) -> None:
    from stream_app.cli.main import app

    result = CliRunner().invoke(app, ["config"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    rows = {
        cells[1].strip(): cells[2].strip()
        for cells in (row.split("│") for row in result.output.splitlines())
        if len(cells) > 3
    }
    assert rows["models_dir"] == str(
        elsewhere / "home" / ".local" / "share" / "stream-app" / "models"
    )
    assert rows["replication_factor"] == "1"


def test_models_dir_source_names_where_it_comes_from(
    elsewhere: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert models_dir_source(Settings()) == (
        "default: per-user, under ~/.local/share; no ./models in the working directory"
    )
    monkeypatch.setenv("XDG_DATA_HOME", str(elsewhere / "xdg"))
    assert models_dir_source(Settings()) == (
        "default: per-user, under $XDG_DATA_HOME; no ./models in the working directory"
    )
    (elsewhere / "cwd" / "models").mkdir()
    assert models_dir_source(Settings()) == "default: ./models of the working directory"
    monkeypatch.setenv("STREAM_APP_MODELS_DIR", str(elsewhere / "cwd" / "models"))
    # The same directory, but named by the setting: the setting is the source.
    assert models_dir_source(Settings()) == "set by STREAM_APP_MODELS_DIR"


def test_config_command_says_where_the_models_dir_comes_from(elsewhere: Path) -> None:
    from stream_app.cli.main import app

    result = CliRunner().invoke(app, ["config"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    per_user = elsewhere / "home" / ".local" / "share" / "stream-app" / "models"
    assert result.output.splitlines()[-1] == (
        f"models directory: {per_user} (default: per-user, under ~/.local/share; "
        "no ./models in the working directory)"
    )
