"""Client security from settings (librdkafka, Faust), the errors it explains, the worker's ACLs,
and the local broker's SASL_SSL listener rendering -- all without a broker."""

from __future__ import annotations

import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AclOperation, ResourcePatternType, ResourceType
from faust.types.auth import AuthProtocol, SASLMechanism

from stream_app.broker import LocalBroker, SaslSslListener, ScramUser
from stream_app.config import Settings
from stream_app.exceptions import BrokerError, ConfigError, KafkaAccessError
from stream_app.io import security
from stream_app.io.security import (
    ClientErrors,
    explain,
    faust_credentials,
    fetch_metadata,
    librdkafka_config,
    ssl_context,
    validate,
)
from stream_app.io.worker_acls import worker_acls


@pytest.fixture(scope="module")
def cafile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real PEM CA certificate (Python's ssl module parses it)."""
    d = tmp_path_factory.mktemp("unit-ca")
    path = d / "ca.pem"
    result = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(d / "ca.key"), "-out", str(path), "-subj", "/CN=unit-ca"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return path


def sasl_ssl(cafile: Path | None, **kwargs: Any) -> Settings:
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": "kafka.example:9093",
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": "SCRAM-SHA-512",
        "kafka_sasl_username": "app",
        "kafka_sasl_password": "s3cret",
        "kafka_ssl_cafile": cafile,
    }
    values.update(kwargs)
    return Settings(**values)


# --- settings -> librdkafka / Faust ----------------------------------------------------------


def test_plaintext_config_is_bootstrap_and_protocol_only() -> None:
    settings = Settings(kafka_bootstrap_servers="127.0.0.1:1")
    assert librdkafka_config(settings) == {
        "bootstrap.servers": "127.0.0.1:1",
        "security.protocol": "PLAINTEXT",
    }
    assert librdkafka_config(settings) == librdkafka_config(settings)
    assert faust_credentials(settings) is None
    assert ssl_context(settings) is None


def test_sasl_ssl_librdkafka_config(cafile: Path) -> None:
    assert librdkafka_config(sasl_ssl(cafile)) == {
        "bootstrap.servers": "kafka.example:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "app",
        "sasl.password": "s3cret",
        "ssl.endpoint.identification.algorithm": "https",
        "ssl.ca.location": str(cafile),
    }


def test_sasl_ssl_faust_credentials_carry_a_verifying_context(cafile: Path) -> None:
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    credentials = faust_credentials(sasl_ssl(cafile))
    assert credentials is not None
    assert credentials.protocol is AuthProtocol.SASL_SSL
    assert credentials.mechanism is SASLMechanism.SCRAM_SHA_512
    auth = credentials_to_aiokafka_auth(credentials)
    assert auth["security_protocol"] == "SASL_SSL"
    assert auth["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (auth["sasl_plain_username"], auth["sasl_plain_password"]) == ("app", "s3cret")
    context = auth["ssl_context"]
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "unit-ca"),),)]
    assert "s3cret" not in repr(credentials)


