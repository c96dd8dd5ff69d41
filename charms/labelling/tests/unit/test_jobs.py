"""Labelling jobs on a machine: transient systemd units, their secrets, their end reported once.

The jobs are ``mlops_charms.systemd_jobs``' (its own tests run units for real); here, what the
charm asks of it: the job's command, user, folder and credentials, and what the charm does when a
job's ``job-ended`` event (or update-status) finds it ended.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from ops import testing

import charm
import label_studio_unit
from mlops_charms.systemd_jobs import SystemdJobRunner
from tests.fake_machine import FakeMachine
from tests.labelling_testing import (
    ADMIN_TOKEN,
    REGISTRY_CA,
    REGISTRY_PASSWORD,
    dataset_relation,
    registry_secret,
    relabel_relation,
)
from tests.systemd_units import environment_file, systemd_words, unit_settings

IMPORT = {"version": "v1", "project": "reviews", "preset": "text-classification", "labels": "a"}
BATCH = {"batch_id": "b1", "items": ["texts/a.txt"], "project": "reviews"}


@pytest.fixture
def registry_state(make_state):
    """A unit related to the registry, which granted write access."""
    secret = registry_secret()
    return make_state(relations={dataset_relation(secret)}, secrets={secret})


def data_dir(ctx, state: testing.State) -> Path:
    (storage,) = state.storages
    return storage.get_filesystem(ctx)


def runner(ctx, state: testing.State) -> SystemdJobRunner:
    paths = charm.job_paths(str(data_dir(ctx, state)))
    return SystemdJobRunner(paths, juju_unit="labelling/0", slot="labelling")


def job_unit(job_id: str) -> Path:
    units = Path(label_studio_unit.PATHS.jobs_units_dir)
    return units / f"{charm.JOB_UNIT_PREFIX}{job_id}.service"


def import_without_waiting(ctx, state: testing.State) -> str:
    ctx.run(ctx.on.action("import-version", params={**IMPORT, "wait": False}), state)
    assert ctx.action_results is not None
    return ctx.action_results["job"]


def test_an_import_runs_as_a_transient_unit_of_the_label_studio_user(ctx, registry_state):
    job_id = import_without_waiting(ctx, registry_state)
    unit = unit_settings(job_unit(job_id).read_text())
    command = systemd_words(unit["ExecStart"][0])
    paths = label_studio_unit.PATHS
    assert command[:3] == [paths.binaries.mlops_workload, "labelling", "import-version"]
    assert command[command.index("--version") + 1] == "v1"
    assert unit["User"] == [paths.user]
    assert unit["WorkingDirectory"] == [str(data_dir(ctx, registry_state))]


def test_a_jobs_credentials_are_only_in_its_0600_environment_file(ctx, registry_state):
    job_id = import_without_waiting(ctx, registry_state)
    unit = unit_settings(job_unit(job_id).read_text())
    (env_path,) = unit["EnvironmentFile"]
    assert stat.S_IMODE(Path(env_path).stat().st_mode) == 0o600
    env = environment_file(Path(env_path).read_text())
    assert env["MLOPS_REGISTRY_PASSWORD"] == REGISTRY_PASSWORD
    assert env["LABEL_STUDIO_API_KEY"] == ADMIN_TOKEN
    text = job_unit(job_id).read_text()
    assert REGISTRY_PASSWORD not in text
    assert ADMIN_TOKEN not in text


def test_a_second_job_waits_for_the_running_one(ctx, registry_state):
    job_id = import_without_waiting(ctx, registry_state)
    with pytest.raises(testing.ActionFailed) as failed:
        ctx.run(ctx.on.action("import-version", params=IMPORT), registry_state)
    assert failed.value.message == (
        f"job {job_id} (import-version) is running; wait for it (list-jobs)"
    )


def test_a_job_systemd_refuses_fails_its_action_and_is_listed(ctx, registry_state, machine):
    (machine.state / "systemctl-fails").write_text("start\n")
    with pytest.raises(testing.ActionFailed) as failed:
        ctx.run(ctx.on.action("import-version", params=IMPORT), registry_state)
    assert failed.value.message.startswith("cannot start the job: systemd did not start ")
    ctx.run(ctx.on.action("list-jobs"), registry_state)
    assert ctx.action_results is not None
    (job,) = json.loads(ctx.action_results["jobs"])
    assert job["state"] == "failed"


def test_job_ended_reports_an_ended_job_once_and_removes_its_unit(
    ctx, registry_state, machine: FakeMachine
):
    job_id = import_without_waiting(ctx, registry_state)
    # What the job's ExecStopPost records when it ends.
    (machine.state / "units" / job_unit(job_id).name).unlink()
    runner(ctx, registry_state).record_end(job_id, 0, stdout='{"tasks_created": 6}\n')
    with ctx(ctx.on.stop(), registry_state) as manager:
        manager.charm.on.job_ended.emit()
        manager.run()
    assert runner(ctx, registry_state).unreported() == []
    assert not job_unit(job_id).exists()


def test_a_relabel_batch_systemd_refuses_is_failed_not_retried(ctx, make_state, machine):
    (machine.state / "systemctl-fails").write_text("start\n")
    relation = relabel_relation(BATCH)
    out = ctx.run(ctx.on.update_status(), make_state(relations={relation}))
    acknowledged = out.get_relation(relation.id).local_app_data
    assert json.loads(acknowledged["failed"]) == ["b1"]


def test_a_registry_ca_is_a_file_in_the_storage_named_in_the_jobs_environment(ctx, make_state):
    secret = registry_secret()
    state = make_state(relations={dataset_relation(secret, ca=REGISTRY_CA)}, secrets={secret})
    job_id = import_without_waiting(ctx, state)
    (env_path,) = unit_settings(job_unit(job_id).read_text())["EnvironmentFile"]
    env = environment_file(Path(env_path).read_text())
    ca_path = data_dir(ctx, state) / "registry-ca.pem"
    assert env["GIT_SSL_CAINFO"] == env["AWS_CA_BUNDLE"] == str(ca_path)
    assert ca_path.read_text() == REGISTRY_CA
    assert stat.S_IMODE(ca_path.stat().st_mode) == 0o644  # the job's user reads it
