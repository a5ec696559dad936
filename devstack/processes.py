"""Background processes with a PID file and a log file each, under one run directory.

A process counts as ours only while its PID file names a live process whose
command line still matches what we started: a stale PID reused by something
else is never signalled.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


class StackError(RuntimeError):
    """A stack operation failed; the message says what to do."""


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) == 0


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (killed, not yet reaped by its parent) is not running.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@dataclass(frozen=True)
class ManagedProcess:
    name: str
    run_dir: Path
    ports: Sequence[int]
    marker: str
    """A substring of the command line that identifies this process (e.g. its config path)."""

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.run_dir / f"{self.name}.log"

    def pid(self) -> int | None:
        """The PID of our running process, or None."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if _alive(pid) and self.marker in _cmdline(pid):
            return pid
        return None

    def is_running(self) -> bool:
        return self.pid() is not None

    def check_ports_free(self, grace: float = 5.0) -> None:
        # A process killed a moment ago may still hold its sockets while its threads exit.
        deadline = time.monotonic() + grace
        while any(port_in_use(p) for p in self.ports) and time.monotonic() < deadline:
            time.sleep(0.1)
        for port in self.ports:
            if port_in_use(port):
                raise StackError(
                    f"port {port} is already in use by another process, so {self.name} cannot start. "
                    f"Stop whatever listens on {port} (`ss -ltnp | grep :{port}`), "
                    "or run `make down` if it is an old stack."
                )

    def start(self, argv: Sequence[str], env: dict[str, str], cwd: Path | None = None) -> subprocess.Popen[bytes]:
        self.check_ports_free()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {self.name}\n".encode())
            log.flush()
            # A new session: Ctrl-C in the terminal that ran `make up` does not reach the stack.
            proc = subprocess.Popen(
                list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, cwd=cwd, start_new_session=True,
            )  # fmt: skip
        self.pid_file.write_text(f"{proc.pid}\n")
        # Until the child has exec'd, /proc shows our own command line, without the marker:
        # wait for the child's, so pid() finds the process as soon as start() returns.
        deadline = time.monotonic() + 5
        while self.marker not in _cmdline(proc.pid) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        return proc

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send a signal to the process (tests use SIGKILL to simulate crashes)."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, sig)

    def stop(self, timeout: float = 15.0) -> bool:
        """SIGTERM, then SIGKILL after `timeout`. Returns True when a process was stopped."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
        return True

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
