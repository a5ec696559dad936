"""The README's shell commands, run as written against the session stack, so they cannot drift.

Every command of every ```sh block is either run or listed in NOT_RUN with the reason. A command
added to the README that is in neither list fails the first test below. Commands are run from the
repository root, as a person who just cloned it and ran `make deps` would; the only changes are the
stack's addresses (the README's default ports become the session stack's, through the environment
and in the text), the placeholders <ID> (a real paused invocation) and <REPORT_ID> (the dead letter of
examples/reports.jsonl, by the id report-producer printed), and the ADAPTED ones.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from devstack.config import REPO_ROOT
from tests.harness import TestStack, unique

README = REPO_ROOT / "README.md"

# Not run, each for a reason.
NOT_RUN: list[tuple[str, str]] = [
    (
        r"^make run\b",
        "starts the stack on the default ports, which belong to whoever runs `make up`; the session "
        "stack runs the same code (devstack Stack.up and run_setup) and test_chain_e2e.py sends the same samples",
    ),
    (
        r"\bmake up$",
        "starts the stack on the default ports (see `make run`); here with example provider keys, "
        "hosts or SASL settings that do not exist",
    ),
    (r"^make test\b", "the suite itself"),
    (
        r"^make (down|clean)\b",
        "stops (and deletes) the default-port stack of whoever ran `make up` in this checkout; "
        "tests/test_devstack.py stops processes the same way",
    ),
    (r"^docker compose\b", "no Docker engine on our machines; tests/test_compose.py checks the compose file"),
    (r"\bkcat\b", "kcat is a third-party client that `make deps` does not install (checked by hand with kcat 1.7.1)"),
    (r"broker1:9092", "example brokers, Restate and worker hosts that do not exist"),
    (r"^export KAFKA_", "example SASL/TLS brokers that do not exist; tests/test_kafka_security.py runs SASL for real"),
    (r"^export RESTATE_KAFKA_BOOTSTRAP=", "part of the example SASL/TLS setup above"),
    (r"^openssl genpkey", "writes a key file into the working directory; tests/test_request_signing.py covers signing"),
    (r"^RESTATE_IDENTITY_KEYS=publickeyv1_\.\.\.", "a placeholder key, and a second worker on the default port"),
]
# Run, with a change and its reason: (pattern, replacement, reason).
ADAPTED: list[tuple[str, str, str]] = [
    (r"\| jq .*$", "| python3 -m json.tool > /dev/null",
     "jq is a third-party tool `make deps` does not install: the JSON is parsed by python instead"),
    (r"^(\.venv/bin/report-replay --reason step_failed.*)$", r"\1 --dry-run",
     "a real replay would re-send dead letters of other tests into the shared stack; --dry-run selects the same"),
]  # fmt: skip
# Commands that keep running until Ctrl-C: interrupted after a few seconds; they must have started cleanly.
UNTIL_INTERRUPTED = [r"--follow\b", r"--from-now\b", r"--watch\b"]

ADDRESSES = re.compile(r"\b(?:127\.0\.0\.1|localhost):(9092|9070|8080|9080)\b")


@dataclass(frozen=True)
class Command:
    line: int
    text: str
    """The command as written, continuation lines joined, the trailing comment removed."""


def readme_commands() -> list[Command]:
    text = README.read_text(encoding="utf-8")
    commands = []
    for block in re.finditer(r"^( *)```(?:sh|bash|shell)\n(.*?)^\1```", text, re.S | re.M):
        first_line = text.count("\n", 0, block.start(2)) + 1
        pending, pending_line = "", 0
        for offset, raw in enumerate(block.group(2).splitlines()):
            line = _without_comment(raw).strip()
            if not line:
                continue
            if not pending:
                pending_line = first_line + offset
            if line.endswith("\\"):
                pending += line[:-1].strip() + " "
                continue
            commands.append(Command(pending_line, pending + line))
            pending = ""
    return commands


def _without_comment(line: str) -> str:
    """The line up to a `#` that starts a shell comment (outside quotes, after a space or at the start)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def not_run_reason(command: Command) -> str | None:
    return next((reason for pattern, reason in NOT_RUN if re.search(pattern, command.text)), None)


def test_every_readme_command_is_run_or_skipped_for_a_reason() -> None:
    commands = readme_commands()
    assert len(commands) >= 30
    skipped = [(c, not_run_reason(c)) for c in commands if not_run_reason(c)]
    ran = [c for c in commands if not not_run_reason(c)]
    print("\nREADME commands run against the test stack:")
    for command in ran:
        print(f"  README.md:{command.line}: {command.text}")
    print("README commands skipped by design:")
    for command, reason in skipped:
        print(f"  README.md:{command.line}: {command.text}\n      -> {reason}")
    # Every exception still names a README command (a stale entry would hide nothing, but mislead).
    for pattern, _ in NOT_RUN:
        assert any(re.search(pattern, c.text) for c in commands), f"NOT_RUN entry {pattern!r} matches no command"
    for pattern, _, _ in ADAPTED:
        assert any(re.search(pattern, c.text) for c in ran), f"ADAPTED entry {pattern!r} matches no command"
    assert len(ran) >= 15, "most README commands must run"


# --- running them -------------------------------------------------------------------------------------


