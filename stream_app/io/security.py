"""Kafka client connections: the one module that builds the connection settings (bootstrap
servers and security) of every client stream_app opens. It reads the settings through
:class:`KafkaSettings` and imports nothing from ``stream_app.config``, and the configuration
imports nothing from the package.

The ``KAFKA_BOOTSTRAP_SERVERS`` / ``KAFKA_SECURITY_PROTOCOL`` / ``KAFKA_SASL_*`` /
``KAFKA_SSL_CAFILE`` settings become

* :func:`librdkafka_config`: the confluent-kafka (librdkafka) properties of ``publish``, ``tail``,
  ``topics``, ``scorecard``, ``replay`` and the worker's start-up topic check;
* :func:`faust_credentials`: the ``broker_credentials`` of the Faust worker (aiokafka), with an
  :class:`ssl.SSLContext` that trusts the same CA file and also checks the host name.

Both come from :func:`validate`-d settings, so a half-configured connection (SASL without a user,
a CA file that does not exist) is refused before anything connects.

librdkafka does not fail a request when the broker rejects the password or the certificate: it
logs, reconnects and lets the request time out ("Broker transport failure"). :func:`fetch_metadata`
asks for metadata in one-second steps, reads the client's error callbacks between them and raises
:class:`~stream_app.exceptions.KafkaAccessError` with the cause and the setting to fix as soon as
an authentication or TLS error shows up (about a second), instead of waiting out the timeout.
"""

from __future__ import annotations

import logging
import re
import ssl
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ClusterMetadata

from stream_app.exceptions import ConfigError, KafkaAccessError, KafkaUnreachable

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT
    from pydantic import SecretStr


class KafkaSettings(Protocol):
    """The settings a Kafka client is built from (``stream_app.config.Settings`` has them); this
    module reads nothing else, so it needs nothing from ``stream_app.config``."""

    @property
    def kafka_bootstrap_servers(self) -> str: ...
    @property
    def kafka_security_protocol(self) -> str: ...
    @property
    def kafka_sasl_mechanism(self) -> str | None: ...
    @property
    def kafka_sasl_username(self) -> str | None: ...
    @property
    def kafka_sasl_password(self) -> SecretStr | None: ...
    @property
    def kafka_ssl_cafile(self) -> Path | None: ...
    @property
    def transport(self) -> str:
        """The Faust driver (credentials need aiokafka)."""
        ...


SASL_PROTOCOLS = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})
TLS_PROTOCOLS = frozenset({"SSL", "SASL_SSL"})

DEFAULT_CHECK_TIMEOUT_S = 10.0
"""How long :func:`check_access` waits for a broker that does not answer at all."""

_STEP_S = 1.0
_BROKER_PREFIX = re.compile(r"^[a-z_]+://[^/\s]+/[^:\s]+: ")


# --------------------------------------------------------------------------------------------
# Settings -> client configurations
# --------------------------------------------------------------------------------------------


def validate(settings: KafkaSettings) -> None:
    """Refuse security settings that cannot work together (``ConfigError`` naming the setting)."""
    protocol = settings.kafka_security_protocol
    sasl_set = [
        name
        for name, value in (
            ("KAFKA_SASL_MECHANISM", settings.kafka_sasl_mechanism),
            ("KAFKA_SASL_USERNAME", settings.kafka_sasl_username),
            ("KAFKA_SASL_PASSWORD", settings.kafka_sasl_password),
        )
        if value
    ]
    if protocol in SASL_PROTOCOLS:
        missing = [
            name
            for name in ("KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD")
            if name not in sasl_set
        ]
        if missing:
            raise ConfigError(
                f"KAFKA_SECURITY_PROTOCOL={protocol} needs {', '.join(missing)} "
                "(e.g. KAFKA_SASL_MECHANISM=SCRAM-SHA-512 and the user's name and password)"
            )
    elif sasl_set:
        raise ConfigError(
            f"{', '.join(sasl_set)} set, but KAFKA_SECURITY_PROTOCOL={protocol} does not use "
            "SASL: set KAFKA_SECURITY_PROTOCOL=SASL_SSL (or SASL_PLAINTEXT), or unset them"
        )
    cafile = settings.kafka_ssl_cafile
    if cafile is not None:
        if protocol not in TLS_PROTOCOLS:
            raise ConfigError(
                f"KAFKA_SSL_CAFILE is set, but KAFKA_SECURITY_PROTOCOL={protocol} does not use "
                "TLS: set KAFKA_SECURITY_PROTOCOL=SASL_SSL (or SSL), or unset KAFKA_SSL_CAFILE"
            )
        if not Path(cafile).is_file():
            raise ConfigError(f"KAFKA_SSL_CAFILE={cafile} is not a file (a PEM CA bundle)")


