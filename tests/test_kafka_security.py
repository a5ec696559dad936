"""Kafka security settings (SASL/SCRAM over TLS) reach every Kafka client, and the password never shows.

Every client reads the same `KAFKA_*` variables: the worker's producer, the results reader, the
report producer, the devstack setup (and through it Restate's Kafka cluster), and `status`.
The clients are real librdkafka clients pointed at a closed port, so nothing here needs a broker.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from devstack.config import REPO_ROOT
from devstack.setup import SetupConfig, SetupError, run_setup
from ops.kafka import consumer_config
from ops.status.cli import build_parser, options_from
from producer.kafka import producer_config
from worker.publisher import Publisher
from worker.settings import describe_kafka, get_settings, redact_kafka_properties

PASSWORD = "s3cr3t-SCRAM-pa55word-0123456789"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ca_file(directory: Path) -> Path:
    """A real self-signed CA certificate: librdkafka loads `ssl.ca.location` when a client is created."""
    key = Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "report-chain test CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, algorithm=None)
    )
    path = directory / "ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.fixture
def secure_env(tmp_path: Path) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{_closed_port()}",
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "report-chain",
        "KAFKA_SASL_PASSWORD": PASSWORD,
        "KAFKA_SSL_CA_LOCATION": str(_ca_file(tmp_path)),
    }


EXPECTED = {
    "security.protocol": "SASL_SSL",
    "sasl.mechanism": "SCRAM-SHA-512",
    "sasl.username": "report-chain",
    "sasl.password": PASSWORD,
}


@pytest.fixture
def patched_env(secure_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """This process's environment holds exactly the secure KAFKA_* settings (for clients that read os.environ)."""
    for name in list(os.environ):
        if name.startswith("KAFKA_"):
            monkeypatch.delenv(name)
    for name, value in secure_env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()  # settings are read once per process
    yield secure_env
    get_settings.cache_clear()


def _has_security(props: dict[str, str], env: dict[str, str]) -> None:
    for key, value in EXPECTED.items():
        assert props.get(key) == value, (key, props.get(key))
    assert props["ssl.ca.location"] == env["KAFKA_SSL_CA_LOCATION"]
    assert props["bootstrap.servers"] == env["KAFKA_BOOTSTRAP_SERVERS"]


def test_every_client_config_carries_the_security_settings(patched_env: dict[str, str]) -> None:
    _has_security(get_settings().kafka.client_config(), patched_env)  # the worker's producer
    _has_security(producer_config(), patched_env)  # report-producer
    _has_security(consumer_config(), patched_env)  # report-results (and replay)
    status = options_from(build_parser().parse_args([]), get_settings())
    _has_security(status.kafka.client_config(), patched_env)  # status
    setup = SetupConfig.from_env()
    _has_security(setup.kafka.client_config(), patched_env)  # setup's admin client
    _has_security(setup.restate_kafka_properties, patched_env)  # what Restate's Kafka cluster is given


def test_secrets_are_held_as_secret_strings(patched_env: dict[str, str]) -> None:
    settings = get_settings()
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings.kafka)
    assert PASSWORD not in repr(SetupConfig.from_env())
    assert PASSWORD not in repr(options_from(build_parser().parse_args([]), settings))
    assert settings.kafka.secret["sasl.password"].get_secret_value() == PASSWORD


def test_restate_can_reach_kafka_under_another_address_with_the_same_security(secure_env: dict[str, str]) -> None:
    setup = SetupConfig.from_env({**secure_env, "RESTATE_KAFKA_BOOTSTRAP": "kafka.internal:9096"})
    assert setup.restate_kafka_properties["bootstrap.servers"] == "kafka.internal:9096"
    admin = setup.kafka.client_config()
    assert admin["bootstrap.servers"] == secure_env["KAFKA_BOOTSTRAP_SERVERS"]
    assert {k: v for k, v in setup.restate_kafka_properties.items() if k != "bootstrap.servers"} == {
        k: v for k, v in admin.items() if k != "bootstrap.servers"
    }


def test_redaction_hides_every_secret_property() -> None:
    props = {
        "sasl.password": PASSWORD,
        "ssl.key.password": "k",
        "ssl.keystore.password": "ks",
        "sasl.oauthbearer.client.secret": "oauth",
        "ssl.key.pem": "-----BEGIN PRIVATE KEY-----",
        "sasl.username": "report-chain",
    }
    redacted = redact_kafka_properties(props)
    assert redacted == {
        "sasl.password": "***",
        "ssl.key.password": "***",
        "ssl.keystore.password": "***",
        "sasl.oauthbearer.client.secret": "***",
        "ssl.key.pem": "***",
        "sasl.username": "report-chain",
    }
    assert props["sasl.password"] == PASSWORD  # the caller's dict is untouched
    assert PASSWORD not in describe_kafka(props) and "sasl.password=***" in describe_kafka(props)


def test_the_worker_publisher_logs_its_config_without_the_password(
    patched_env: dict[str, str], caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    publisher = Publisher(get_settings().kafka.client_config())
    try:
        # librdkafka connects in the background and reports the refused connection through the error callback.
        deadline = time.monotonic() + 10
        while not any(r.name == "worker.publisher" and r.levelno >= logging.WARNING for r in caplog.records):
            assert time.monotonic() < deadline, "the producer reported no connection error"
            time.sleep(0.1)
    finally:
        publisher.close()
    ready = next(r.getMessage() for r in caplog.records if "kafka producer ready" in r.getMessage())
    assert "'sasl.password': '***'" in ready
    assert "'security.protocol': 'SASL_SSL'" in ready and "'sasl.username': 'report-chain'" in ready
    assert PASSWORD not in caplog.text
    out, err = capfd.readouterr()
    assert PASSWORD not in out + err


def _run(module: str, *args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        env={**clean, **env, "PYTHONPATH": str(REPO_ROOT)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_results_reader_shows_a_redacted_config_and_never_the_password(secure_env: dict[str, str]) -> None:
    result = _run("ops.results", "-v", "--timeout", "3", env=secure_env)
    assert result.returncode == 1, result.stderr
    assert "sasl.password=***" in result.stderr and "security.protocol=SASL_SSL" in result.stderr
    assert PASSWORD not in result.stdout + result.stderr


def test_the_report_producer_shows_a_redacted_config_and_never_the_password(secure_env: dict[str, str]) -> None:
    result = _run("producer", "-v", "--timeout", "2", "Revenue was $1M", env=secure_env)
    assert result.returncode == 1, result.stderr
    assert "sasl.password=***" in result.stderr and "sasl.mechanism=SCRAM-SHA-512" in result.stderr
    assert PASSWORD not in result.stdout + result.stderr


def test_status_shows_a_redacted_config_and_never_the_password(secure_env: dict[str, str]) -> None:
    admin = f"http://127.0.0.1:{_closed_port()}"
    for args in (["-v"], ["-v", "--json"]):
        result = _run("ops.status", *args, "--admin-url", admin, env=secure_env)
        assert result.returncode == 1, result.stderr
        assert "sasl.password=***" in result.stderr and "ssl.ca.location=" in result.stderr
        assert PASSWORD not in result.stdout + result.stderr


def test_setup_failures_do_not_print_the_password(secure_env: dict[str, str]) -> None:
    lines: list[str] = []
    cfg = dataclasses.replace(SetupConfig.from_env(secure_env), wait_seconds=2.0)
    with pytest.raises(SetupError) as failure:
        run_setup(cfg, log=lines.append)
    assert secure_env["KAFKA_BOOTSTRAP_SERVERS"] in str(failure.value)
    assert PASSWORD not in str(failure.value) + "".join(lines)
