"""rotate-credentials on tracking-k8s: the shared cases, and secrets.env under Pebble."""

from __future__ import annotations

from tests.rotation_cases import TrackingRotationCases, rotate
from tests.tracking_testing import SECRETS_ENV, secret_by_label, stored


class TestRotateCredentials(TrackingRotationCases):
    """The shared cases, on tracking-k8s."""


def test_secrets_env_gets_the_new_admin_password_without_a_restart(
    ctx, make_state, data_dir, pebble_calls
):
    planned = ctx.run(ctx.on.config_changed(), make_state())
    pebble_calls.clear()

    _, state_out = rotate(ctx, planned, target="admin")

    password = secret_by_label(state_out, "mlflow-server").latest_content["admin-password"]
    assert f"export MLFLOW_AUTH_ADMIN_PASSWORD={password}\n" in (
        stored(data_dir, SECRETS_ENV).read_text()
    )
    assert pebble_calls == []


def test_next_reconcile_after_rotation_restarts_nothing(ctx, make_state, pebble_calls):
    planned = ctx.run(ctx.on.config_changed(), make_state())
    _, rotated = rotate(ctx, planned, target="admin")
    pebble_calls.clear()

    ctx.run(ctx.on.update_status(), rotated)

    assert pebble_calls == []
