"""Request signing between Restate and the worker, with real processes and a real ed25519 key pair.

A restate-server of its own (own ports, own data directory) signs every request with a private key;
a worker of its own accepts only requests signed by the matching public key (`RESTATE_IDENTITY_KEYS`).
The worker publishes to the session stack's Kafka, so a signed invocation ends as a real table.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from devstack.components import ROLES_WITH_INGRESS
from devstack.config import NODE_MODULES, REPO_ROOT, RESTATE_TOML
from devstack.identity import PUBLIC_KEY_FILE, KeyPair, base58, ensure_key_pair, public_key_of
from tests.harness import BASE_WORKER_ENV, DLQ, TestStack, unique

PROCESS_START_TIMEOUT = 30.0


def make_key_pair(directory: Path) -> KeyPair:
    """A new pair, as `python -m devstack identity` makes it (the Docker Compose `identity` service)."""
    pair, made = ensure_key_pair(directory / unique("identity"))
    assert made
    return pair


def test_the_key_pair_is_made_once_and_its_private_key_is_private(tmp_path: Path) -> None:
    first, made = ensure_key_pair(tmp_path)
    again, made_again = ensure_key_pair(tmp_path)
    assert made and not made_again and again == first
    assert first.public_key.startswith("publickeyv1_")
    assert (tmp_path / PUBLIC_KEY_FILE).read_text().strip() == first.public_key
    assert first.private_pem.stat().st_mode & 0o077 == 0, "the private key is readable by others"


def test_base58_matches_known_vectors() -> None:
    assert base58(b"") == ""
    assert base58(b"\0\0\x01") == "112"
    assert base58(b"hello world") == "StV1DL6CwTryKyV"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def restate_server_binary() -> Path:
    found = sorted((NODE_MODULES / "@restatedev").glob("restate-server-*/bin/restate-server"))
    assert found, f"no restate-server binary under {NODE_MODULES}: run `make deps`"
    return found[0]


class Process:
    """One child process with a log file; stopped (SIGTERM, then SIGKILL) by `stop`."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_file = log_dir / f"{name}.log"
        with self.log_file.open("ab") as log:
            self.popen = subprocess.Popen(
                argv, env=dict(env), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=REPO_ROOT,
            )  # fmt: skip

    def wait_until(self, check: Callable[[], bool], what: str, timeout: float = PROCESS_START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if self.popen.poll() is not None:
                raise AssertionError(f"{self.name} exited ({self.popen.returncode}) before {what}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: not {what} after {timeout} s:\n{self.log_tail()}")
            time.sleep(0.1)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class RestateServer:
    process: Process
    ingress_url: str
    admin_url: str

    def query(self, sql: str) -> list[dict[str, object]]:
        response = httpx.post(
            f"{self.admin_url}/query", json={"query": sql}, headers={"accept": "application/json"}, timeout=10
        )
        response.raise_for_status()
        return list(response.json()["rows"])


def start_restate(name: str, work_dir: Path, private_key: Path | None) -> RestateServer:
    ingress, admin, node = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "RESTATE_CONFIG": str(RESTATE_TOML),
        "RESTATE_BASE_DIR": str(work_dir / name),
        "RESTATE_NODE_NAME": name,
        "RESTATE_BIND_ADDRESS": f"127.0.0.1:{node}",
        "RESTATE_ADVERTISED_ADDRESS": f"http://127.0.0.1:{node}",
        "RESTATE_INGRESS__BIND_ADDRESS": f"127.0.0.1:{ingress}",
        "RESTATE_ADMIN__BIND_ADDRESS": f"127.0.0.1:{admin}",
        "RESTATE_LISTEN_MODE": "tcp",
        # restate.toml leaves the HTTP ingress out; these tests call the worker through it.
        "RESTATE_ROLES": ROLES_WITH_INGRESS,
    }
    if private_key is not None:
        # The same setting as `[worker.invoker] request-identity-private-key-pem-file` in restate.toml.
        env["RESTATE_WORKER__INVOKER__REQUEST_IDENTITY_PRIVATE_KEY_PEM_FILE"] = str(private_key)
    process = Process(name, [str(restate_server_binary()), "--no-logo"], env, work_dir)
    server = RestateServer(process, f"http://127.0.0.1:{ingress}", f"http://127.0.0.1:{admin}")
    try:
        process.wait_until(
            lambda: _ok(f"{server.admin_url}/health") and _ok(f"{server.ingress_url}/restate/health"), "healthy"
        )
    except BaseException:
        process.stop()
        raise
    return server


@dataclass
class SignedWorker:
    process: Process
    url: str


def start_worker(work_dir: Path, kafka_bootstrap: str, identity_keys_file: Path) -> SignedWorker:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")},
        **BASE_WORKER_ENV,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "WORKER_BIND": f"127.0.0.1:{port}",
        # The file `python -m devstack identity` writes, as the Docker Compose worker reads it.
        "RESTATE_IDENTITY_KEYS_FILE": str(identity_keys_file),
        "PYTHONPATH": str(REPO_ROOT),
    }
    process = Process("signed-worker", [sys.executable, "-m", "worker"], env, work_dir)
    worker = SignedWorker(process, f"http://127.0.0.1:{port}")
    try:
        # /health answers without a signature; that is also what tells us the worker is up.
        process.wait_until(lambda: _ok(f"{worker.url}/health"), "healthy")
    except BaseException:
        process.stop()
        raise
    return worker


