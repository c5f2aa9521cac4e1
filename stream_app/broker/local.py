"""A real, single-node Apache Kafka broker (KRaft: broker + controller in one JVM) that stream_app
downloads, starts, checks and stops itself -- no Docker, only Java 17+ and (once) Maven.

Layout
------
* Jars: shared by every broker of a Kafka version, outside the repository:
  ``~/.cache/stream_app/kafka-<version>/libs`` (or ``$STREAM_APP_KAFKA_JARS_DIR``). Maven fetches
  them once (:meth:`LocalBroker.ensure_jars`) into a temporary directory that is renamed into
  place, so an interrupted download never leaves a half-filled cache.
* ``home`` (one per broker): ``server.properties`` and ``log4j2.properties`` (rewritten at every
  start), ``data/`` (the log dirs, formatted on first use), ``logs/server.log`` (broker log),
  ``logs/console.log`` (JVM stdout/stderr) and ``broker.pid``.

Safety: a process is only ever signalled when its ``/proc/<pid>/cmdline`` is a ``kafka.Kafka``
JVM started with *this* home's ``server.properties``; a stale pid file naming anything else is
just removed. Nothing is ever killed by name.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from stream_app.exceptions import BrokerError, ConfigError

__all__ = [
    "DEFAULT_KAFKA_VERSION",
    "JARS_DIR_ENV",
    "SCRAM_MECHANISMS",
    "BrokerStatus",
    "Listener",
    "LocalBroker",
    "SaslSslListener",
    "ScramUser",
    "default_jars_dir",
    "free_port",
    "free_ports",
    "local_port",
    "new_cluster_id",
    "pid_alive",
    "port_in_use",
    "read_cmdline",
]

log = logging.getLogger(__name__)

DEFAULT_KAFKA_VERSION = "4.1.1"
JARS_DIR_ENV = "STREAM_APP_KAFKA_JARS_DIR"
LOOPBACK = "127.0.0.1"
MAX_HEAP_MB = 512
MIN_HEAP_MB = 128
MAIN_CLASS = "kafka.Kafka"
SECURITY_PROTOCOLS = frozenset({"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"})
RESERVED_LISTENER_NAMES = frozenset({"PLAINTEXT", "CONTROLLER"})
SCRAM_MECHANISMS = frozenset({"SCRAM-SHA-256", "SCRAM-SHA-512"})
STANDARD_AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
SCRAM_LOGIN_MODULE = "org.apache.kafka.common.security.scram.ScramLoginModule"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

_PACKAGE_DIR = Path(__file__).resolve().parent
POM_PATH = _PACKAGE_DIR / "pom.xml"
LOG4J_TEMPLATE_PATH = _PACKAGE_DIR / "log4j2.properties"
_LOG_FILE_PLACEHOLDER = "@LOG_FILE@"
_LISTENER_NAME_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")
_PROPERTY_KEY_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")
# SCRAM user names and passwords go into Kafka's own `name=[k=v,...]` syntax: keep them free of
# the characters that syntax uses (and of anything a shell or a properties file could mangle).
_SCRAM_NAME_RE = re.compile(r"^[A-Za-z0-9._@-]{1,128}$")
_SCRAM_PASSWORD_RE = re.compile(r"^[A-Za-z0-9._@%+~!#^*()-]{1,256}$")
_MAVEN_TIMEOUT_S = 1800.0
_FORMAT_TIMEOUT_S = 120.0


# --------------------------------------------------------------------------------------------
# Small helpers (module level so that tests and other modules can use them)
# --------------------------------------------------------------------------------------------


def default_jars_dir(kafka_version: str = DEFAULT_KAFKA_VERSION) -> Path:
    """Where the Kafka jars of ``kafka_version`` are cached.

    ``$STREAM_APP_KAFKA_JARS_DIR`` (the directory holding the jars themselves) wins; otherwise
    ``~/.cache/stream_app/kafka-<version>/libs``.
    """
    override = os.environ.get(JARS_DIR_ENV, "").strip()
    if override:
        return Path(override).expanduser().resolve()
    return Path.home() / ".cache" / "stream_app" / f"kafka-{kafka_version}" / "libs"


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


def _port_accepts(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
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


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (22 chars).

    Same shape as ``kafka-storage random-uuid`` (which also never starts with ``-``), without
    paying for a JVM start.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(os.urandom(16)).decode("ascii").rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


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


def _tail_lines(path: Path, n: int) -> list[str]:
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


def _escape_property(value: str) -> str:
    """Escape a value for a Java .properties file (backslashes; no newlines allowed)."""
    if "\n" in value or "\r" in value:
        raise ConfigError(f"broker property values cannot contain newlines: {value!r}")
    escaped = value.replace("\\", "\\\\")
    if escaped[:1].isspace():
        escaped = "\\" + escaped
    return escaped


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (flock) on ``path`` for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _find_java() -> str:
    """Path of the ``java`` executable ($JAVA_HOME/bin/java first, then PATH)."""
    java_home = os.environ.get("JAVA_HOME", "").strip()
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("java")
    if found:
        return found
    raise BrokerError(
        "Java 17 or newer is needed to run the local Kafka broker, and no `java` was found "
        "(neither $JAVA_HOME/bin/java nor on PATH). Install a JDK/JRE "
        "(Debian/Ubuntu: `sudo apt-get install openjdk-17-jre-headless`; macOS: "
        "`brew install openjdk@17`) or set JAVA_HOME -- or point KAFKA_BOOTSTRAP_SERVERS at an "
        "existing Kafka cluster instead."
    )


# --------------------------------------------------------------------------------------------
# Public types
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Listener:
    """An extra client listener besides the built-in ``PLAINTEXT`` one (e.g. ``SASL_SSL``).

    It is added to ``listeners``, ``advertised.listeners`` and
    ``listener.security.protocol.map``; its own settings (keystores, JAAS, SASL mechanisms) go in
    ``extra_properties`` as ``listener.name.<name lower-case>.*`` keys.
    """

    name: str
    port: int
    protocol: str = "PLAINTEXT"
    host: str = LOOPBACK
    advertised_host: str | None = None

    def __post_init__(self) -> None:
        """Validate the name, protocol and port."""
        if not _LISTENER_NAME_RE.match(self.name):
            raise ConfigError(
                f"listener name {self.name!r} must be upper-case letters, digits and underscores"
            )
        if self.name in RESERVED_LISTENER_NAMES:
            raise ConfigError(f"listener name {self.name!r} is reserved by LocalBroker")
        if self.protocol not in SECURITY_PROTOCOLS:
            raise ConfigError(
                f"listener {self.name}: protocol {self.protocol!r} is not one of "
                f"{sorted(SECURITY_PROTOCOLS)}"
            )
        if not 1 <= self.port <= 65535:
            raise ConfigError(f"listener {self.name}: port {self.port} is out of range")

    @property
    def listen_address(self) -> str:
        """``NAME://host:port`` for ``listeners``."""
        return f"{self.name}://{self.host}:{self.port}"

    @property
    def advertised_address(self) -> str:
        """``NAME://host:port`` for ``advertised.listeners``."""
        return f"{self.name}://{self.advertised_host or self.host}:{self.port}"

    @property
    def bootstrap(self) -> str:
        """``host:port`` a client connects to for this listener."""
        return f"{self.advertised_host or self.host}:{self.port}"


