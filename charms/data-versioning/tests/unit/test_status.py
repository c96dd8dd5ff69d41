"""The unit's status on a machine: the shared cases, and the storage and the install."""

from __future__ import annotations

import subprocess
from pathlib import Path

from ops import testing

import registry_units
from mlops_charms import machine as machine_install
from mlops_charms.machine import InstallError
from tests.registry_status_cases import StatusCases


class TestStatus(StatusCases):
    """The statuses data-versioning-k8s shares (tests/registry_status_cases.py)."""


def test_waits_for_the_storage(ctx, make_state):
    out = ctx.run(ctx.on.install(), make_state(storages=set()))
    assert out.unit_status == testing.WaitingStatus("waiting for the registry-data storage")


def test_a_failed_install_blocks_with_its_reason(ctx, make_state, monkeypatch):
    def fail(*_args, **_kwargs):
        raise InstallError("pip install dvc==3.67.1 failed: No matching distribution")

    monkeypatch.setattr(machine_install, "ensure_workload", fail)
    out = ctx.run(ctx.on.install(), make_state())
    assert out.unit_status == testing.BlockedStatus(
        "install failed: pip install dvc==3.67.1 failed: No matching distribution"
    )


def test_a_failed_apt_install_blocks(ctx, make_state, machine, monkeypatch):
    (machine.root / "var/lib/mlops-registry-charm/apt").unlink()

    def fail(packages, fatal=False):
        raise subprocess.CalledProcessError(100, ["apt-get", "install", *packages])

    monkeypatch.setattr(machine_install, "apt_install", fail)
    out = ctx.run(ctx.on.install(), make_state())
    assert isinstance(out.unit_status, testing.BlockedStatus)
    assert out.unit_status.message.startswith("install failed: apt-get install apache2 git")


def test_installing_until_the_workload_is_there(ctx, make_state):
    Path(registry_units.PATHS.binaries.mlops_workload).unlink()
    out = ctx.run(ctx.on.install(), make_state())
    assert out.unit_status == testing.MaintenanceStatus("installing the registry")


def test_a_stopped_git_server_shows_as_starting(ctx, deployed, machine):
    state = deployed()
    (machine.state / "units" / registry_units.GIT_UNIT).unlink()
    out = ctx.run(ctx.on.action("list-jobs"), state)
    assert out.unit_status == testing.MaintenanceStatus("starting the registry")


def test_a_unit_systemd_cannot_start_blocks(ctx, make_state, machine):
    (machine.state / "systemctl-fails").write_text("restart start\n")
    out = ctx.run(ctx.on.start(), make_state())
    assert out.unit_status == testing.BlockedStatus(
        f"systemd did not start {registry_units.GIT_UNIT}: "
        f"see journalctl -u {registry_units.GIT_UNIT}"
    )
