"""rotate-credentials on the tracking machine charm: the shared cases, and secrets.env."""

from __future__ import annotations

from pathlib import Path

import mlflow_unit
from tests.rotation_cases import TrackingRotationCases, rotate
from tests.systemd_units import environment_file, unit_settings
from tests.tracking_testing import secret_by_label


class TestRotateCredentials(TrackingRotationCases):
    """The shared cases, on the machine charm."""


def test_environment_file_gets_the_new_admin_password_without_a_restart(ctx, make_state, machine):
    planned = ctx.run(ctx.on.config_changed(), make_state())
    before = len(machine.calls("systemctl"))

    _, state_out = rotate(ctx, planned, target="admin")

    password = secret_by_label(state_out, "mlflow-server").latest_content["admin-password"]
    unit = Path(mlflow_unit.PATHS.unit_file).read_text()
    (env_path,) = unit_settings(unit)["EnvironmentFile"]
    assert environment_file(Path(env_path).read_text())["MLFLOW_AUTH_ADMIN_PASSWORD"] == password
    # Only asked whether the units run: neither restarted nor reloaded.
    assert [call[0] for call in machine.calls("systemctl")[before:]] == ["is-active", "is-active"]
