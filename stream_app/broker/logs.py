"""Reading the local broker's log files: the last lines of a log, and the report a failed start
raises (the ERROR/FATAL lines with their causes, the last lines of the broker log, the JVM's own
output).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from stream_app.exceptions import BrokerError

__all__ = ["failure_report", "tail_lines"]


def tail_lines(path: Path, n: int) -> list[str]:
    """The last ``n`` lines of ``path`` (empty if the file is missing), reading from the end."""
    if n <= 0:
        return []
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            block = 8192
            data = b""
            while size > 0 and data.count(b"\n") <= n:
                step = min(block, size)
                size -= step
                fh.seek(size)
                data = fh.read(step) + data
                block *= 2
    except FileNotFoundError:
        return []
    lines = data.decode("utf-8", "replace").splitlines()
    return lines[-n:]


def _error_lines(lines: Sequence[str], limit: int = 8) -> list[str]:
    """The last ERROR/FATAL log lines with the exception (and root cause) lines after them."""
    picked: list[str] = []
    for i, line in enumerate(lines):
        if "] ERROR " in line or "] FATAL " in line:
            picked.append(line)
            following = lines[i + 1] if i + 1 < len(lines) else ""
            if following and not following.startswith(("[", "\t", " ")):
                picked.append(following)
        elif line.startswith("Caused by:") and line not in picked:
            picked.append(line)
    return picked[-limit:]


def failure_report(what: str, log_path: Path, console_log_path: Path) -> BrokerError:
    """A :class:`BrokerError` saying ``what`` failed, with the errors and last lines of the broker
    log (``log_path``) and the JVM's output (``console_log_path``)."""
    parts = [what, f"Broker log: {log_path}"]
    errors = _error_lines(tail_lines(log_path, 400))
    if errors:
        parts.append("Errors in the log:\n" + "\n".join(f"  {line}" for line in errors))
    lines = tail_lines(log_path, 20)
    if lines:
        parts.append("Last 20 log lines:\n" + "\n".join(f"  {line}" for line in lines))
    console = tail_lines(console_log_path, 20)
    if console:
        parts.append(
            f"JVM output ({console_log_path}):\n" + "\n".join(f"  {line}" for line in console)
        )
    return BrokerError("\n".join(parts))