def librdkafka_config(settings: KafkaSettings) -> dict[str, str]:
    """The librdkafka properties for ``settings``: bootstrap servers and security.

    With TLS, the broker's certificate must chain to ``KAFKA_SSL_CAFILE`` (or, unset, to the
    system's CAs) and name the host the client connects to (``ssl.endpoint.identification.
    algorithm=https``, librdkafka's default since 2.0, set explicitly).
    """
    validate(settings)
    conf: dict[str, str] = {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "security.protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol in SASL_PROTOCOLS:
        assert settings.kafka_sasl_mechanism and settings.kafka_sasl_username  # validate()
        assert settings.kafka_sasl_password is not None
        conf["sasl.mechanism"] = settings.kafka_sasl_mechanism
        conf["sasl.username"] = settings.kafka_sasl_username
        conf["sasl.password"] = settings.kafka_sasl_password.get_secret_value()
    if settings.kafka_security_protocol in TLS_PROTOCOLS:
        conf["ssl.endpoint.identification.algorithm"] = "https"
        if settings.kafka_ssl_cafile is not None:
            conf["ssl.ca.location"] = str(settings.kafka_ssl_cafile)
    return conf


def ssl_context(settings: KafkaSettings) -> ssl.SSLContext | None:
    """A client TLS context trusting ``KAFKA_SSL_CAFILE`` (else the system CAs); None without TLS.

    Certificates are verified and the host name checked, as librdkafka does.
    """
    validate(settings)
    if settings.kafka_security_protocol not in TLS_PROTOCOLS:
        return None
    cafile = str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile is not None else None
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"KAFKA_SSL_CAFILE={cafile}: not a usable PEM CA bundle ({exc.reason or exc})"
        ) from exc
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def faust_credentials(settings: KafkaSettings) -> CredentialsT | None:
    """``broker_credentials`` for ``faust.App`` (aiokafka driver); None for PLAINTEXT."""
    import faust

    validate(settings)
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    if settings.transport != "aiokafka":
        raise ConfigError(
            f"KAFKA_SECURITY_PROTOCOL={protocol} needs STREAM_APP_TRANSPORT=aiokafka: Faust's "
            "confluent driver takes no credentials"
        )
    context = ssl_context(settings)
    if protocol == "SSL":
        assert context is not None
        return faust.SSLCredentials(context)
    assert settings.kafka_sasl_password is not None  # validate()
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=settings.kafka_sasl_password.get_secret_value(),
        mechanism=settings.kafka_sasl_mechanism,
        ssl_context=context,
    )


# --------------------------------------------------------------------------------------------
# Failing fast and clearly
# --------------------------------------------------------------------------------------------


class ClientErrors:
    """A librdkafka ``error_cb`` that keeps the errors it is given (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._errors: list[KafkaError] = []

    def __call__(self, error: KafkaError) -> None:
        """librdkafka's error callback."""
        with self._lock:
            self._errors.append(error)

    def take(self) -> list[KafkaError]:
        """The errors seen since the previous call."""
        with self._lock:
            errors, self._errors = self._errors, []
        return errors


class SecureAdminClient(AdminClient):
    """An AdminClient that records librdkafka's errors for :func:`fetch_metadata`."""

    def __init__(self, conf: dict[str, Any]) -> None:
        self.client_errors = ClientErrors()
        super().__init__({**conf, "error_cb": self.client_errors})  # type: ignore[dict-item]


class _DebugLog:
    """Takes librdkafka's log lines at DEBUG: an admin request that fails raises an error that
    says why (:func:`fetch_metadata`), so the dozens of reconnect lines meanwhile are noise."""

    def __init__(self, name: str) -> None:
        self._log = logging.getLogger(name)

    def log(self, level: int, msg: str, *args: object) -> None:
        """``logging.Logger.log`` as librdkafka calls it."""
        self._log.debug(msg, *args)


def admin_client(settings: KafkaSettings, **extra: Any) -> SecureAdminClient:
    """An AdminClient for ``settings`` whose errors :func:`fetch_metadata` explains; librdkafka's
    log lines go to the ``stream_app.kafka`` logger at DEBUG."""
    conf: dict[str, Any] = {
        **librdkafka_config(settings),
        "logger": _DebugLog("stream_app.kafka"),
        **extra,
    }
    return SecureAdminClient(conf)


