"""The README stays true to the code: every setting is documented, every command exists."""

import re

from typer.testing import CliRunner

from stream_app.cli.main import app
from stream_app.config import REPO_ROOT, Settings

README = (REPO_ROOT / "README.md").read_text()


def env_name(field: str) -> str:
    alias = Settings.model_fields[field].validation_alias
    return alias if isinstance(alias, str) else f"STREAM_APP_{field.upper()}"


def test_every_setting_is_in_the_configuration_table():
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", README, flags=re.MULTILINE))
    assert documented == {env_name(f) for f in Settings.model_fields}


def test_every_documented_command_has_help():
    runner = CliRunner()
    commands = set(re.findall(r"`stream-app (\w+)", README))
    assert {"broker", "topics", "worker", "publish", "tail", "train", "demo", "config"} <= commands
    for command in commands:
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0, (command, result.output)
        assert "Usage" in result.output


def test_no_merge_conflict_left_in_the_readme():
    """A merge once left both sides of a configuration row, with its markers, in the README."""
    markers = [line for line in README.splitlines() if line.startswith(("<<<<<<< ", ">>>>>>> "))]
    assert markers == []
