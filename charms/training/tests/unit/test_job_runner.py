"""The shared machine job runner (``mlops_charms.systemd_jobs``) with a slot, on the fake machine.

Training's runs share out the GPUs and use no slot; the data-versioning and labelling machine
charms run one job at a time. The runner is tested here because this suite has the machine
(charmhelpers under an Ubuntu os-release, the fake ``systemctl``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import UNIT, Machine

import machine_paths
from mlops_charms.jobs import JobBusyError, JobSpec, JobStartError
from mlops_charms.systemd_jobs import SystemdJobRunner
from tests.systemd_units import environment_file, unit_settings

SPEC = JobSpec(
    kind="export",
    command=["/usr/bin/true", "--project", "7"],
    params={"project": "7"},
    environment={"MLOPS_REGISTRY_PASSWORD": "it's secret"},
)


@pytest.fixture
def runner(machine: Machine) -> SystemdJobRunner:
    del machine
    return SystemdJobRunner(machine_paths.PATHS.jobs, juju_unit=UNIT, slot="export")


def test_a_job_runs_as_its_unit_with_its_secrets_only_in_the_environment_file(
    runner: SystemdJobRunner, machine: Machine
):
    job = runner.start(SPEC)
    unit_name = runner.paths.unit_name(job.id)
    assert unit_name in machine.running_units()
    text = (Path(runner.paths.units_dir) / unit_name).read_text()
    assert "it's secret" not in text
    settings = unit_settings(text)
    env = Path(settings["EnvironmentFile"][0])
    assert environment_file(env.read_text()) == {"MLOPS_REGISTRY_PASSWORD": "it's secret"}
    assert env.stat().st_mode & 0o777 == 0o600
    assert settings["WorkingDirectory"] == [f"{runner.paths.jobs_dir}/{job.id}/work"]
    assert "CUDA_VISIBLE_DEVICES" not in text, "not a GPU job"
    assert runner.current() == job


def test_the_slot_runs_one_job_and_is_free_once_it_ended(
    runner: SystemdJobRunner, machine: Machine
):
    first = runner.start(SPEC)
    with pytest.raises(JobBusyError):
        runner.start(SPEC)
    (machine.state / "units" / runner.paths.unit_name(first.id)).unlink()  # it stopped
    runner.record_end(first.id, 0, stdout='{"ok": true}\n')
    second = runner.start(SPEC)
    assert second.id != first.id and runner.current() == second


def test_a_job_systemd_does_not_start_is_recorded_as_failed(
    runner: SystemdJobRunner, machine: Machine
):
    (machine.state / "systemctl-fails").write_text("start\n")
    with pytest.raises(JobStartError, match="systemd did not start"):
        runner.start(SPEC)
    (job,) = runner.list()
    assert job.state == "failed" and job.error is not None
    assert runner.current() is None and runner.unreported() == []


def test_a_job_whose_unit_vanished_without_an_end_is_recorded_lost(
    runner: SystemdJobRunner, machine: Machine
):
    job = runner.start(SPEC)
    (machine.state / "units" / runner.paths.unit_name(job.id)).unlink()  # a reboot
    runner.record_lost()
    recorded = runner.get(job.id)
    assert recorded is not None and recorded.error == (
        "its systemd unit is gone and its end was not recorded"
    )
    runner.finish(recorded)
    assert not (Path(runner.paths.units_dir) / runner.paths.unit_name(job.id)).exists()
