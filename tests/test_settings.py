"""The one settings object: every setting documented, another environment readable, bad values named."""

from __future__ import annotations

import subprocess
import sys

from devstack.config import REPO_ROOT
from worker.settings import Settings, settings_from


def test_every_setting_is_in_the_readme_table() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    undocumented = [
        name.upper() for name in Settings.model_fields if name != "kafka" and f"`{name.upper()}`" not in readme
    ]
    assert not undocumented, f"add these to README.md, Configuration: {undocumented}"


def test_another_environment_is_read_whole_and_empty_means_unset() -> None:
    settings = settings_from({"TABLES_TOPIC": "t2", "STEP_MAX_ATTEMPTS": "", "KAFKA_BOOTSTRAP_SERVERS": "b:1"})
    assert (settings.tables_topic, settings.step_max_attempts) == (
        "t2",
        Settings.model_fields["step_max_attempts"].default,
    )
    assert settings.kafka.bootstrap_servers == "b:1" and settings.restate_kafka.bootstrap_servers == "b:1"
    assert settings_from({"RESTATE_KAFKA_BOOTSTRAP": "r:2"}).restate_kafka.bootstrap_servers == "r:2"


def test_an_invalid_value_stops_a_tool_with_exit_2_naming_the_variable_not_the_value() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ops.results", "--help"],
        cwd=REPO_ROOT,
        env={"STEP_MAX_ATTEMPTS": "many-s3cret", "PATH": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "invalid configuration: STEP_MAX_ATTEMPTS" in done.stderr and "s3cret" not in done.stderr
