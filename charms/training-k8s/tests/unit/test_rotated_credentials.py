"""A provider rotated credentials (rotate-credentials): training-k8s follows on secret-changed.

The runs' Kubernetes Secret gets the new revision's values at once, so a pod started from then
on (a new run, or a Job's retry) uses them; the next run's action reads them too.
"""

from __future__ import annotations

import dataclasses

from ops import testing
from training_testing import APP, MLFLOW_PASSWORD, MODEL, dataset_relation, tracking_relation

ROTATED = "mlflow-r0tated-password"
CREDENTIALS = f"{APP}-training-credentials"


def rotated_state(make_state) -> tuple[testing.State, testing.Secret]:
    """Related to tracking, whose secret has a new revision this unit has not read yet."""
    dataset, dataset_secret = dataset_relation()
    tracking, tracking_secret = tracking_relation()
    rotated = dataclasses.replace(
        tracking_secret,
        latest_content={**tracking_secret.tracked_content, "password": ROTATED},
    )
    state = make_state(
        related=False, relations={dataset, tracking}, secrets={dataset_secret, rotated}
    )
    return state, rotated


def test_secret_changed_writes_the_new_password_to_the_runs_secret(ctx, make_state, kubernetes):
    state, rotated = rotated_state(make_state)

    ctx.run(ctx.on.secret_changed(rotated), state)

    secret = kubernetes.get(MODEL, "secrets", CREDENTIALS)
    assert secret is not None
    assert secret["stringData"]["MLFLOW_TRACKING_PASSWORD"] == ROTATED


def test_a_run_after_the_rotation_uses_the_new_password(ctx, make_state, kubernetes):
    state, rotated = rotated_state(make_state)
    state_out = ctx.run(ctx.on.secret_changed(rotated), state)

    ctx.run(ctx.on.action("train", params={"spec": "image-svc"}), state_out)

    secret = kubernetes.get(MODEL, "secrets", CREDENTIALS)
    assert secret is not None
    assert secret["stringData"]["MLFLOW_TRACKING_PASSWORD"] == ROTATED
    assert MLFLOW_PASSWORD not in secret["stringData"].values()


def test_a_non_leader_leaves_the_runs_secret_to_the_leader(ctx, make_state, kubernetes):
    state, rotated = rotated_state(make_state)
    ctx.run(ctx.on.secret_changed(rotated), dataclasses.replace(state, leader=False))
    assert kubernetes.get(MODEL, "secrets", CREDENTIALS) is None
