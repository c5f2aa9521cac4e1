"""``stream-app evaluate csv|topic|served`` and the old names kept as deprecated aliases: the CLI's
``replay --csv|--topic|--served`` and the client's ``replay_range`` / ``StreamClient.replay`` warn
once, then run the new command with the same arguments."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stream_app.cli import evaluate
from stream_app.cli.main import app
from stream_app.client import StreamClient, evaluate_topic, replay_range
from stream_app.client import evaluate as client_evaluate


@pytest.mark.parametrize("command", [[], ["csv"], ["topic"], ["served"]])
def test_every_evaluate_command_has_help(command):
    result = CliRunner().invoke(app, ["evaluate", *command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_replay_is_hidden_from_the_command_list_but_still_answers():
    listing = CliRunner().invoke(app, ["--help"])
    assert "evaluate" in listing.output and "replay" not in listing.output
    result = CliRunner().invoke(app, ["replay", "--help"])
    assert result.exit_code == 0 and "Deprecated" in result.output


@pytest.fixture
def calls(monkeypatch):
    """The new commands, replaced by recorders of their arguments."""
    seen: list[tuple[str, tuple]] = []
    for name in ("csv_command", "topic_command", "served_command"):
        monkeypatch.setattr(evaluate, name, lambda *args, _name=name: seen.append((_name, args)))
    return seen


COMMON = ["--from", "2026-03-01", "--to", "2026-03-02", "--out", "out"]


@pytest.mark.parametrize(
    ("old", "new", "runs"),
    [
        (["--csv", "data.csv"], "csv", "csv_command"),
        (["--topic", "transactions"], "topic", "topic_command"),
        (["--served"], "served", "served_command"),
    ],
)
def test_replay_warns_once_on_stderr_then_runs_the_new_command(calls, old, new, runs):
    result = CliRunner().invoke(app, ["replay", *old, *COMMON])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert "deprecated" in lines[0] and f"stream-app evaluate {new}" in lines[0]
    assert "deprecated" not in result.stdout
    assert [name for name, _ in calls] == [runs]


def test_replay_passes_every_option_through(calls):
    CliRunner().invoke(
        app,
        ["replay", "--csv", "data.csv", *COMMON, "--model", "v2", "--champion", "v1",
         "--models-dir", "reg", "--history-days", "3", "--label-delay-days", "2.5",
         "--handbook-protocol"],
    )  # fmt: skip
    assert calls == [
        (
            "csv_command",
            (Path("data.csv"), "2026-03-01", "2026-03-02", Path("out"), ["v2"], "v1",
             Path("reg"), 3, 2.5, True),
        )
    ]  # fmt: skip
    calls.clear()
    CliRunner().invoke(app, ["replay", "--topic", "t", *COMMON, "--history-days", "1"])
    assert calls == [
        (
            "topic_command",
            ("2026-03-01", "2026-03-02", Path("out"), "t", None, None, None, 1,
             evaluate.LABEL_DELAY_DAYS),
        )
    ]  # fmt: skip


@pytest.mark.parametrize("flags", [[], ["--csv", "a.csv", "--served"]])
def test_replay_needs_exactly_one_source(calls, flags):
    result = CliRunner().invoke(app, ["replay", *flags, *COMMON])
    assert result.exit_code == 1
    assert "exactly one of --csv PATH, --topic NAME or --served" in result.output
    assert calls == []


def test_the_clients_old_names_warn_and_call_evaluate_topic(monkeypatch):
    seen = []
    monkeypatch.setattr(
        client_evaluate, "evaluate_topic", lambda *a, **k: seen.append((a, k)) or "evaluation"
    )
    with pytest.warns(DeprecationWarning, match="use evaluate_topic"):
        assert replay_range(0, 10, topic="t") == "evaluation"
    assert seen == [((0, 10), {"topic": "t"})]
    assert evaluate_topic is not replay_range


def test_stream_client_replay_warns_and_calls_evaluate_topic(monkeypatch):
    client = StreamClient(kafka_bootstrap_servers="127.0.0.1:1")
    seen = []
    monkeypatch.setattr(client, "evaluate_topic", lambda *a, **k: seen.append((a, k)) or "ev")
    with pytest.warns(DeprecationWarning, match="StreamClient.evaluate_topic"):
        assert client.replay(date(2026, 3, 1), date(2026, 3, 2), out_dir="x") == "ev"
    assert seen == [((date(2026, 3, 1), date(2026, 3, 2)), {"out_dir": "x"})]