class _Runner:
    def __init__(self, stack: TestStack) -> None:
        self.stack = stack
        cfg = stack.cfg
        self.ports = {
            "9092": str(cfg.kafka_port),
            "9070": str(cfg.restate_admin_port),
            "8080": str(cfg.restate_ingress_port),
            "9080": str(cfg.worker_port),
        }
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "RESTATE_", "LLM_", "OPENAI_"))}
        self.env.update(
            KAFKA_BOOTSTRAP_SERVERS=cfg.kafka_bootstrap,
            RESTATE_ADMIN_URL=cfg.admin_url,
            WORKER_URL=cfg.worker_url,
        )
        for name in ("REPORTS_TOPIC", "TABLES_TOPIC", "DEAD_LETTER_TOPIC"):
            self.env.pop(name, None)
        self.placeholders: dict[str, str] = {}
        self.failures: list[str] = []

    def prepared(self, command: Command) -> str:
        text = ADDRESSES.sub(lambda m: m.group(0).rsplit(":", 1)[0] + ":" + self.ports[m.group(1)], command.text)
        for placeholder, value in self.placeholders.items():
            text = text.replace(placeholder, value)
        for pattern, replacement, _ in ADAPTED:
            text = re.sub(pattern, replacement, text)
        return text

    def run(self, command: Command) -> subprocess.CompletedProcess[str] | None:
        text = self.prepared(command)
        if text.startswith("export "):
            name, _, value = text.removeprefix("export ").partition("=")
            self.env[name] = value.strip("'\"")
            return None
        if any(re.search(pattern, text) for pattern in UNTIL_INTERRUPTED):
            return self._until_interrupted(command, text)
        result = subprocess.run(
            ["bash", "-c", text], cwd=REPO_ROOT, env=self.env, capture_output=True, text=True, timeout=180
        )
        if result.returncode != 0:
            self.failures.append(f"README.md:{command.line}: `{text}` exited {result.returncode}:\n{result.stderr}")
        return result

    def _until_interrupted(self, command: Command, text: str) -> subprocess.CompletedProcess[str]:
        process = subprocess.Popen(
            ["bash", "-c", f"exec {text}"],
            cwd=REPO_ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(4)  # connected, positioned, a first screen shown
        process.send_signal(signal.SIGINT)  # Ctrl-C
        out, err = process.communicate(timeout=30)
        if process.returncode not in (0, 130) or "Traceback" in err:
            self.failures.append(
                f"README.md:{command.line}: `{text}` did not run until Ctrl-C: exit {process.returncode}\n{err}"
            )
        return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def _status(runner: _Runner) -> dict[str, Any]:
    result = subprocess.run(
        [".venv/bin/report-status", "--json", "--since", "1h"],
        cwd=REPO_ROOT,
        env=runner.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def _eventually(check: Callable[[], Any], what: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        time.sleep(0.5)
    return value


def _pause_two_reports(stack: TestStack, runner: _Runner) -> list[str]:
    """Two invocations paused for real (their publish fails until the retry policy gives up), then the
    cause fixed, as the README's "Paused invocations" section assumes: returns their invocation ids."""
    reports = [unique("readme-paused"), unique("readme-paused")]
    stack.use_worker_env(
        {
            "TABLES_TOPIC": unique("no-such-topic"),
            "KAFKA_MESSAGE_TIMEOUT_MS": "1000",
            "INVOCATION_RETRY_MAX_ATTEMPTS": "2",
            "INVOCATION_RETRY_MAX_INTERVAL": "1",
        }
    )
    for report in reports:
        stack.send({"id": report, "message": "Uptime was 99.9% with 3 incidents."}, key=report)
    stack.flush()

    def paused() -> list[str]:
        ids = {p["report_id"]: p["id"] for p in _status(runner)["paused"]}
        return [ids[r] for r in reports] if all(r in ids for r in reports) else []

    invocations: list[str] = _eventually(paused, "two paused invocations")
    stack.use_worker_env()  # the fix: the worker publishes to the real tables topic again
    return invocations


def test_readme_commands_run_as_written_against_the_stack(offline_stack: TestStack) -> None:
    stack = offline_stack
    runner = _Runner(stack)
    results: dict[str, subprocess.CompletedProcess[str]] = {}
    paused: list[str] = []
    try:
        for command in readme_commands():
            if not_run_reason(command):
                continue
            if "invocations list --status paused" in command.text and not paused:
                paused = _pause_two_reports(stack, runner)
                runner.placeholders["<ID>"] = paused[0]
            result = runner.run(command)
            if result is not None:
                results[command.text] = result
            if command.text == ".venv/bin/report-producer --file examples/reports.jsonl" and result is not None:
                # Its last report has no metrics: a dead letter, which the replay example selects by id.
                runner.placeholders["<REPORT_ID>"] = result.stdout.splitlines()[-1].split()[0]
    finally:
        stack.use_worker_env()
    assert not runner.failures, "\n\n".join(runner.failures)

    # What the commands printed is what the README says they print.
    sent = results[".venv/bin/report-producer 'Revenue was $12.5M, up 22%, with 340 employees.'"].stdout
    assert re.fullmatch(r"reports/\d+/\d+  reports/\d+@\d+\n", sent), sent
    q3 = next(v for k, v in results.items() if k.startswith('echo \'{"id": "q3"'))
    assert re.fullmatch(r"q3  reports/\d+@\d+\n", q3.stdout), q3.stdout
    example = results[".venv/bin/report-producer --file examples/reports.jsonl"].stdout
    assert len(example.splitlines()) == 5, example
    # The report sent as q3 came back as a table, found by the id report-producer printed.
    table = results[".venv/bin/report-results --id q3 --timeout 60"].stdout
    assert table.startswith("## q3\n| Metric | Value | Unit |"), table
    assert "Uptime | 99.97 | %" in table
    following = results[".venv/bin/report-results --follow"].stderr
    assert "reading results published so far and from now on" in following
    # Both paused invocations were resumed (one by id, one with the handler) and published their tables.
    done = _eventually(
        lambda: all(p not in {e["id"] for e in _status(runner)["paused"]} for p in paused),
        "the paused invocations resuming",
    )
    assert done and len(paused) == 2
