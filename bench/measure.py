"""What a scenario costs the processes that serve it: peak RSS, CPU seconds, open connections.

A background thread samples the RSS of each watched process a few times a second
(peaks are short-lived under load); CPU is the difference of `cpu_times()`
(user + system) between the start and the end of the measured run.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import psutil

SAMPLE_INTERVAL_S = 0.2


@dataclass(frozen=True)
class ProcessUsage:
    """One process over one measured run."""

    peak_rss_mb: float
    cpu_s: float
    """User + system CPU seconds spent during the run."""
    wall_s: float = 0.0
    """How long the run was watched; cpu_s / wall_s is the share of one core it used."""

    @property
    def cores(self) -> float:
        """Average cores busy (1.0 = one core all the time: a single-threaded process is saturated)."""
        return self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def _established(proc: psutil.Process, port: int) -> int:
    """TCP connections of `proc` in ESTABLISHED state from or to `port`."""
    count = 0
    for conn in proc.net_connections(kind="tcp"):
        if conn.status != psutil.CONN_ESTABLISHED:
            continue
        remote_port = conn.raddr.port if conn.raddr else None
        if port in (conn.laddr.port, remote_port):
            count += 1
    return count


class ProcessWatch:
    """Samples named processes (by PID) from `start()` to `stop()`.

    `connections` maps a label to (process name, port): the most ESTABLISHED
    connections of that process from or to that port seen at once, e.g. how many
    HTTP/2 connections Restate opened to the worker, or the worker to the LLM.
    """

    def __init__(self, pids: Mapping[str, int], connections: Mapping[str, tuple[str, int]] | None = None) -> None:
        self._procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self._connections = dict(connections or {})
        self._cpu_start: dict[str, float] = {}
        self._started = 0.0
        self._peak_rss: dict[str, int] = dict.fromkeys(self._procs, 0)
        self.max_connections: dict[str, int] = dict.fromkeys(self._connections, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_loop, name="bench-sampler", daemon=True)

    def start(self) -> ProcessWatch:
        self._started = time.monotonic()
        self._cpu_start = {name: _cpu(p) for name, p in self._procs.items()}
        self._sample()
        self._thread.start()
        return self

    def stop(self) -> dict[str, ProcessUsage]:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sample()
        wall = time.monotonic() - self._started
        return {
            name: ProcessUsage(
                peak_rss_mb=self._peak_rss[name] / 2**20,
                cpu_s=_cpu(proc) - self._cpu_start[name],
                wall_s=wall,
            )
            for name, proc in self._procs.items()
        }

    def _sample_loop(self) -> None:
        ticks = 0
        while not self._stop.wait(SAMPLE_INTERVAL_S):
            ticks += 1
            # Connection listing walks /proc/net: once a second is enough.
            self._sample(connections=ticks % 5 == 0)

    def _sample(self, connections: bool = True) -> None:
        for name, proc in self._procs.items():
            with contextlib.suppress(psutil.Error):  # the process went away: stop() reports what was seen
                self._peak_rss[name] = max(self._peak_rss[name], proc.memory_info().rss)
        if not connections:
            return
        for label, (name, port) in self._connections.items():
            with contextlib.suppress(psutil.Error):
                self.max_connections[label] = max(self.max_connections[label], _established(self._procs[name], port))


def rss_mb(pid: int) -> float:
    return float(psutil.Process(pid).memory_info().rss) / 2**20


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), nearest-rank: a value that was actually observed."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[rank - 1])
