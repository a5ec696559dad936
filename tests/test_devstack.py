"""The local stack's process handling, on throwaway processes and ports."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from devstack.components import Balancer, Kafka, Restate
from devstack.config import CLUSTER, MAX_WORKER_PROCESSES, SINGLE, StackConfig
from devstack.processes import ManagedProcess, StackError
from devstack.setup import run_setup
from devstack.stack import Stack
from tests.harness import TestStack


def _sleeper(tmp_path: Path, ports: list[int]) -> ManagedProcess:
    return ManagedProcess("sleeper", tmp_path, ports, marker="devstack-test-sleeper")


SLEEP = [sys.executable, "-c", "import time; time.sleep(60)", "devstack-test-sleeper"]


def test_a_taken_port_gives_an_error_that_names_it(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = _sleeper(tmp_path, [port])
        with pytest.raises(StackError, match=rf"port {port} is already in use"):
            proc.start(SLEEP, env={})
    assert not proc.is_running()


def test_start_and_stop_leave_no_process_behind(tmp_path: Path) -> None:
    proc = _sleeper(tmp_path, [])
    pid = proc.start(SLEEP, env={}).pid
    assert proc.pid() == pid
    assert proc.stop() is True
    assert proc.pid() is None
    assert not proc.pid_file.exists()
    assert proc.stop() is False  # nothing left to stop


def test_a_stale_pid_file_of_another_process_is_not_ours(tmp_path: Path) -> None:
    proc = _sleeper(tmp_path, [])
    tmp_path.mkdir(exist_ok=True)
    proc.pid_file.write_text("1\n")  # PID 1 is alive but is not our sleeper
    assert proc.pid() is None
    assert proc.stop() is False


def test_kill_is_seen_as_not_running(tmp_path: Path) -> None:
    proc = _sleeper(tmp_path, [])
    proc.start(SLEEP, env={})
    proc.kill()
    import time

    deadline = time.monotonic() + 5
    while proc.is_running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not proc.is_running()
    assert "starting sleeper" in proc.log_file.read_text()


def test_setup_compares_kafka_properties_around_secrets_restate_hides() -> None:
    from devstack.setup import SetupConfig, _same_properties
    from worker.settings import settings_from

    wanted = {"bootstrap.servers": "b:9092", "sasl.username": "u", "sasl.password": "pw"}
    assert _same_properties({"bootstrap.servers": "b:9092", "sasl.username": "***", "sasl.password": "***"}, wanted)
    assert not _same_properties(
        {"bootstrap.servers": "other:9092", "sasl.username": "***", "sasl.password": "***"}, wanted
    )
    assert not _same_properties({"bootstrap.servers": "b:9092"}, wanted)
    setup = SetupConfig.from_env({"KAFKA_BOOTSTRAP_SERVERS": "b:9092", "KAFKA_SASL_PASSWORD": "pw"})
    assert "pw" not in repr(setup) and setup.restate_kafka_properties["sasl.password"] == "pw"
    assert settings_from({}).kafka.client_config() == {"bootstrap.servers": "127.0.0.1:9092"}


def _revision(admin_url: str) -> int:
    services = httpx.get(f"{admin_url}/services", timeout=10).json()["services"]
    return int(next(s["revision"] for s in services if s["name"] == "ReportChain"))


def test_setup_registers_the_worker_again_only_when_its_definition_changed(stack: TestStack) -> None:
    """`make up` runs setup on every start: an unchanged worker must not become a new revision in the UI."""
    stack.use_worker_env()
    cfg = stack.stack.setup_config()
    run_setup(cfg, log=lambda _: None)
    before = _revision(cfg.restate_admin_url)
    lines: list[str] = []
    run_setup(cfg, log=lines.append)
    run_setup(cfg, log=lines.append)
    assert _revision(cfg.restate_admin_url) == before
    assert sum("unchanged" in line for line in lines) == 2, lines

    # A changed service definition (here the retry policy, read from the worker's environment) is registered.
    stack.use_worker_env({"INVOCATION_RETRY_MAX_ATTEMPTS": "41"})  # restarts the worker and runs setup
    assert _revision(cfg.restate_admin_url) == before + 1
    stack.use_worker_env()
    assert _revision(cfg.restate_admin_url) == before + 2


def test_the_demo_links_the_ui_to_this_runs_invocations() -> None:
    """The UI opens on running invocations only (empty on an idle stack); the demo's link filters by
    service and creation time in the UI's own query format (checked by hand in a headless browser:
    it lists the run's 12 invocations where the plain /ui/invocations shows "No invocations found")."""
    from datetime import UTC, datetime
    from urllib.parse import parse_qs, urlsplit

    from devstack.demo import invocations_link

    link = urlsplit(invocations_link("http://127.0.0.1:9070", datetime(2026, 12, 3, 23, 17, 11, 212000, UTC)))
    assert (link.netloc, link.path) == ("127.0.0.1:9070", "/ui/invocations")
    query = {k: v[0] for k, v in parse_qs(link.query).items()}
    assert json.loads(query["filter_target_service_name"]) == {"operation": "IN", "value": ["ReportChain"]}
    assert json.loads(query["filter_created_at"]) == {"operation": "AFTER", "value": "2026-12-03T23:17:11.212Z"}
    assert (query["sort_field"], query["sort_order"]) == ("created_at", "DESC")
    assert "filter_status" not in query  # no status filter: finished invocations are the ones to look at


# -- profiles and port layout (no processes) ----------------------------------------------------------


def _all_shapes() -> list[StackConfig]:
    return [
        StackConfig.create(profile, workers)
        for profile in (SINGLE, CLUSTER)
        for workers in range(1, MAX_WORKER_PROCESSES + 1)
    ]