def test_ssl_only_and_sasl_plaintext(cafile: Path) -> None:
    import faust

    tls = Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=cafile)
    assert isinstance(faust_credentials(tls), faust.SSLCredentials)
    assert librdkafka_config(tls)["ssl.ca.location"] == str(cafile)
    plain = sasl_ssl(None, kafka_security_protocol="SASL_PLAINTEXT")
    credentials = faust_credentials(plain)
    assert credentials is not None and credentials.protocol is AuthProtocol.SASL_PLAINTEXT
    assert "ssl.endpoint.identification.algorithm" not in librdkafka_config(plain)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kafka_sasl_username": None}, "needs KAFKA_SASL_USERNAME"),
        ({"kafka_sasl_password": None, "kafka_sasl_mechanism": None}, "KAFKA_SASL_MECHANISM, "),
        ({"kafka_security_protocol": "PLAINTEXT", "kafka_ssl_cafile": None}, "does not use SASL"),
        ({"kafka_ssl_cafile": Path("/nonexistent/ca.pem")}, "is not a file"),
    ],
)
def test_inconsistent_settings_are_refused(cafile: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        validate(sasl_ssl(cafile, **kwargs))


def test_cafile_without_tls_is_refused(cafile: Path) -> None:
    with pytest.raises(ConfigError, match="does not use TLS"):
        librdkafka_config(Settings(kafka_ssl_cafile=cafile))


def test_unreadable_ca_bundle_is_a_config_error(tmp_path: Path) -> None:
    bogus = tmp_path / "ca.pem"
    bogus.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(ConfigError, match="KAFKA_SSL_CAFILE"):
        ssl_context(sasl_ssl(bogus))


def test_confluent_transport_takes_no_credentials(cafile: Path) -> None:
    with pytest.raises(ConfigError, match="STREAM_APP_TRANSPORT=aiokafka"):
        faust_credentials(sasl_ssl(cafile, transport="confluent"))


# --- errors explained ------------------------------------------------------------------------

AUTH_TEXT = (
    "sasl_ssl://127.0.0.1:9093/bootstrap: SASL authentication error: Authentication failed "
    "during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512"
)
SSL_TEXT = (
    "sasl_ssl://127.0.0.1:9093/bootstrap: SSL handshake failed: error:0A000086:SSL "
    "routines::certificate verify failed: broker certificate could not be verified"
)


def test_explain_authentication_and_certificate(cafile: Path) -> None:
    settings = sasl_ssl(cafile)
    auth = explain(KafkaError(KafkaError._AUTHENTICATION, AUTH_TEXT), settings)
    assert auth is not None
    assert auth.startswith("Kafka SASL authentication failed at kafka.example:9093 for user 'app'")
    assert "KAFKA_SASL_PASSWORD" in auth and "s3cret" not in auth
    assert "/bootstrap:" not in auth
    tls = explain(KafkaError(KafkaError._SSL, SSL_TEXT), settings)
    assert tls is not None and "certificate is not trusted" in tls
    assert f"KAFKA_SSL_CAFILE={cafile}" in tls
    down = KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down")
    assert explain(down, settings) is None


class FakeAdmin:
    """list_topics always fails; librdkafka's error callback fires on poll()."""

    def __init__(self, errors: list[KafkaError]) -> None:
        self.client_errors = ClientErrors()
        self.pending = errors
        self.calls = 0

    def list_topics(self, timeout: float) -> Any:
        self.calls += 1
        time.sleep(min(timeout, 0.01))
        raise KafkaException(KafkaError(KafkaError._TRANSPORT, "Broker transport failure"))

    def poll(self, timeout: float) -> int:
        for error in self.pending:
            self.client_errors(error)
        self.pending = []
        return 0


def test_fetch_metadata_raises_the_explained_cause_at_once(cafile: Path) -> None:
    admin = FakeAdmin([KafkaError(KafkaError._AUTHENTICATION, AUTH_TEXT)])
    with pytest.raises(KafkaAccessError, match="authentication failed"):
        fetch_metadata(admin, sasl_ssl(cafile), timeout=30)  # type: ignore[arg-type]
    assert admin.calls == 1


def test_fetch_metadata_times_out_with_the_reachability_message(
    cafile: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(security, "_STEP_S", 0.05)
    admin = FakeAdmin([KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down")])
    with pytest.raises(KafkaAccessError, match=r"cannot reach Kafka at kafka\.example:9093"):
        fetch_metadata(admin, sasl_ssl(cafile), timeout=0.3)  # type: ignore[arg-type]
    assert admin.calls > 1


# --- the worker's ACLs ------------------------------------------------------------------------


def test_worker_acls() -> None:
    settings = Settings(topic_prefix="t.", app_id="fraud")
    acls = worker_acls(settings, "User:app")
    assert {a.principal for a in acls} == {"User:app"}
    granted = {
        (a.restype, a.name, a.resource_pattern_type, a.operation)
        for a in acls
        if a.permission_type.name == "ALLOW"
    }
    assert len(granted) == len(acls)
    topic, lit, pre = ResourceType.TOPIC, ResourcePatternType.LITERAL, ResourcePatternType.PREFIXED
    assert (ResourceType.GROUP, "fraud", lit, AclOperation.READ) in granted
    reads = {n for (r, n, p, o) in granted if r == topic and o == AclOperation.READ and p == lit}
    writes = {n for (r, n, p, o) in granted if r == topic and o == AclOperation.WRITE and p == lit}
    assert reads == {
        "t.transactions",
        "t.transactions.rerouted",
        "t.transactions.by-terminal",
        "t.labels",
        "t.labels.rerouted",
        "t.models.assignment",
    }
    assert writes == {
        "t.transactions.rerouted",
        "t.transactions.by-terminal",
        "t.labels.rerouted",
        "t.scores",
        "t.scores.shadow",
        "t.drift",
        "t.transactions.dlq",
    }
    deletes = {n for (r, n, p, o) in granted if r == topic and o == AclOperation.DELETE}
    assert deletes == {"t.transactions.by-terminal"}  # the worker deletes what it committed
    assert {o for (r, n, p, o) in granted if p == pre} == {
        AclOperation.READ,
        AclOperation.WRITE,
        AclOperation.CREATE,
    }
    assert {n for (r, n, p, o) in granted if p == pre} == {"fraud-"}
    assert (topic, "t.metrics", lit, AclOperation.DESCRIBE_CONFIGS) in granted
    without_create = worker_acls(settings, "User:app", create_topics=False)
    assert not [
        a for a in without_create if a.operation == AclOperation.CREATE and a.name != "fraud-"
    ]
    assert not [a for a in acls if a.restype == ResourceType.TRANSACTIONAL_ID]


def test_worker_acls_exactly_once() -> None:
    for extra, prefix in (({}, "fraud-"), ({"transactional_id": "pod-7"}, "pod-7")):
        settings = Settings(app_id="fraud", processing_guarantee="exactly_once", **extra)
        txn = {
            (a.name, a.resource_pattern_type, a.operation)
            for a in worker_acls(settings, "User:app")
            if a.restype == ResourceType.TRANSACTIONAL_ID
        }
        assert txn == {
            (prefix, ResourcePatternType.PREFIXED, AclOperation.WRITE),
            (prefix, ResourcePatternType.PREFIXED, AclOperation.DESCRIBE),
        }


# --- the local broker's SASL_SSL listener ----------------------------------------------------


def test_scram_user_validation_and_repr() -> None:
    user = ScramUser("app", "p4ss-word.1")
    assert "p4ss" not in repr(user)
    assert user.principal == "User:app"
    with pytest.raises(ConfigError, match="password"):
        ScramUser("app", "a,b")
    with pytest.raises(ConfigError, match="user name"):
        ScramUser("a b", "pw")


def test_sasl_ssl_listener_properties(tmp_path: Path) -> None:
    keystore = tmp_path / "broker.pem"
    listener = SaslSslListener(
        port=19300,
        keystore=keystore,
        users=(ScramUser("admin", "adm1n"), ScramUser("app", "app-pw")),
        acls=True,
        super_users=("admin",),
    )
    broker = LocalBroker(
        tmp_path / "home", port=19301, controller_port=19302, jars_dir=tmp_path, sasl_ssl=listener
    )
    props = broker.server_properties()
    assert props["listeners"] == (
        "PLAINTEXT://127.0.0.1:19301,CONTROLLER://127.0.0.1:19302,SASL_SSL://127.0.0.1:19300"
    )
    assert props["advertised.listeners"].endswith(",SASL_SSL://127.0.0.1:19300")
    assert props["listener.security.protocol.map"].endswith(",SASL_SSL:SASL_SSL")
    assert props["inter.broker.listener.name"] == "PLAINTEXT"
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config"] == (
        "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    )
    assert props["listener.name.sasl_ssl.ssl.keystore.type"] == "PEM"
    assert props["listener.name.sasl_ssl.ssl.keystore.location"] == str(keystore.resolve())
    assert props["authorizer.class.name"].endswith("StandardAuthorizer")
    assert props["super.users"] == "User:ANONYMOUS;User:admin"
    assert broker.sasl_bootstrap == "127.0.0.1:19300"
    assert listener.format_arguments() == [
        "--add-scram",
        "SCRAM-SHA-512=[name=admin,password=adm1n]",
        "--add-scram",
        "SCRAM-SHA-512=[name=app,password=app-pw]",
    ]
    assert "authorizer.class.name" not in SaslSslListener(19300, keystore).properties()
    with pytest.raises(ConfigError, match="no SASL_SSL listener"):
        _ = LocalBroker(tmp_path / "plain", port=19303, jars_dir=tmp_path).sasl_bootstrap
    with pytest.raises(ConfigError, match="must all differ"):
        LocalBroker(tmp_path / "x", port=19300, jars_dir=tmp_path, sasl_ssl=listener)
    with pytest.raises(ConfigError, match="mechanism"):
        SaslSslListener(19300, keystore, mechanism="PLAIN")


def test_format_storage_adds_scram_users_and_hides_passwords(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    listener = SaslSslListener(19310, tmp_path / "k.pem", users=(ScramUser("admin", "adm1n"),))
    broker = LocalBroker(tmp_path / "home", port=19311, jars_dir=tmp_path, sasl_ssl=listener)
    seen: list[list[str]] = []

    def fake_run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        seen.append(cmd)
        return subprocess.CompletedProcess(
            cmd, 1, "", "bad SCRAM-SHA-512=[name=admin,password=adm1n]"
        )

    monkeypatch.setattr(subprocess, "run", fake_run)
    with pytest.raises(BrokerError) as info:
        broker.format_storage("java")
    assert seen[0][-2:] == ["--add-scram", "SCRAM-SHA-512=[name=admin,password=adm1n]"]
    assert "adm1n" not in str(info.value)
