"""What the local broker needs from this machine: TCP ports on the loopback interface (free, in
use, accepting connections), whether a bootstrap address is local, process lookups in ``/proc``,
advisory file locks, and running a command to completion with its output captured.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = [
    "LOCAL_HOSTS",
    "LOOPBACK",
    "file_lock",
    "free_port",
    "free_ports",
    "local_port",
    "pid_alive",
    "port_accepts",
    "port_in_use",
    "read_cmdline",
    "run_captured",
]

LOOPBACK = "127.0.0.1"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """``count`` distinct TCP ports that are free on ``host`` right now (asked from the kernel).

    All sockets stay bound until every port is chosen, so the ports are distinct.
    """
    if count < 1:
        raise ValueError("count must be at least 1")
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port(host: str = LOOPBACK) -> int:
    """One TCP port that is free on ``host`` right now."""
    return free_ports(1, host)[0]


def port_in_use(port: int, host: str = LOOPBACK) -> bool:
    """True when something listens on ``host:port`` (a bind with SO_REUSEADDR fails)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def port_accepts(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    """True when a TCP connection to ``host:port`` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def local_port(bootstrap: str) -> int | None:
    """The port of ``bootstrap`` when every address in it is local (127.0.0.1/localhost/::1).

    Returns the port of the first address, or None when any address is remote or unparsable.
    ``"127.0.0.1:9092"`` -> 9092; ``"PLAINTEXT://localhost:29092"`` -> 29092;
    ``"kafka.example.com:9092"`` -> None.
    """
    ports: list[int] = []
    for raw in bootstrap.split(","):
        entry = raw.strip()
        if not entry:
            continue
        if "://" in entry:
            entry = entry.split("://", 1)[1]
        host, sep, port = entry.rpartition(":")
        host = host.strip("[]").lower()
        if not sep or host not in LOCAL_HOSTS or not port.isdigit():
            return None
        ports.append(int(port))
    return ports[0] if ports else None


def read_cmdline(pid: int) -> list[str] | None:
    """The argv of process ``pid`` from ``/proc/<pid>/cmdline``; None if there is no such process.

    A zombie has an empty command line (``[]``).
    """
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    if not raw:
        return []
    return [part.decode("utf-8", "surrogateescape") for part in raw.rstrip(b"\0").split(b"\0")]


def pid_alive(pid: int) -> bool:
    """True when process ``pid`` exists and is not a zombie."""
    if pid <= 0:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        text = stat.read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    except OSError:
        text = ""
    if text:
        # Format: "<pid> (<comm>) <state> ..."; comm may contain spaces and parentheses.
        state = text.rsplit(")", 1)[-1].split()[0]
        return state not in {"Z", "X", "x"}
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (flock) on ``path`` for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def run_captured(cmd: Sequence[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` in ``cwd`` without stdin and return its exit code and text output (whatever
    the code); :class:`subprocess.TimeoutExpired` after ``timeout`` seconds."""
    return subprocess.run(
        cmd,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