@dataclass
class SignedSetup:
    keys: KeyPair
    restate: RestateServer
    worker: SignedWorker


@pytest.fixture(scope="module")
def signed(stack: TestStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SignedSetup]:
    """A signing restate-server and a worker that requires its signature; both stopped at the end."""
    work_dir = tmp_path_factory.mktemp("signing")
    keys = make_key_pair(work_dir)
    started: list[Process] = []
    try:
        restate = start_restate("restate-signing", work_dir, keys.private_pem)
        started.append(restate.process)
        worker = start_worker(work_dir, stack.cfg.kafka_bootstrap, keys.private_pem.parent / PUBLIC_KEY_FILE)
        started.append(worker.process)
        yield SignedSetup(keys, restate, worker)
    finally:
        for process in reversed(started):
            process.stop()


def test_restate_loads_the_key_under_the_public_name_we_computed(signed: SignedSetup) -> None:
    # restate-server logs the key id it signs with: our base58 encoding must agree with it.
    signed.restate.process.wait_until(lambda: signed.keys.public_key in signed.restate.process.log_tail(200), "logged")


def test_a_signing_restate_registers_and_invokes_the_worker(stack: TestStack, signed: SignedSetup) -> None:
    registered = httpx.post(f"{signed.restate.admin_url}/deployments", json={"uri": signed.worker.url}, timeout=30)
    assert registered.status_code in (200, 201), registered.text
    assert "ReportChain" in [s["name"] for s in registered.json()["services"]]

    response = httpx.post(
        f"{signed.restate.ingress_url}/ReportChain/process",
        content=b"Revenue was $12.5M, up 22%, with 340 employees.",
        headers={"content-type": "text/plain"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    outcome = response.json()
    # The signed call reached the handler, which refuses what is not a Kafka record: no table.
    assert (outcome["outcome"], outcome["reason"]) == ("dead_letter", "no_source")
    assert outcome["delivery"]["topic"] == DLQ
    # Outside Kafka the report id is the invocation id.
    invocation_id = outcome["report_id"]
    assert invocation_id.startswith("inv_")
    letter = stack.outputs.wait_for([invocation_id], timeout=30)[invocation_id][0].json()
    assert letter["invocation_id"] == invocation_id
    rows = signed.restate.query(f"SELECT status, completion_result FROM sys_invocation WHERE id = '{invocation_id}'")
    assert rows == [{"status": "completed", "completion_result": "success"}]


@pytest.mark.parametrize("path", ["/discover", "/invoke/ReportChain/process"])
def test_the_worker_refuses_unsigned_requests(signed: SignedSetup, path: str) -> None:
    response = httpx.post(
        f"{signed.worker.url}{path}",
        content=b"Revenue was $1M",
        headers={"content-type": "application/vnd.restate.invocation.v5", "accept": "application/json"},
        timeout=10,
    )
    assert response.status_code == 401, (response.status_code, response.text)


def _jwt(key: Ed25519PrivateKey, audience: str) -> str:
    """A v1 request signature: an EdDSA JWT whose audience is the request path, key id = public key."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    now = int(time.time())
    header = part(json.dumps({"typ": "JWT", "alg": "EdDSA", "kid": public_key_of(key)}).encode())
    claims = part(json.dumps({"aud": audience, "nbf": now - 5, "exp": now + 60}).encode())
    return f"{header}.{claims}.{part(key.sign(f'{header}.{claims}'.encode()))}"


def _discover_signed_by(worker: SignedWorker, key: Ed25519PrivateKey) -> httpx.Response:
    return httpx.get(
        f"{worker.url}/discover",
        headers={"x-restate-signature-scheme": "v1", "x-restate-jwt-v1": _jwt(key, "/discover"),
                 "accept": "application/vnd.restate.endpointmanifest.v5+json"},
        timeout=10,
    )  # fmt: skip


def test_the_worker_refuses_a_signature_from_another_key(signed: SignedSetup) -> None:
    trusted = serialization.load_pem_private_key(signed.keys.private_pem.read_bytes(), password=None)
    assert isinstance(trusted, Ed25519PrivateKey)
    # Control: the same hand-made signature with the trusted key is accepted, so the token is well formed.
    accepted = _discover_signed_by(signed.worker, trusted)
    assert accepted.status_code == 200, (accepted.status_code, accepted.text)
    assert "ReportChain" in accepted.text
    refused = _discover_signed_by(signed.worker, Ed25519PrivateKey.generate())
    assert refused.status_code == 401, (refused.status_code, refused.text)


def test_health_needs_no_signature(signed: SignedSetup) -> None:
    # Container healthchecks and load balancers cannot sign: /health stays open.
    response = httpx.get(f"{signed.worker.url}/health", timeout=5)
    assert response.status_code == 200


def test_a_restate_without_the_key_cannot_register_the_worker(
    signed: SignedSetup, tmp_path_factory: pytest.TempPathFactory
) -> None:
    work_dir = tmp_path_factory.mktemp("unsigned")
    restate = start_restate("restate-unsigned", work_dir, private_key=None)
    try:
        response = httpx.post(f"{restate.admin_url}/deployments", json={"uri": signed.worker.url}, timeout=30)
        assert response.status_code >= 400, response.text
        assert "401" in response.text, response.text
        assert httpx.get(f"{restate.admin_url}/services", timeout=10).json()["services"] == []
    finally:
        restate.process.stop()
