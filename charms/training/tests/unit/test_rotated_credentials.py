"""Tracking rotated training's MLflow password: the next job's 0600 ``env`` has the new one.

On ``secret-changed`` the charm reads the secret's new revision (``refresh=True``); a job
started after it writes that revision's password into its env, never the old one.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from conftest import Machine
from ops import testing

import machine_paths

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "training-k8s/tests/unit"))
from training_testing import MLFLOW_PASSWORD, dataset_relation, tracking_relation

ROTATED = "mlflow-r0tated-password"


def test_a_job_after_secret_changed_logs_with_the_new_password(ctx, machine: Machine):
    dataset, dataset_secret = dataset_relation()
    tracking, tracking_secret = tracking_relation()
    rotated = dataclasses.replace(
        tracking_secret,
        latest_content={**tracking_secret.tracked_content, "password": ROTATED},
    )
    state = testing.State(
        leader=True, relations={dataset, tracking}, secrets={dataset_secret, rotated}
    )
    state = ctx.run(ctx.on.secret_changed(rotated), state)

    ctx.run(ctx.on.action("train", params={"spec": "text-tfidf-logreg"}), state)

    results = ctx.action_results
    assert results is not None
    env = (Path(machine_paths.PATHS.jobs_dir) / results["job"] / "env").read_text()
    assert f"MLFLOW_TRACKING_PASSWORD='{ROTATED}'" in env
    assert MLFLOW_PASSWORD not in env