@pytest.mark.parametrize("cfg", _all_shapes(), ids=lambda c: f"{c.profile.name}-{c.worker_processes}")
def test_a_stack_never_uses_a_port_twice(cfg: StackConfig) -> None:
    ports = cfg.ports()
    assert len(ports) == len(set(ports)), sorted(ports)


def test_stacks_whose_offsets_differ_by_hundreds_never_collide() -> None:
    # Any two shapes, at offsets 0 and 100..900: no shared port (TEST_STACK_OFFSET per engineer).
    widest = {port for cfg in _all_shapes() for port in cfg.ports()}
    for step in range(100, 1000, 100):
        assert not widest & {port + step for port in widest}, step


def test_cluster_ports_are_the_documented_ones() -> None:
    cfg = StackConfig.create(CLUSTER)
    stack = Stack(cfg)
    assert [k.port for k in stack.kafka_nodes] == [9092, 9093, 9094]
    assert [k.controller_port for k in stack.kafka_nodes] == [9095, 9096, 9097]
    assert [(r.admin_port, r.ingress_port) for r in stack.restate_nodes] == [(9070, 8080), (9071, 8081), (9072, 8082)]
    assert [w.port for w in stack.workers] == [9081, 9082]
    assert cfg.worker_url == "http://127.0.0.1:9080" and stack.balancer is not None
    assert cfg.kafka_bootstrap == "127.0.0.1:9092,127.0.0.1:9093,127.0.0.1:9094"


def test_one_worker_process_needs_no_balancer() -> None:
    stack = Stack(StackConfig.create(SINGLE, 1))
    assert stack.balancer is None
    assert [w.name for w in stack.workers] == ["worker"] and stack.worker.port == 9080
    two = Stack(StackConfig.create(SINGLE, 2))
    assert [w.port for w in two.workers] == [9081, 9082] and two.balancer is not None


def test_kafka_brokers_form_one_quorum_with_two_in_sync_replicas() -> None:
    properties = [Kafka(StackConfig.create(CLUSTER), n)._properties() for n in (1, 2, 3)]
    voters = "controller.quorum.voters=1@127.0.0.1:9095,2@127.0.0.1:9096,3@127.0.0.1:9097"
    for n, text in enumerate(properties, start=1):
        lines = set(text.splitlines())
        assert {f"node.id={n}", voters, "default.replication.factor=3", "min.insync.replicas=2"} <= lines
        assert {"offsets.topic.replication.factor=3", "transaction.state.log.min.isr=2"} <= lines
    single = set(Kafka(StackConfig.create(SINGLE))._properties().splitlines())
    assert {"default.replication.factor=1", "min.insync.replicas=1", "offsets.topic.replication.factor=1"} <= single


def test_restate_nodes_form_one_cluster_provisioned_by_exactly_one() -> None:
    nodes = Stack(StackConfig.create(CLUSTER)).restate_nodes
    envs = [node.env() for node in nodes]
    assert [env["RESTATE_AUTO_PROVISION"] for env in envs] == ["true", "false", "false"]
    peers = ["http://127.0.0.1:5122", "http://127.0.0.1:5123", "http://127.0.0.1:5124"]
    for env in envs:
        assert json.loads(env["RESTATE_METADATA_CLIENT__ADDRESSES"]) == peers
        assert env["RESTATE_METADATA_CLIENT__TYPE"] == "replicated"
        assert env["RESTATE_BIFROST__DEFAULT_PROVIDER"] == "replicated"
        assert env["RESTATE_DEFAULT_REPLICATION"] == "2"
        assert "RESTATE_ROLES" not in env  # restate.toml's: every role but the HTTP ingress
    assert len({env["RESTATE_ADVERTISED_ADDRESS"] for env in envs}) == 3
    assert len({node.node_name for node in nodes}) == 3
    # The single node keeps its name (its data lives under it) and gets no cluster settings.
    single = Restate(StackConfig.create(SINGLE))
    assert single.node_name == "devstack" and "RESTATE_AUTO_PROVISION" not in single.env()


@pytest.mark.tools
def test_the_balancer_config_is_valid_haproxy(tmp_path: Path) -> None:
    # HAProxy itself checks the file (`make deps` installs it; missing, this fails).
    balancer = Balancer(replace(StackConfig.create(SINGLE, 3), run_dir=tmp_path))
    balancer.prepare()
    haproxy = shutil.which("haproxy")
    assert haproxy, "haproxy is not installed: run `make deps`"
    checked = subprocess.run([haproxy, "-c", "-f", str(balancer.config_file)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    servers = [line.split()[1:3] for line in balancer.config().splitlines() if line.strip().startswith("server ")]
    assert servers == [["worker-1", "127.0.0.1:9081"], ["worker-2", "127.0.0.1:9082"], ["worker-3", "127.0.0.1:9083"]]


def test_worker_processes_come_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.settings import Settings

    monkeypatch.setenv("WORKER_PROCESSES", "3")
    assert Settings().worker_processes == 3
    monkeypatch.setenv("WORKER_PROCESSES", "10")
    with pytest.raises(ValueError, match="worker_processes"):
        Settings()
    with pytest.raises(ValueError, match="worker_processes must be 1 to 9"):
        StackConfig.create(SINGLE, 10)


def test_up_records_the_shape_that_other_commands_act_on(tmp_path: Path) -> None:
    cfg = StackConfig.create(SINGLE, 3, run_dir=tmp_path)
    cfg.record()
    assert StackConfig.create(SINGLE, run_dir=tmp_path).recorded().worker_processes == 3
    assert StackConfig.create(SINGLE, run_dir=tmp_path / "none").recorded().worker_processes == 1
