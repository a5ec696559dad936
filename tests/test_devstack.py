"""The local stack's process handling, on throwaway processes and ports."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import httpx
import pytest

from devstack.processes import ManagedProcess, StackError
from devstack.setup import run_setup
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