def explain(error: KafkaError, settings: KafkaSettings) -> str | None:
    """One line naming the cause of ``error`` and the setting to fix; None if it is not a
    security problem (a broker that is down or slow, say)."""
    code = error.code()
    text = error.str()
    where = settings.kafka_bootstrap_servers
    lower = text.lower()
    if code == KafkaError._AUTHENTICATION or "sasl authentication error" in lower:
        if "unsupported sasl mechanism" in lower or (
            "mechanism" in lower and "not enabled" in lower
        ):
            return (
                f"Kafka SASL authentication failed at {where}: the broker does not accept "
                f"KAFKA_SASL_MECHANISM={settings.kafka_sasl_mechanism} ({_broker_text(text)})"
            )
        return (
            f"Kafka SASL authentication failed at {where} for user "
            f"{settings.kafka_sasl_username!r} ({settings.kafka_sasl_mechanism}): wrong user name "
            f"or password? Check KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD "
            f"({_broker_text(text)})"
        )
    if code == KafkaError._SSL or "ssl handshake failed" in lower:
        if "certificate verify failed" in lower or "certificate" in lower:
            return (
                f"Kafka TLS handshake with {where} failed: the broker's certificate is not "
                f"trusted by KAFKA_SSL_CAFILE={settings.kafka_ssl_cafile or '(system CAs)'} or "
                "does not name this host; set KAFKA_SSL_CAFILE to the CA that signed the broker "
                f"certificate ({_broker_text(text)})"
            )
        return (
            f"Kafka TLS handshake with {where} failed: {_broker_text(text)}. Check "
            "KAFKA_SECURITY_PROTOCOL and KAFKA_SSL_CAFILE"
        )
    if "incorrect security.protocol" in lower or "security.protocol" in lower:
        return (
            f"Kafka at {where} closed the connection: KAFKA_SECURITY_PROTOCOL="
            f"{settings.kafka_security_protocol} is probably not what this listener expects "
            f"({_broker_text(text)})"
        )
    return None


def _broker_text(text: str) -> str:
    """librdkafka's message without its ``sasl_ssl://host:port/<broker>:`` prefix."""
    return _BROKER_PREFIX.sub("", text, count=1).strip()


def _security_problem(admin: AdminClient, settings: KafkaSettings) -> str | None:
    errors = getattr(admin, "client_errors", None)
    if not isinstance(errors, ClientErrors):
        return None
    admin.poll(0)  # serves the error callbacks
    for error in errors.take():
        message = explain(error, settings)
        if message is not None:
            return message
    return None


def fetch_metadata(admin: AdminClient, settings: KafkaSettings, timeout: float) -> ClusterMetadata:
    """Cluster metadata, or :class:`KafkaAccessError` with the reason.

    With an :func:`admin_client`, an authentication or TLS failure is reported as soon as
    librdkafka sees it (about a second); a broker that does not answer after ``timeout``
    seconds. Any other AdminClient only gets the timeout.
    """
    deadline = time.monotonic() + timeout
    last: KafkaException | None = None
    while True:
        remaining = deadline - time.monotonic()
        try:
            return admin.list_topics(timeout=max(0.05, min(_STEP_S, remaining)))
        except KafkaException as exc:
            last = exc
        problem = _security_problem(admin, settings)
        if problem is not None:
            raise KafkaAccessError(problem)
        if time.monotonic() >= deadline:
            raise KafkaUnreachable(
                f"cannot reach Kafka at {settings.kafka_bootstrap_servers} within {timeout:g}s: "
                f"{last}. Start the local broker (`stream-app broker start`) or set "
                "KAFKA_BOOTSTRAP_SERVERS (and KAFKA_SECURITY_PROTOCOL if the listener needs it)."
            )


def check_access(
    settings: KafkaSettings, timeout: float = DEFAULT_CHECK_TIMEOUT_S
) -> ClusterMetadata:
    """Connect with ``settings`` once and fetch metadata: the pre-flight of every command.

    Raises ``ConfigError`` for inconsistent settings and :class:`KafkaAccessError` for a wrong
    password, an untrusted certificate or an unreachable broker, within seconds.
    """
    return fetch_metadata(admin_client(settings), settings, timeout)
