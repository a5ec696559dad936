"""The lock files pin what pyproject.toml asks for: every dependency, at a version its specifier allows,
with hashes, and the same runtime versions in both files (`make lock` writes them)."""

from __future__ import annotations

import re
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from devstack.config import REPO_ROOT

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\]+)")


def pins(name: str) -> dict[str, str]:
    """Package -> pinned version; every pin must carry a hash (pip installs them with --require-hashes)."""
    found = {}
    for entry in re.split(r"\n(?=\S)", (REPO_ROOT / name).read_text()):  # a pin, then its indented hashes
        if match := _PIN.match(entry):
            assert "--hash=sha256:" in entry, f"{name}: {match.group(1)} has no hash: run `make lock`"
            found[canonicalize_name(match.group(1))] = match.group(2)
    return found


def requirements(*groups: str) -> list[Requirement]:
    listed = list(PYPROJECT["dependencies"])
    for group in groups:
        listed += PYPROJECT["optional-dependencies"][group]
    return [Requirement(r) for r in listed]


def _check(lock: dict[str, str], wanted: list[Requirement], name: str) -> None:
    for req in wanted:
        pinned = lock.get(canonicalize_name(req.name))
        assert pinned is not None, f"{req.name} is in pyproject.toml but not in {name}: run `make lock`"
        assert req.specifier.contains(pinned, prereleases=True), (
            f"{name} pins {req.name}=={pinned}, outside {req.specifier} in pyproject.toml: run `make lock`"
        )


def test_the_runtime_lock_pins_every_dependency() -> None:
    _check(pins("requirements.lock"), requirements(), "requirements.lock")


@pytest.mark.parametrize("group", sorted(PYPROJECT["optional-dependencies"]))
def test_the_dev_lock_pins_every_extra(group: str) -> None:
    _check(pins("requirements-dev.lock"), requirements(group), "requirements-dev.lock")


def test_both_locks_agree_on_the_runtime_versions() -> None:
    runtime, dev = pins("requirements.lock"), pins("requirements-dev.lock")
    assert {name: dev.get(name) for name in runtime} == runtime
