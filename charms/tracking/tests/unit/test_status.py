"""Every status the machine unit can reach: the cases shared with tracking-k8s, and its own."""

from __future__ import annotations

from conftest import INTERNAL_URL
from ops import testing

from tests.machine_status_cases import MachineStatusCases
from tests.tracking_status_cases import StatusCases, status_after
from tests.tracking_testing import database_relation, database_secret


class TestStatus(StatusCases):
    """The shared status cases, on the machine charm."""


class TestMachineStatus(MachineStatusCases):
    """The cases every machine charm shares, on this one."""

    storage = "mlflow-data"
    state_dir = "var/lib/mlflow-charm"
    first_apt_package = "python3-venv"
    first_unit = "mlflow"


def test_ready_server_is_active_with_its_machine_url(ctx, make_state):
    assert status_after(ctx, make_state()) == testing.ActiveStatus(f"serving at {INTERNAL_URL}")


def test_unit_on_postgresql_is_active(ctx, make_state):
    secret = database_secret()
    state = make_state(relations={database_relation(secret)}, secrets={secret})
    assert status_after(ctx, state) == testing.ActiveStatus(f"serving at {INTERNAL_URL}")
