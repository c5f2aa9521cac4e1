"""Run a worker as a child process: used by the demo, the benchmarks and the fault tests.

The child is ``python -m stream_app worker`` with its own environment (bootstrap, topic prefix,
app id, models, state dir, web port), its own log file and a pid file; it is stopped by that pid
(SIGTERM, then SIGKILL after a grace period), never by name.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from stream_app.exceptions import StreamAppError

READY_MARK = "[^Worker]: Ready"


class WorkerProcessError(StreamAppError, RuntimeError):
    """The worker child did not start or stop as expected."""


class WorkerProcess:
    """One worker child process with a log file and a pid file under ``home``."""

    def __init__(
        self,
        home: Path,
        env: Mapping[str, str],
        name: str = "worker",
        cwd: Path | None = None,
        python: str | None = None,
    ) -> None:
        """``cwd``: the child's working directory (default: this process's). ``python``: the
        interpreter to run it with (default: this process's)."""
        self.python = python or sys.executable
        self.home = home
        self.env = {**os.environ, **env}
        self.name = name
        self.cwd = cwd
        self.log_path = home / f"{name}.log"
        self.pid_path = home / f"{name}.pid"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    def start(self, extra_args: tuple[str, ...] = ()) -> None:
        """Start the child (its log is appended to, so restarts keep history)."""
        self.home.mkdir(parents=True, exist_ok=True)
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [self.python, "-m", "stream_app", "worker", *extra_args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        self.pid_path.write_text(str(self.proc.pid))

    def log_text(self, since_start: bool = True) -> str:
        """The child's log (from its latest start by default)."""
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as fh:
            fh.seek(self._log_offset if since_start else 0)
            return fh.read().decode(errors="replace")

    def wait_ready(self, timeout: float = 90.0) -> float:
        """Block until the worker logs that it is ready; returns the seconds it took."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if READY_MARK in self.log_text():
                return time.monotonic() - start
            if self.proc is not None and self.proc.poll() is not None:
                raise WorkerProcessError(
                    f"worker exited with {self.proc.returncode} before it was ready; "
                    f"log {self.log_path}:\n{self.tail()}"
                )
            time.sleep(0.2)
        raise WorkerProcessError(
            f"worker not ready after {timeout:.0f} s; log {self.log_path}:\n{self.tail()}"
        )

    def tail(self, lines: int = 30) -> str:
        """The last lines of the log since the latest start."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    @property
    def running(self) -> bool:
        """Whether the child is alive."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.pid_path.unlink(missing_ok=True)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL at once (fault tests)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.pid_path.unlink(missing_ok=True)
