"""The extra client listeners of the local broker: :class:`Listener` (any security protocol) and
:class:`SaslSslListener` (TLS with SCRAM authentication, its :class:`ScramUser` users and optional
ACLs), with the broker properties and ``kafka-storage format`` arguments they add.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from stream_app.broker.host import LOOPBACK
from stream_app.exceptions import ConfigError

__all__ = ["SCRAM_MECHANISMS", "Listener", "SaslSslListener", "ScramUser"]

SECURITY_PROTOCOLS = frozenset({"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"})
RESERVED_LISTENER_NAMES = frozenset({"PLAINTEXT", "CONTROLLER"})
SCRAM_MECHANISMS = frozenset({"SCRAM-SHA-256", "SCRAM-SHA-512"})
STANDARD_AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
SCRAM_LOGIN_MODULE = "org.apache.kafka.common.security.scram.ScramLoginModule"

_LISTENER_NAME_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")
# SCRAM user names and passwords go into Kafka's own `name=[k=v,...]` syntax: keep them free of
# the characters that syntax uses (and of anything a shell or a properties file could mangle).
_SCRAM_NAME_RE = re.compile(r"^[A-Za-z0-9._@-]{1,128}$")
_SCRAM_PASSWORD_RE = re.compile(r"^[A-Za-z0-9._@%+~!#^*()-]{1,256}$")


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
    """A ``SASL_SSL`` client listener with SCRAM authentication, for
    :class:`~stream_app.broker.LocalBroker`.

    The broker keeps its PLAINTEXT client listener (loopback only; the readiness check and the
    inter-broker traffic use it) and its PLAINTEXT controller listener.

    :param port: TCP port on 127.0.0.1.
    :param keystore: PEM file holding the broker's private key (unencrypted PKCS#8, ``BEGIN
        PRIVATE KEY``) followed by its certificate chain. The certificate must name the address
        clients connect to (``IP:127.0.0.1`` / ``DNS:localhost`` in subjectAltName): clients
        verify it.
    :param users: SCRAM users written into the metadata when the storage is formatted
        (``kafka-storage format --add-scram``), i.e. on the first start of a fresh home; add users
        to a running broker with :meth:`~stream_app.broker.LocalBroker.add_scram_user`.
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
