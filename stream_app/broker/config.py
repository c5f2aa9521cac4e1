"""The configuration of one local broker (:class:`BrokerConfig`): its home directory, ports, heap
and Kafka version, the ``server.properties`` and ``log4j2.properties`` it runs with, the JVM
command line, and the KRaft format of its storage.

``home`` (one per broker) holds ``server.properties`` and ``log4j2.properties`` (rewritten at every
start), ``data/`` (the log dirs, formatted on first use), ``logs/server.log`` (broker log),
``logs/console.log`` (JVM stdout/stderr) and ``broker.pid``.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from stream_app.broker import jars
from stream_app.broker.host import LOOPBACK, run_captured
from stream_app.broker.listeners import Listener, SaslSslListener
from stream_app.exceptions import BrokerError, ConfigError

__all__ = ["MAIN_CLASS", "MAX_HEAP_MB", "MIN_HEAP_MB", "BrokerConfig", "new_cluster_id"]

MAX_HEAP_MB = 512
MIN_HEAP_MB = 128
MAIN_CLASS = "kafka.Kafka"
LOG4J_TEMPLATE_PATH = Path(__file__).resolve().parent / "log4j2.properties"
_LOG_FILE_PLACEHOLDER = "@LOG_FILE@"
_PROPERTY_KEY_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")
_FORMAT_TIMEOUT_S = 120.0


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (22 chars).

    Same shape as ``kafka-storage random-uuid`` (which also never starts with ``-``), without
    paying for a JVM start.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(os.urandom(16)).decode("ascii").rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _escape_property(value: str) -> str:
    """Escape a value for a Java .properties file (backslashes; no newlines allowed)."""
    if "\n" in value or "\r" in value:
        raise ConfigError(f"broker property values cannot contain newlines: {value!r}")
    escaped = value.replace("\\", "\\\\")
    if escaped[:1].isspace():
        escaped = "\\" + escaped
    return escaped


class BrokerConfig:
    """What one local single-node KRaft broker living in ``home`` runs with.

    :param home: directory of this broker (data, logs, pid file, generated configs).
    :param port: PLAINTEXT client port on 127.0.0.1.
    :param controller_port: KRaft controller port (default ``port + 1``).
    :param heap_mb: JVM heap in MB, 128..512 (``-Xmx``; ``-Xms`` is ``min(256, heap_mb)``).
    :param kafka_version: Apache Kafka version whose jars Maven fetches.
    :param jars_dir: directory holding the jars (default
        :func:`~stream_app.broker.jars.default_jars_dir`).
    :param extra_properties: merged into ``server.properties`` last (they override the defaults).
    :param listeners: extra client listeners (e.g. a ``SASL_SSL`` one), see :class:`Listener`.
    :param sasl_ssl: a SCRAM-authenticated TLS client listener with its keystore and users, see
        :class:`SaslSslListener` (it is added to ``listeners``).
    """

    def __init__(
        self,
        home: Path,
        port: int = 9092,
        controller_port: int | None = None,
        heap_mb: int = MAX_HEAP_MB,
        kafka_version: str = jars.DEFAULT_KAFKA_VERSION,
        jars_dir: Path | None = None,
        extra_properties: Mapping[str, str] | None = None,
        *,
        listeners: Sequence[Listener] = (),
        sasl_ssl: SaslSslListener | None = None,
    ) -> None:
        self.home = Path(home).expanduser().resolve()
        self.port = int(port)
        self.controller_port = int(controller_port) if controller_port is not None else port + 1
        self.heap_mb = int(heap_mb)
        self.kafka_version = kafka_version
        self.jars_dir = (
            Path(jars_dir).expanduser().resolve()
            if jars_dir is not None
            else jars.default_jars_dir(kafka_version)
        )
        self.extra_properties: dict[str, str] = {
            str(k): str(v) for k, v in (extra_properties or {}).items()
        }
        self.sasl_ssl = sasl_ssl
        extra = (sasl_ssl.listener,) if sasl_ssl is not None else ()
        self.listeners: tuple[Listener, ...] = (*listeners, *extra)
        self._validate()

    def _validate(self) -> None:
        if not MIN_HEAP_MB <= self.heap_mb <= MAX_HEAP_MB:
            raise ConfigError(
                f"heap_mb={self.heap_mb}: the local broker heap must be between "
                f"{MIN_HEAP_MB} and {MAX_HEAP_MB} MB"
            )
        if not re.match(r"^[0-9][0-9A-Za-z.\-]*$", self.kafka_version):
            raise ConfigError(f"kafka_version {self.kafka_version!r} is not a version number")
        ports = [self.port, self.controller_port, *(listener.port for listener in self.listeners)]
        for p in ports:
            if not 1 <= p <= 65535:
                raise ConfigError(f"port {p} is out of range")
        if len(set(ports)) != len(ports):
            raise ConfigError(f"the broker ports must all differ, got {ports}")
        names = [listener.name for listener in self.listeners]
        if len(set(names)) != len(names):
            raise ConfigError(f"duplicate listener names: {names}")
        for key in self.extra_properties:
            if not _PROPERTY_KEY_RE.match(key):
                raise ConfigError(f"invalid broker property name {key!r}")

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(home={str(self.home)!r}, port={self.port}, "
            f"controller_port={self.controller_port}, kafka_version={self.kafka_version!r})"
        )

    # --- paths ----------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        """Bootstrap address of the PLAINTEXT listener: ``127.0.0.1:<port>``."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def data_dir(self) -> Path:
        """The broker's ``log.dirs`` (KRaft metadata and topic data)."""
        return self.home / "data"

    @property
    def logs_dir(self) -> Path:
        """Directory of ``server.log`` and ``console.log``."""
        return self.home / "logs"

    @property
    def log_path(self) -> Path:
        """The broker log (log4j2, rolling at 20 MB)."""
        return self.logs_dir / "server.log"

    @property
    def console_log_path(self) -> Path:
        """JVM stdout and stderr of the last start."""
        return self.logs_dir / "console.log"

    @property
    def properties_path(self) -> Path:
        """The generated ``server.properties`` (rewritten at every start)."""
        return self.home / "server.properties"

    @property
    def log4j_path(self) -> Path:
        """The generated ``log4j2.properties`` (rewritten at every start)."""
        return self.home / "log4j2.properties"

    @property
    def pid_path(self) -> Path:
        """File holding the pid of the running broker JVM."""
        return self.home / "broker.pid"

    @property
    def sasl_bootstrap(self) -> str:
        """Bootstrap address of the SASL_SSL listener (``ConfigError`` without one)."""
        if self.sasl_ssl is None:
            raise ConfigError("this LocalBroker has no SASL_SSL listener (pass sasl_ssl=...)")
        return self.sasl_ssl.listener.bootstrap

    def listener_bootstrap(self, name: str) -> str:
        """Bootstrap address of the listener called ``name`` (``PLAINTEXT`` or an extra one)."""
        if name == "PLAINTEXT":
            return self.bootstrap
        for listener in self.listeners:
            if listener.name == name:
                return listener.bootstrap
        raise KeyError(name)

    # --- configuration rendering ------------------------------------------------------------

    def server_properties(self) -> dict[str, str]:
        """The effective broker configuration: defaults, then listeners, then ``extra_properties``.

        Listener-related keys are built from the PLAINTEXT and CONTROLLER listeners plus every
        :class:`Listener` given, so a second client listener needs no string surgery. A
        :class:`SaslSslListener` adds its SASL, keystore and (optional) authorizer properties.
        """
        controller = f"{LOOPBACK}:{self.controller_port}"
        listen = [f"PLAINTEXT://{self.bootstrap}", f"CONTROLLER://{controller}"]
        advertised = [f"PLAINTEXT://{self.bootstrap}"]
        protocol_map = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        for listener in self.listeners:
            listen.append(listener.listen_address)
            advertised.append(listener.advertised_address)
            protocol_map.append(f"{listener.name}:{listener.protocol}")
        props: dict[str, str] = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{controller}",
            "listeners": ",".join(listen),
            "advertised.listeners": ",".join(advertised),
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": ",".join(protocol_map),
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # Single local node: after a SIGKILL the restarted broker must wait for the old
            # session to expire before it is unfenced (default 9 s); keep that short.
            "broker.session.timeout.ms": "3000",
            "broker.heartbeat.interval.ms": "1000",
            # The default 128 MB dedupe buffer is a quarter of our small heap.
            "log.cleaner.dedupe.buffer.size": str(32 * 1024 * 1024),
        }
        if self.sasl_ssl is not None:
            props.update(self.sasl_ssl.properties())
        props.update(self.extra_properties)
        return props

    def render_properties(self) -> str:
        """``server.properties`` text for :meth:`server_properties`."""
        lines = [
            "# Generated by stream_app.broker.LocalBroker; rewritten at every start.",
            "# Change it through LocalBroker(extra_properties=...) instead of editing it.",
        ]
        props = self.server_properties()
        lines += [f"{key}={_escape_property(value)}" for key, value in props.items()]
        return "\n".join(lines) + "\n"

    def render_log4j(self) -> str:
        """``log4j2.properties`` text: the packaged template with the log file path filled in."""
        template = LOG4J_TEMPLATE_PATH.read_text(encoding="utf-8")
        return template.replace(_LOG_FILE_PLACEHOLDER, str(self.log_path))

    def java_command(self, java: str = "java") -> list[str]:
        """argv of the broker JVM (heap capped at 512 MB, G1, exit on OOM)."""
        return [
            java,
            f"-Xms{min(256, self.heap_mb)}m",
            f"-Xmx{self.heap_mb}m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.log4j_path}",
            f"-Dkafka.logs.dir={self.logs_dir}",
            "-cp",
            jars.classpath(self.jars_dir),
            MAIN_CLASS,
            str(self.properties_path),
        ]

    def write_configs(self) -> None:
        """Create the home layout and (re)write ``server.properties`` and ``log4j2.properties``."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.properties_path.write_text(self.render_properties(), encoding="utf-8")
        self.log4j_path.write_text(self.render_log4j(), encoding="utf-8")

    # --- jars and storage ---------------------------------------------------------------------

    def jars_present(self, directory: Path | None = None) -> bool:
        """True when ``directory`` (default :attr:`jars_dir`) holds this Kafka version's jars."""
        d = directory if directory is not None else self.jars_dir
        return jars.jars_present(d, self.kafka_version)

    def ensure_jars(self) -> Path:
        """Download the Kafka jars into :attr:`jars_dir` with Maven unless they are already
        cached (see :func:`~stream_app.broker.jars.ensure_jars`); return that directory."""
        return jars.ensure_jars(self.jars_dir, self.kafka_version)

    def is_formatted(self) -> bool:
        """True when ``data/`` was already formatted (holds ``meta.properties``)."""
        return (self.data_dir / "meta.properties").is_file()

    def format_storage(self, java: str | None = None) -> str:
        """Format ``data/`` with a fresh cluster id (``kafka-storage format``); return the id.

        The SASL_SSL listener's SCRAM users are written into the new metadata here
        (``--add-scram``), so they exist before the broker first starts.
        """
        java = java or jars.find_java()
        cluster_id = new_cluster_id()
        cmd = [
            java,
            "-Xmx256m",
            f"-Dlog4j2.configurationFile={self.log4j_path}",
            "-cp",
            jars.classpath(self.jars_dir),
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(self.properties_path),
            "--ignore-formatted",
            *(self.sasl_ssl.format_arguments() if self.sasl_ssl is not None else ()),
        ]
        try:
            result = run_captured(cmd, self.home, _FORMAT_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            raise BrokerError(
                f"formatting {self.data_dir} took over {_FORMAT_TIMEOUT_S:.0f} s"
            ) from exc
        if result.returncode != 0:
            output = ((result.stdout or "") + (result.stderr or "")).strip().splitlines()
            if self.sasl_ssl is not None:  # never echo the SCRAM passwords
                for user in self.sasl_ssl.users:
                    output = [line.replace(user.password, "****") for line in output]
            raise BrokerError(
                f"could not format the broker storage {self.data_dir} "
                f"(exit code {result.returncode}):\n" + "\n".join(output[-20:])
            )
        return cluster_id
