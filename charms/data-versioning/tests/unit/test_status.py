"""The unit's status on a machine: the shared cases, and the storage and the install."""

from __future__ import annotations

from pathlib import Path

from ops import testing

import registry_units
from tests.machine_status_cases import MachineStatusCases
from tests.registry_status_cases import StatusCases


class TestStatus(StatusCases):
    """The statuses data-versioning-k8s shares (tests/registry_status_cases.py)."""


class TestMachineStatus(MachineStatusCases):
    """The cases every machine charm shares, on this one."""

    storage = "registry-data"
    state_dir = "var/lib/mlops-registry-charm"
    first_apt_package = "apache2"
    first_unit = registry_units.GIT_UNIT


def test_installing_until_the_workload_is_there(ctx, make_state):
    Path(registry_units.PATHS.binaries.mlops_workload).unlink()
    out = ctx.run(ctx.on.install(), make_state())
    assert out.unit_status == testing.MaintenanceStatus("installing the registry")


def test_a_stopped_git_server_shows_as_starting(ctx, deployed, machine):
    state = deployed()
    (machine.state / "units" / registry_units.GIT_UNIT).unlink()
    out = ctx.run(ctx.on.action("list-jobs"), state)
    assert out.unit_status == testing.MaintenanceStatus("starting the registry")
