"""Supervision of the local broker's JVM (:class:`LocalBroker`): start it detached and wait until
it answers, keep its pid file, stop or kill it by that pid, report its status, and add SCRAM users
to it while it runs.

Safety: a process is only ever signalled when its ``/proc/<pid>/cmdline`` is a ``kafka.Kafka``
JVM started with *this* home's ``server.properties``; a stale pid file naming anything else is
just removed. Nothing is ever killed by name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from stream_app.broker.config import MAIN_CLASS, BrokerConfig
from stream_app.broker.host import (
    LOOPBACK,
    file_lock,
    pid_alive,
    port_accepts,
    port_in_use,
    read_cmdline,
)
from stream_app.broker.jars import find_java
from stream_app.broker.listeners import ScramUser
from stream_app.broker.logs import failure_report, tail_lines
from stream_app.exceptions import BrokerError, ConfigError

__all__ = ["BrokerStatus", "LocalBroker"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrokerStatus:
    """What :meth:`LocalBroker.status` reports."""

    running: bool
    pid: int | None
    bootstrap: str
    log_path: Path
    data_dir: Path
    home: Path


class LocalBroker(BrokerConfig):
    """One local single-node KRaft Kafka broker living in ``home``, started, checked and stopped
    from here (the parameters are those of :class:`~stream_app.broker.config.BrokerConfig`).

    >>> broker = LocalBroker(Path("/tmp/kafka"), port=9092)  # doctest: +SKIP
    >>> broker.start()  # doctest: +SKIP
    '127.0.0.1:9092'
    >>> broker.stop()  # doctest: +SKIP
    """

    _proc: subprocess.Popen[bytes] | None = None  # the JVM this object started, if any

    # --- process bookkeeping ---------------------------------------------------------------------

    def read_pid(self) -> int | None:
        """The pid written in the pid file, or None (missing or unreadable file)."""
        try:
            text = self.pid_path.read_text(encoding="utf-8").strip()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return int(text) if text.isdigit() and int(text) > 0 else None

    def is_own_cmdline(self, argv: Sequence[str] | None) -> bool:
        """True when ``argv`` is a ``kafka.Kafka`` JVM started with *this* home's properties."""
        if not argv:
            return False
        return MAIN_CLASS in argv and str(self.properties_path) in argv

    def owns_pid(self, pid: int) -> bool:
        """True when ``pid`` is alive and is this broker's JVM (checked via /proc cmdline)."""
        return pid_alive(pid) and self.is_own_cmdline(read_cmdline(pid))

    def running_pid(self) -> int | None:
        """The pid of this broker's live JVM according to the pid file, else None."""
        pid = self.read_pid()
        if pid is not None and self.owns_pid(pid):
            return pid
        return None

    def _remove_pid_file(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.pid_path.unlink()

    def _alive(self, pid: int) -> bool:
        """Liveness; reaps the JVM this object started. Other pids: a zombie counts as dead
        (it is never reaped here, so no one else's exit status is stolen)."""
        if self._proc is not None and self._proc.pid == pid:
            return self._proc.poll() is None
        return pid_alive(pid)

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self._alive(pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)
        return True

    def _exit_code(self, pid: int) -> int | None:
        if self._proc is not None and self._proc.pid == pid:
            return self._proc.poll()
        return None

    def tail_log(self, n: int = 20) -> list[str]:
        """The last ``n`` lines of ``logs/server.log``."""
        return tail_lines(self.log_path, n)

    # --- lifecycle -------------------------------------------------------------------------------

    def _check_ports_free(self) -> None:
        ports = [self.port, self.controller_port, *(lst.port for lst in self.listeners)]
        taken = [p for p in ports if port_in_use(p)]
        if taken:
            raise failure_report(
                f"Cannot start the local broker in {self.home}: port(s) "
                f"{', '.join(map(str, taken))} on {LOOPBACK} are already in use by another "
                "process. Stop it, or choose other ports (e.g. KAFKA_BOOTSTRAP_SERVERS="
                f"{LOOPBACK}:<port> for `stream-app broker start`).",
                self.log_path,
                self.console_log_path,
            )

    def _launch(self, java: str) -> subprocess.Popen[bytes]:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        with self.console_log_path.open("wb") as console:
            proc = subprocess.Popen(
                self.java_command(java),
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        self._proc = proc
        tmp = self.pid_path.with_suffix(".pid.tmp")
        tmp.write_text(f"{proc.pid}\n", encoding="utf-8")
        os.replace(tmp, self.pid_path)
        return proc

    def _wait_ready(self, pid: int, timeout: float) -> None:
        """Block until the broker answers a metadata request listing itself, or raise."""
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + timeout
        admin: AdminClient | None = None
        quiet = logging.getLogger("stream_app.broker.readiness")
        while True:
            if not self._alive(pid):
                code = self._exit_code(pid)
                how = f"exited with code {code}" if code is not None else "exited"
                raise failure_report(
                    f"The local Kafka broker (pid {pid}, home {self.home}) {how} during startup.",
                    self.log_path,
                    self.console_log_path,
                )
            if port_accepts(self.port):
                if admin is None:
                    admin = AdminClient(
                        {
                            "bootstrap.servers": self.bootstrap,
                            "socket.connection.setup.timeout.ms": 2000,
                        },
                        logger=quiet,
                    )
                try:
                    metadata = admin.list_topics(timeout=2.0)
                except KafkaException:
                    metadata = None
                if metadata is not None and metadata.brokers:
                    return
            if time.monotonic() >= deadline:
                raise failure_report(
                    f"The local Kafka broker (pid {pid}, home {self.home}) did not answer on "
                    f"{self.bootstrap} within {timeout:.0f} s.",
                    self.log_path,
                    self.console_log_path,
                )
            time.sleep(0.2)

    def start(self, timeout: float = 60.0) -> str:
        """Start the broker (idempotent) and return its bootstrap address ``127.0.0.1:<port>``.

        If the pid file names a live JVM of this home, only waits until it answers. Otherwise
        downloads the jars if needed (not counted in ``timeout``), writes the configs, formats the
        storage on first use, starts the JVM detached and waits up to ``timeout`` seconds for it
        to answer a metadata request. Raises :class:`BrokerError` (with the last log lines) if a
        port is taken, the JVM dies, or it does not answer in time (it is then stopped).
        """
        self.home.mkdir(parents=True, exist_ok=True)
        with file_lock(self.home / ".lock"):
            pid = self.running_pid()
            if pid is not None:
                self._wait_ready(pid, timeout)
                return self.bootstrap
            self._remove_pid_file()  # stale: dead process or not ours
            self._check_ports_free()
            java = find_java()
            self.ensure_jars()
            self.write_configs()
            if not self.is_formatted():
                self.format_storage(java)
            started = time.monotonic()
            proc = self._launch(java)
            try:
                self._wait_ready(proc.pid, timeout)
            except BaseException:
                self._terminate(proc.pid, signal.SIGTERM, 10.0)
                self._remove_pid_file()
                raise
            log.info(
                "local Kafka broker pid %d ready on %s in %.1f s",
                proc.pid,
                self.bootstrap,
                time.monotonic() - started,
            )
            return self.bootstrap

    def _terminate(self, pid: int, sig: signal.Signals, timeout: float) -> None:
        """Send ``sig``; SIGKILL if still alive after ``timeout``. Caller checked ownership."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if self._wait_exit(pid, timeout):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if not self._wait_exit(pid, 10.0):
            raise BrokerError(f"the local Kafka broker (pid {pid}) survived SIGKILL")

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the broker gracefully: SIGTERM, then SIGKILL after ``timeout`` seconds.

        Returns True if a broker process was stopped. Only a pid whose cmdline is this home's
        JVM is signalled; a stale pid file is just removed.
        """
        if not self.home.is_dir():
            return False
        with file_lock(self.home / ".lock"):
            pid = self.running_pid()
            if pid is None:
                self._remove_pid_file()
                return False
            self._terminate(pid, signal.SIGTERM, timeout)
            self._remove_pid_file()
            log.info("local Kafka broker pid %d stopped", pid)
            return True

    def kill(self) -> bool:
        """SIGKILL the broker at once (fault tests). Returns True if a process was killed.

        Same ownership check as :meth:`stop`; the data dir is kept, so :meth:`start` recovers.
        """
        pid = self.running_pid()
        if pid is None:
            self._remove_pid_file()
            return False
        self._terminate(pid, signal.SIGKILL, 10.0)
        self._remove_pid_file()
        return True

    def add_scram_user(self, user: ScramUser, timeout: float = 15.0) -> None:
        """Create (or change the password of) a SCRAM user on the running broker.

        Sends the same AlterUserScramCredentials request as ``kafka-configs --alter --add-config
        'SCRAM-SHA-512=[password=...]' --entity-type users``, through the PLAINTEXT listener.
        """
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import (
            AdminClient,
            ScramCredentialInfo,
            ScramMechanism,
            UserScramCredentialUpsertion,
        )

        if self.sasl_ssl is None:
            raise ConfigError("this LocalBroker has no SASL_SSL listener (pass sasl_ssl=...)")
        mechanism = ScramMechanism[self.sasl_ssl.mechanism.replace("-", "_")]
        admin = AdminClient(
            {"bootstrap.servers": self.bootstrap},
            logger=logging.getLogger("stream_app.broker.admin"),
        )
        upsert = UserScramCredentialUpsertion(
            user.name, ScramCredentialInfo(mechanism, 8192), user.password.encode()
        )
        futures = admin.alter_user_scram_credentials([upsert], request_timeout=timeout)
        try:
            for future in futures.values():
                future.result(timeout=timeout)
        except KafkaException as exc:
            raise BrokerError(
                f"could not set the SCRAM credentials of {user.name!r}: {exc}"
            ) from exc

    def status(self) -> BrokerStatus:
        """Whether this home's JVM is running, and where its address, log and data are."""
        pid = self.running_pid()
        return BrokerStatus(
            running=pid is not None,
            pid=pid,
            bootstrap=self.bootstrap,
            log_path=self.log_path,
            data_dir=self.data_dir,
            home=self.home,
        )

    def __enter__(self) -> LocalBroker:
        """Start the broker; stop it when the ``with`` block ends."""
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop the broker."""
        self.stop()
