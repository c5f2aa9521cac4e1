"""Authenticated Kafka: SASL/SCRAM-SHA-512 over TLS, against a broker of this module's own.

The broker (:class:`LocalBroker` with a :class:`SaslSslListener`) runs on free ports with a
certificate signed by a CA the test generates (``openssl``), Kafka's ``StandardAuthorizer`` on,
the super user ``admin`` written into the metadata by Kafka's own ``kafka-storage format
--add-scram``, and the worker's user ``app`` added through the Admin API (the request
``kafka-configs --add-config SCRAM-SHA-512=...`` sends) with exactly the ACLs of
:func:`stream_app.io.worker_acls.worker_acls`. Every client connects through the SASL_SSL listener
with only the ``KAFKA_*`` settings; the PLAINTEXT listener only serves the fixture's set-up.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient

from stream_app.broker import LocalBroker, SaslSslListener, ScramUser, free_ports
from stream_app.config import Settings
from stream_app.devtools.worker_process import WorkerProcess
from stream_app.exceptions import BrokerError
from stream_app.io.security import librdkafka_config
from stream_app.io.worker_acls import worker_acls
from stream_app.sources.producer import BulkProducer
from stream_app.sources.schedule import schedule
from stream_app.sources.simulator import simulate

pytestmark = pytest.mark.integration

ADMIN = ScramUser("admin", "admin-secret-1")
APP = ScramUser("app", "app-secret-2")
N_EVENTS = 300
FAIL_WITHIN_S = 20.0


@dataclass(frozen=True)
class Tls:
    ca: Path
    keystore: Path
    rogue_ca: Path


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"openssl {' '.join(args)}:\n{result.stderr}"


def _make_ca(d: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )  # fmt: skip


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """A CA, a broker key and certificate it signed (for 127.0.0.1 and localhost), and a second
    CA that signed nothing the broker has."""
    if shutil.which("openssl") is None:
        pytest.fail("the SASL_SSL test generates its certificates with `openssl`: install it")
    d = tmp_path_factory.mktemp("tls")
    _make_ca(d, "ca")
    _make_ca(d, "rogue-ca")
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key", "-out", "broker.csr",
        "-subj", "/CN=localhost",
        cwd=d,
    )  # fmt: skip
    (d / "broker.ext").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
    )
    _openssl(
        "x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "broker.ext", "-out", "broker.pem",
        cwd=d,
    )  # fmt: skip
    # Kafka's PEM keystore: the unencrypted PKCS#8 key, then the certificate chain.
    keystore = d / "broker-keystore.pem"
    keystore.write_text(
        (d / "broker.key").read_text() + (d / "broker.pem").read_text() + (d / "ca.pem").read_text()
    )
    assert (d / "broker.key").read_text().startswith("-----BEGIN PRIVATE KEY-----")
    return Tls(ca=d / "ca.pem", keystore=keystore, rogue_ca=d / "rogue-ca.pem")


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory, tls: Tls) -> Iterator[LocalBroker]:
    port, controller_port, sasl_port = free_ports(3)
    listener = SaslSslListener(
        port=sasl_port,
        keystore=tls.keystore,
        users=(ADMIN,),
        acls=True,
        super_users=(ADMIN.name,),
    )
    broker = LocalBroker(
        tmp_path_factory.mktemp("secure-broker"),
        port=port,
        controller_port=controller_port,
        heap_mb=256,
        sasl_ssl=listener,
    )
    try:
        broker.start(timeout=120)
        broker.add_scram_user(APP)
    except BrokerError as exc:
        broker.stop()
        pytest.fail(f"the SASL_SSL broker did not start:\n{exc}", pytrace=False)
    try:
        yield broker
    finally:
        broker.stop()


def _env(broker: LocalBroker, user: ScramUser, ca: Path, **extra: str) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": broker.sasl_bootstrap,
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": user.name,
        "KAFKA_SASL_PASSWORD": user.password,
        "KAFKA_SSL_CAFILE": str(ca),
        **extra,
    }


def _settings(env: dict[str, str]) -> Settings:
    return Settings(
        kafka_bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"],
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username=env["KAFKA_SASL_USERNAME"],
        kafka_sasl_password=env["KAFKA_SASL_PASSWORD"],
        kafka_ssl_cafile=Path(env["KAFKA_SSL_CAFILE"]),
        topic_prefix=env.get("STREAM_APP_TOPIC_PREFIX", ""),
        app_id=env.get("STREAM_APP_APP_ID", "stream-app"),
        partitions=int(env.get("STREAM_APP_PARTITIONS", "6")),
    )


def _cli(*args: str, env: dict[str, str], timeout: float = 60) -> tuple[int, str, float]:
    """Run ``stream-app ARGS`` with ``env``: (exit code, stdout + stderr, seconds)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "STREAM_APP_"))}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "stream_app", *args],
        env={**clean, "COLUMNS": "200", **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr, time.monotonic() - started


def _read(settings: Settings, topic: str, expect: int, timeout: float = 90.0) -> list[dict]:
    consumer = Consumer(
        {
            **librdkafka_config(settings),
            "group.id": f"verify-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    values: list[dict] = []
    deadline = time.monotonic() + timeout
    try:
        while len(values) < expect and time.monotonic() < deadline:
            for message in consumer.consume(1000, timeout=0.5):
                if message.error() is None:
                    values.append(orjson.loads(message.value()))
    finally:
        consumer.close()
    return values


def test_worker_scores_through_sasl_ssl_with_only_its_acls(
    secure_broker: LocalBroker, tls: Tls, models_dir: Path, champion_version: str, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    app_settings = {
        "STREAM_APP_TOPIC_PREFIX": f"sec-{tag}.",
        "STREAM_APP_APP_ID": f"sec-{tag}",
        "STREAM_APP_PARTITIONS": "2",
    }
    admin_env = _env(secure_broker, ADMIN, tls.ca, **app_settings)
    app_env = _env(
        secure_broker,
        APP,
        tls.ca,
        **app_settings,
        STREAM_APP_MODELS_DIR=str(models_dir),
        STREAM_APP_CHAMPION=champion_version,
        STREAM_APP_STATE_DIR=str(tmp_path / "state"),
        STREAM_APP_WEB_PORT=str(free_ports(1)[0]),
    )
    admin, app = _settings(admin_env), _settings(app_env)

    # The operator (super user) creates the topics; the worker's user gets only its ACLs.
    code, output, _ = _cli("topics", "apply", env=admin_env)
    assert code == 0, output
    plain = AdminClient({"bootstrap.servers": secure_broker.bootstrap})
    for future in plain.create_acls(worker_acls(app, APP.principal), request_timeout=15).values():
        future.result(timeout=15)

    worker = WorkerProcess(tmp_path / "worker", app_env)
    worker.start()
    try:
        worker.wait_ready(timeout=90)
        items = list(
            simulate(
                n_customers=100,
                n_terminals=150,
                n_events=N_EVENTS,
                seed=5,
                start=datetime(2026, 3, 1, tzinfo=UTC),
            )
        )
        with BulkProducer(admin) as producer:
            for record in schedule(items):
                producer.produce(admin.topic(record.topic), record.key, record.value)
        envelopes = _read(admin, admin.topic("scores"), expect=N_EVENTS)
        assert {e["event_id"] for e in envelopes} == {i.event["event_id"] for i in items}
        assert worker.running, worker.tail()
        assert "Authorization" not in worker.log_text(), worker.tail()
    finally:
        worker.stop()

    # The authorizer is really on: the worker's user may not read what it has no ACL for.
    consumer = Consumer({**librdkafka_config(app), "group.id": f"sec-{tag}"})
    errors: list[KafkaError] = []
    try:
        consumer.assign([TopicPartition(admin.topic("metrics"), 0, OFFSET_BEGINNING)])
        deadline = time.monotonic() + 20
        while not errors and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is not None:
                errors.append(message.error())
    finally:
        consumer.close()
    assert [e.code() for e in errors] == [KafkaError.TOPIC_AUTHORIZATION_FAILED]


def test_wrong_password_fails_fast_and_says_so(
    secure_broker: LocalBroker, tls: Tls, models_dir: Path, champion_version: str, tmp_path: Path
) -> None:
    wrong = ScramUser(APP.name, "not-the-password")
    env = _env(secure_broker, wrong, tls.ca)
    code, output, elapsed = _cli("topics", "apply", env=env)
    print(f"topics apply, wrong password: exit {code} after {elapsed:.1f} s")
    assert code == 2, output
    assert elapsed < FAIL_WITHIN_S
    assert "authentication failed" in output.lower()
    assert "KAFKA_SASL_PASSWORD" in output

    worker_env = {
        **env,
        "STREAM_APP_MODELS_DIR": str(models_dir),
        "STREAM_APP_CHAMPION": champion_version,
        "STREAM_APP_STATE_DIR": str(tmp_path / "state"),
        "STREAM_APP_WEB_PORT": str(free_ports(1)[0]),
    }
    code, output, elapsed = _cli("worker", env=worker_env)
    print(f"worker, wrong password: exit {code} after {elapsed:.1f} s")
    assert code == 2, output
    assert elapsed < FAIL_WITHIN_S
    assert "authentication failed" in output.lower()
    assert "Traceback" not in output


def test_untrusted_certificate_fails_fast_and_says_so(secure_broker: LocalBroker, tls: Tls) -> None:
    env = _env(secure_broker, APP, tls.rogue_ca)
    code, output, elapsed = _cli("tail", "scores", "--n", "1", env=env)
    print(f"tail, CA that did not sign the broker certificate: exit {code} after {elapsed:.1f} s")
    assert code == 1, output
    assert elapsed < FAIL_WITHIN_S
    assert "certificate" in output
    assert "KAFKA_SSL_CAFILE" in output