@dataclass(frozen=True)
class ScramUser:
    """A SCRAM user of the local broker (its password never shows in ``repr``)."""

    name: str
    password: str = field(repr=False)

    def __post_init__(self) -> None:
        """Refuse names and passwords that Kafka's ``[name=...,password=...]`` syntax breaks on."""
        if not _SCRAM_NAME_RE.match(self.name):
            raise ConfigError(
                f"SCRAM user name {self.name!r}: use 1-128 letters, digits and . _ @ -"
            )
        if not _SCRAM_PASSWORD_RE.match(self.password):
            raise ConfigError(
                f"SCRAM password of {self.name!r}: use 1-256 letters, digits and . _ @ % + ~ ! # "
                "^ * ( ) - (no commas, brackets, quotes, '=' or spaces)"
            )

    @property
    def principal(self) -> str:
        """The Kafka principal of this user, ``User:<name>``."""
        return f"User:{self.name}"


@dataclass(frozen=True)
class SaslSslListener:
    """A ``SASL_SSL`` client listener with SCRAM authentication, for :class:`LocalBroker`.

    The broker keeps its PLAINTEXT client listener (loopback only; the readiness check and the
    inter-broker traffic use it) and its PLAINTEXT controller listener.

    :param port: TCP port on 127.0.0.1.
    :param keystore: PEM file holding the broker's private key (unencrypted PKCS#8, ``BEGIN
        PRIVATE KEY``) followed by its certificate chain. The certificate must name the address
        clients connect to (``IP:127.0.0.1`` / ``DNS:localhost`` in subjectAltName): clients
        verify it.
    :param users: SCRAM users written into the metadata when the storage is formatted
        (``kafka-storage format --add-scram``), i.e. on the first start of a fresh home; add users
        to a running broker with :meth:`LocalBroker.add_scram_user`.
    :param mechanism: ``SCRAM-SHA-512`` (default) or ``SCRAM-SHA-256``.
    :param acls: enable Kafka's ``StandardAuthorizer``: every principal needs ACLs, except the
        super users: ``User:ANONYMOUS`` (the PLAINTEXT listeners: loopback, controller,
        inter-broker) and ``super_users``.
    :param super_users: user names (not principals) allowed everything when ``acls`` is on.
    :param name: listener name (``listener.name.<name lower-case>.*`` properties).
    """

    port: int
    keystore: Path
    users: tuple[ScramUser, ...] = ()
    mechanism: str = "SCRAM-SHA-512"
    acls: bool = False
    super_users: tuple[str, ...] = ()
    name: str = "SASL_SSL"

    def __post_init__(self) -> None:
        """Validate the mechanism, users and super users (the listener itself in Listener)."""
        if self.mechanism not in SCRAM_MECHANISMS:
            raise ConfigError(
                f"SASL_SSL listener: mechanism {self.mechanism!r} is not one of "
                f"{sorted(SCRAM_MECHANISMS)}"
            )
        names = [user.name for user in self.users]
        if len(set(names)) != len(names):
            raise ConfigError(f"SASL_SSL listener: duplicate SCRAM users {names}")
        for name in self.super_users:
            if not _SCRAM_NAME_RE.match(name):
                raise ConfigError(f"SASL_SSL listener: super user {name!r} is not a user name")
        self.listener  # noqa: B018 - validates name and port

    @property
    def listener(self) -> Listener:
        """The :class:`Listener` it adds to the broker."""
        return Listener(self.name, self.port, protocol="SASL_SSL")

    def properties(self) -> dict[str, str]:
        """The broker properties this listener needs (besides the listener lists)."""
        prefix = f"listener.name.{self.name.lower()}"
        mech = self.mechanism.lower()
        props = {
            "sasl.enabled.mechanisms": self.mechanism,
            f"{prefix}.sasl.enabled.mechanisms": self.mechanism,
            f"{prefix}.{mech}.sasl.jaas.config": f"{SCRAM_LOGIN_MODULE} required;",
            f"{prefix}.ssl.keystore.type": "PEM",
            f"{prefix}.ssl.keystore.location": str(Path(self.keystore).resolve()),
            f"{prefix}.ssl.client.auth": "none",
        }
        if self.acls:
            principals = ["User:ANONYMOUS", *(f"User:{name}" for name in self.super_users)]
            props["authorizer.class.name"] = STANDARD_AUTHORIZER
            props["super.users"] = ";".join(principals)
        return props

    def format_arguments(self) -> list[str]:
        """``--add-scram`` arguments of ``kafka-storage format`` for :attr:`users`."""
        args: list[str] = []
        for user in self.users:
            args += ["--add-scram", f"{self.mechanism}=[name={user.name},password={user.password}]"]
        return args


