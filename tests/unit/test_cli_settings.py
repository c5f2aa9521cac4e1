"""Every command reads its settings one way (``stream_app.cli.settings.command_settings``): the
environment as it is when the command runs, then the same object for the rest of the command."""

from __future__ import annotations

import pathlib

import pytest

from stream_app.cli.settings import command_settings
from stream_app.config import get_settings

CLI = pathlib.Path(__file__).resolve().parents[2] / "stream_app" / "cli"


@pytest.fixture(autouse=True)
def fresh_cache():
    """No settings of this module's environment left cached for the next tests."""
    yield
    get_settings.cache_clear()


def test_a_command_reads_the_environment_as_it_is_now(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_APP_TOPIC_PREFIX", "first.")
    first = command_settings()
    assert first.topic_prefix == "first."
    assert get_settings() is first  # what the command calls sees the same settings
    monkeypatch.setenv("STREAM_APP_TOPIC_PREFIX", "second.")
    assert get_settings() is first  # cached within a command
    second = command_settings()
    assert second.topic_prefix == "second."
    assert get_settings() is second


def test_no_command_builds_settings_of_its_own() -> None:
    """Settings() or get_settings() directly in a command would read the environment another
    way (models.py and compare.py still call get_settings: their owners' follow-up)."""
    offenders = {
        path.name
        for path in CLI.glob("*.py")
        if path.name not in {"settings.py", "models.py", "compare.py"}
        and ("Settings()" in path.read_text() or "get_settings()" in path.read_text())
    }
    assert offenders == set()
