"""What rotate-credentials shares (``mlops_charms.rotation``): params, results, restarts."""

from __future__ import annotations

import pytest

from mlops_charms import rotation
from mlops_charms.label_studio import READ_ONLY_TO_BOOTSTRAP as LABEL_STUDIO_BOOTSTRAP
from mlops_charms.mlflow import READ_ONLY_TO_BOOTSTRAP as MLFLOW_BOOTSTRAP

ENV = "/var/lib/mlflow/secrets/secrets.env"


def export(**values: str) -> str:
    return "".join(f"export {name}={value}\n" for name, value in values.items())


def env_file(**values: str) -> str:
    return "".join(f"{name}='{value}'\n" for name, value in values.items())


@pytest.mark.parametrize("render", [export, env_file], ids=["pebble", "systemd"])
def test_a_new_admin_password_alone_needs_no_restart(render):
    before = {ENV: render(MLFLOW_AUTH_ADMIN_PASSWORD="old", PGPASSWORD="db")}
    after = {ENV: render(MLFLOW_AUTH_ADMIN_PASSWORD="new", PGPASSWORD="db")}
    assert not rotation.restart_needed(before, after, read_only_to_bootstrap=MLFLOW_BOOTSTRAP)


@pytest.mark.parametrize("render", [export, env_file], ids=["pebble", "systemd"])
def test_any_other_change_needs_a_restart(render):
    before = {ENV: render(MLFLOW_AUTH_ADMIN_PASSWORD="old", PGPASSWORD="db")}
    after = {ENV: render(MLFLOW_AUTH_ADMIN_PASSWORD="new", PGPASSWORD="rotated")}
    assert rotation.restart_needed(before, after, read_only_to_bootstrap=MLFLOW_BOOTSTRAP)


def test_a_missing_file_needs_a_restart():
    after = {ENV: export(MLFLOW_AUTH_ADMIN_PASSWORD="new")}
    assert rotation.restart_needed({ENV: None}, after, read_only_to_bootstrap=MLFLOW_BOOTSTRAP)


def test_a_variable_that_only_starts_like_a_bootstrap_one_still_counts():
    before = {ENV: export(MLFLOW_AUTH_ADMIN_PASSWORD_FILE="a")}
    after = {ENV: export(MLFLOW_AUTH_ADMIN_PASSWORD_FILE="b")}
    assert rotation.restart_needed(before, after, read_only_to_bootstrap=MLFLOW_BOOTSTRAP)


def test_label_studios_admin_password_and_token_need_no_restart():
    before = {ENV: export(LABEL_STUDIO_PASSWORD="a", LABEL_STUDIO_USER_TOKEN="t", SECRET_KEY="k")}
    after = {ENV: export(LABEL_STUDIO_PASSWORD="b", LABEL_STUDIO_USER_TOKEN="u", SECRET_KEY="k")}
    assert not rotation.restart_needed(
        before, after, read_only_to_bootstrap=LABEL_STUDIO_BOOTSTRAP
    )


def test_results_name_each_secret_and_revision():
    rotated = [
        rotation.Rotated("admin", "mlflow-server", "secret:a", 3),
        rotation.Rotated("trainer", "mlops-tracking-4", "secret:b", 2),
    ]
    assert rotation.results(rotated, restarted=["s3"]) == {
        "admin": {"secret-label": "mlflow-server", "secret-id": "secret:a", "revision": "3"},
        "consumers": {
            "trainer": {
                "secret-label": "mlops-tracking-4",
                "secret-id": "secret:b",
                "revision": "2",
            }
        },
        "rotated": "2",
        "restarted": "s3",
    }


@pytest.mark.parametrize(
    "params",
    [{"target": "none"}, {"target": "admin", "consumer": "trainer"}],
    ids=["unknown target", "consumer with admin"],
)
def test_bad_params_are_refused(params):
    with pytest.raises(ValueError):
        rotation.RotateCredentialsParams(**params)
