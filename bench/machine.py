"""A description of the machine and the software versions a run measured."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import confluent_kafka
import psutil

from devstack.components import Restate
from devstack.config import KAFKA_LIBS, StackConfig
from devstack.processes import StackError


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _os() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return f"{line.split('=', 1)[1].strip(chr(34))}, Linux {platform.release()}"
    except OSError:
        pass
    return platform.platform()


def _kafka_version() -> str:
    jars = sorted(KAFKA_LIBS.glob("kafka_2.13-*.jar"))
    return jars[0].stem.removeprefix("kafka_2.13-") if jars else "unknown"


def _restate_version() -> str:
    try:
        binary = Restate(StackConfig()).argv()[0]  # the pinned npm package's server binary
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=False)
        return out.stdout.strip().removeprefix("restate-server ") or "unknown"
    except (StackError, OSError, subprocess.TimeoutExpired):
        return "unknown"


def _package(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def describe() -> dict[str, str]:
    cores = psutil.cpu_count(logical=True) or os.cpu_count() or 0
    physical = psutil.cpu_count(logical=False)
    return {
        "CPU": _cpu_model(),
        "cores": f"{cores} logical" + (f" ({physical} physical)" if physical else ""),
        "RAM": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "OS": _os(),
        "Python": platform.python_version(),
        "Kafka": _kafka_version(),
        "restate-server": _restate_version(),
        "restate-sdk": _package("restate-sdk"),
        "confluent-kafka / librdkafka": f"{_package('confluent-kafka')} / {confluent_kafka.libversion()[0]}",
        "hypercorn": _package("hypercorn"),
        "openai": _package("openai"),
    }


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"
