"""rotate-credentials on the labelling machine charm: the shared cases, a command as the user.

The command that sets the admin's credentials is run for real, as Label Studio's user, by
``workload_exec.run_as``; the venv's ``python`` here is a stand-in script that keeps the
environment it was given (or fails, as a locked database would make it).
"""

from __future__ import annotations

from pathlib import Path

import pytest

import label_studio_unit
from tests.rotation_cases import LabellingRotationCases, rotate
from tests.systemd_units import unit_settings

FAIL = "fail"


@pytest.fixture(autouse=True)
def records(tmp_path: Path, machine) -> Path:
    """Where the stand-in python writes each environment it was given."""
    folder = tmp_path / "admin-commands"
    folder.mkdir()
    Path(label_studio_unit.PATHS.binaries.app_dir).mkdir(parents=True, exist_ok=True)
    python = Path(label_studio_unit.PATHS.binaries.label_studio).parent / "python"
    python.parent.mkdir(parents=True, exist_ok=True)
    python.write_text(
        "#!/bin/sh\n"
        f'[ -e {folder}/{FAIL} ] && {{ echo "database is locked" >&2; exit 1; }}\n'
        f'/usr/bin/env -0 > "$(mktemp -p {folder} run.XXXXXX)"\n'
    )
    python.chmod(0o755)
    return folder


@pytest.fixture
def admin_commands(records: Path):
    def read() -> list[dict[str, str]]:
        runs = sorted(records.glob("run.*"), key=lambda path: path.stat().st_mtime_ns)
        return [
            dict(item.split("=", 1) for item in path.read_text().split("\0") if item)
            for path in runs
        ]

    return read


@pytest.fixture
def admin_command_fails(records: Path) -> None:
    (records / FAIL).touch()


@pytest.fixture
def secrets_env():
    def read() -> str:
        unit = Path(label_studio_unit.PATHS.unit_file).read_text()
        (env_path,) = unit_settings(unit)["EnvironmentFile"]
        return Path(env_path).read_text()

    return read


class TestRotateCredentials(LabellingRotationCases):
    """The shared cases, on the machine charm."""


def test_rotation_restarts_no_unit(ctx, make_state, machine, records):
    planned = ctx.run(ctx.on.config_changed(), make_state())
    before = len(machine.calls("systemctl"))

    rotate(ctx, planned)

    assert "restart" not in [call[0] for call in machine.calls("systemctl")[before:]]