@dataclass(frozen=True)
class BrokerStatus:
    """What :meth:`LocalBroker.status` reports."""

    running: bool
    pid: int | None
    bootstrap: str
    log_path: Path
    data_dir: Path
    home: Path


# --------------------------------------------------------------------------------------------
# The broker
# --------------------------------------------------------------------------------------------


class LocalBroker:
    """One local single-node KRaft Kafka broker living in ``home``.

    >>> broker = LocalBroker(Path("/tmp/kafka"), port=9092)   # doctest: +SKIP
    >>> bootstrap = broker.start()                             # "127.0.0.1:9092"
    >>> broker.stop()

    :param home: directory of this broker (data, logs, pid file, generated configs).
    :param port: PLAINTEXT client port on 127.0.0.1.
    :param controller_port: KRaft controller port (default ``port + 1``).
    :param heap_mb: JVM heap in MB, 128..512 (``-Xmx``; ``-Xms`` is ``min(256, heap_mb)``).
    :param kafka_version: Apache Kafka version whose jars Maven fetches.
    :param jars_dir: directory holding the jars (default :func:`default_jars_dir`).
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
        kafka_version: str = DEFAULT_KAFKA_VERSION,
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
            else default_jars_dir(kafka_version)
        )
        self.extra_properties: dict[str, str] = {
            str(k): str(v) for k, v in (extra_properties or {}).items()
        }
        self.sasl_ssl = sasl_ssl
        extra = (sasl_ssl.listener,) if sasl_ssl is not None else ()
        self.listeners: tuple[Listener, ...] = (*listeners, *extra)
        self._proc: subprocess.Popen[bytes] | None = None
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
            f"LocalBroker(home={str(self.home)!r}, port={self.port}, "
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
            "# Generated by stream_app.broker.local.LocalBroker; rewritten at every start.",
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
            f"{self.jars_dir}{os.sep}*",
            MAIN_CLASS,
            str(self.properties_path),
        ]

    def write_configs(self) -> None:
        """Create the home layout and (re)write ``server.properties`` and ``log4j2.properties``."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.properties_path.write_text(self.render_properties(), encoding="utf-8")
        self.log4j_path.write_text(self.render_log4j(), encoding="utf-8")

    # --- jars ----------------------------------------------------------------------------------

    def jars_present(self, directory: Path | None = None) -> bool:
        """True when ``directory`` (default :attr:`jars_dir`) holds this Kafka version's jars."""
        d = directory if directory is not None else self.jars_dir
        v = self.kafka_version
        return (d / f"kafka_2.13-{v}.jar").is_file() and (d / f"kafka-clients-{v}.jar").is_file()

    def ensure_jars(self) -> Path:
        """Download the Kafka jars with Maven unless they are already cached; return their dir.

        Maven writes into a temporary sibling directory which is renamed into place only when
        complete; a file lock keeps concurrent callers from downloading twice.
        """
        if self.jars_present():
            return self.jars_dir
        target = self.jars_dir
        target.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(target.parent / f".{target.name}.lock"):
            if self.jars_present():
                return target
            if target.exists() and any(target.iterdir()):
                raise BrokerError(
                    f"{target} exists but holds no kafka_2.13-{self.kafka_version}.jar. Remove "
                    f"it (or set {JARS_DIR_ENV} to another directory) and try again."
                )
            _find_java()  # Maven needs Java too; say so clearly.
            mvn = shutil.which("mvn")
            if mvn is None:
                raise BrokerError(
                    f"Maven (`mvn`) is needed once to download the Kafka {self.kafka_version} "
                    f"jars into {target}, and it is not on PATH. Install it (Debian/Ubuntu: "
                    "`sudo apt-get install maven`; macOS: `brew install maven`), or put the jars "
                    f"there yourself (or set {JARS_DIR_ENV}), or point KAFKA_BOOTSTRAP_SERVERS "
                    "at an existing Kafka cluster."
                )
            with tempfile.TemporaryDirectory(
                prefix=f".{target.name}.download-", dir=target.parent
            ) as tmp:
                work = Path(tmp)
                out = work / "libs"
                shutil.copyfile(POM_PATH, work / "pom.xml")
                cmd = [
                    mvn,
                    "-B",
                    "--no-transfer-progress",
                    "-f",
                    str(work / "pom.xml"),
                    "dependency:copy-dependencies",
                    f"-DoutputDirectory={out}",
                    f"-Dkafka.version={self.kafka_version}",
                ]
                log.info("downloading Kafka %s jars with Maven into %s", self.kafka_version, target)
                try:
                    result = subprocess.run(
                        cmd,
                        cwd=work,
                        stdin=subprocess.DEVNULL,
                        capture_output=True,
                        text=True,
                        timeout=_MAVEN_TIMEOUT_S,
                        check=False,
                    )
                except subprocess.TimeoutExpired as exc:
                    raise BrokerError(
                        f"Maven did not finish downloading the Kafka {self.kafka_version} jars "
                        f"within {_MAVEN_TIMEOUT_S:.0f} s. Check network access to Maven Central."
                    ) from exc
                if result.returncode != 0 or not self.jars_present(out):
                    output = (result.stdout or "") + (result.stderr or "")
                    tail = "\n".join(output.strip().splitlines()[-25:])
                    raise BrokerError(
                        f"Maven could not download the Kafka {self.kafka_version} jars "
                        f"(exit code {result.returncode}). Check network access to Maven Central "
                        f"and that Kafka {self.kafka_version} exists. Command: {' '.join(cmd)}\n"
                        f"Last lines of Maven's output:\n{tail}"
                    )
                if target.exists():
                    target.rmdir()  # empty, checked above
                os.replace(out, target)
        return target

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
        return _tail_lines(self.log_path, n)

    def _failure(self, what: str) -> BrokerError:
        parts = [what, f"Broker log: {self.log_path}"]
        errors = _error_lines(self.tail_log(400))
        if errors:
            parts.append("Errors in the log:\n" + "\n".join(f"  {line}" for line in errors))
        lines = self.tail_log(20)
        if lines:
            parts.append("Last 20 log lines:\n" + "\n".join(f"  {line}" for line in lines))
        console = _tail_lines(self.console_log_path, 20)
        if console:
            parts.append(
                f"JVM output ({self.console_log_path}):\n"
                + "\n".join(f"  {line}" for line in console)
            )
        return BrokerError("\n".join(parts))

    # --- lifecycle -------------------------------------------------------------------------------

    def is_formatted(self) -> bool:
        """True when ``data/`` was already formatted (holds ``meta.properties``)."""
        return (self.data_dir / "meta.properties").is_file()

    def format_storage(self, java: str | None = None) -> str:
        """Format ``data/`` with a fresh cluster id (``kafka-storage format``); return the id.

        The SASL_SSL listener's SCRAM users are written into the new metadata here
        (``--add-scram``), so they exist before the broker first starts.
        """
        java = java or _find_java()
        cluster_id = new_cluster_id()
        cmd = [
            java,
            "-Xmx256m",
            f"-Dlog4j2.configurationFile={self.log4j_path}",
            "-cp",
            f"{self.jars_dir}{os.sep}*",
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
            result = subprocess.run(
                cmd,
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=_FORMAT_TIMEOUT_S,
                check=False,
            )
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

    def _check_ports_free(self) -> None:
        ports = [self.port, self.controller_port, *(lst.port for lst in self.listeners)]
        taken = [p for p in ports if port_in_use(p)]
        if taken:
            raise self._failure(
                f"Cannot start the local broker in {self.home}: port(s) "
                f"{', '.join(map(str, taken))} on {LOOPBACK} are already in use by another "
                "process. Stop it, or choose other ports (e.g. KAFKA_BOOTSTRAP_SERVERS="
                f"{LOOPBACK}:<port> for `stream-app broker start`)."
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
                raise self._failure(
                    f"The local Kafka broker (pid {pid}, home {self.home}) {how} during startup."
                )
            if _port_accepts(self.port):
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
                raise self._failure(
                    f"The local Kafka broker (pid {pid}, home {self.home}) did not answer on "
                    f"{self.bootstrap} within {timeout:.0f} s."
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
        with _file_lock(self.home / ".lock"):
            pid = self.running_pid()
            if pid is not None:
                self._wait_ready(pid, timeout)
                return self.bootstrap
            self._remove_pid_file()  # stale: dead process or not ours
            self._check_ports_free()
            java = _find_java()
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
        with _file_lock(self.home / ".lock"):
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
