"""Every status the machine unit can reach: the cases shared with labelling-k8s, and its own."""

from __future__ import annotations

from pathlib import Path

from ops import testing

import charm
from tests.labelling_status_cases import StatusCases, status_after
from tests.machine_status_cases import MachineStatusCases


class TestStatus(StatusCases):
    """The shared status cases, on the machine charm."""


class TestMachineStatus(MachineStatusCases):
    """The cases every machine charm shares, on this one."""

    storage = "labelling-data"
    state_dir = "var/lib/labelling-charm"
    first_apt_package = "python3-venv"
    first_unit = "label-studio"


def test_unit_is_installing_until_label_studio_is_there(ctx, make_state):
    Path(charm.PATHS.binaries.uwsgi).unlink()
    # A hook the charm does not reconcile on: Label Studio is not installed yet.
    assert status_after(ctx, make_state(), ctx.on.stop()) == testing.MaintenanceStatus(
        "installing Label Studio"
    )
