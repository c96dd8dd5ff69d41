"""Backup and restore on a machine: the shared cases, jobs as transient systemd units."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path

import pytest
from ops import testing
from scenario.state import _Event

import charm
import mlflow_unit
from mlops_charms import tracking_backup
from mlops_charms.systemd_jobs import SystemdJobRunner
from tests.systemd_units import systemd_words, unit_settings
from tests.tracking_backup_cases import TrackingBackupCases


class TestBackup(TrackingBackupCases):
    """The backup tests tracking-k8s shares (tests/tracking_backup_cases.py)."""


@pytest.fixture
def storage() -> testing.Storage:
    return testing.Storage("mlflow-data")


@pytest.fixture
def data_dir(ctx, storage: testing.Storage) -> Path:
    """The unit's ``mlflow-data`` storage (``deployed``'s): a real folder."""
    path = storage.get_filesystem(ctx)
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def state_dir(data_dir: Path) -> str:
    return str(data_dir)


@pytest.fixture
def deployed(ctx, make_state, storage) -> Callable[..., testing.State]:
    """A unit whose MLflow came up (start)."""
    return lambda **kwargs: ctx.run(ctx.on.start(), make_state(storages={storage}, **kwargs))


def _runner(data_dir: Path) -> SystemdJobRunner:
    return SystemdJobRunner(charm.job_paths(str(data_dir)), slot=tracking_backup.JOB_SLOT)


def _job_unit(job_id: str) -> Path:
    return Path(mlflow_unit.PATHS.jobs_units_dir, f"{charm.JOB_UNIT_PREFIX}{job_id}.service")


@pytest.fixture
def job_command(data_dir: Path) -> Callable[[testing.State], str]:
    """The running job's ExecStart, as one string (systemd runs nothing here)."""

    def command(_state: testing.State) -> str:
        job = _runner(data_dir).current()
        assert job is not None, "no job is running"
        exec_start = unit_settings(_job_unit(job.id).read_text())["ExecStart"][0]
        return shlex.join(systemd_words(exec_start))

    return command


@pytest.fixture
def job_ends(machine, data_dir: Path) -> Callable[..., tuple[testing.State, object]]:
    """The running job ends as its ExecStopPost ends it; the ``job-ended`` event."""

    def end(state: testing.State, *, stdout: str = "", stderr: str = "", code: int = 0):
        runner = _runner(data_dir)
        job = runner.current()
        assert job is not None, "no job is running"
        (machine.state / "units" / _job_unit(job.id).name).unlink()
        runner.record_end(job.id, code, stdout=stdout, stderr=stderr)
        return state, _Event("job_ended")

    return end


@pytest.fixture
def server_running(machine) -> Callable[[testing.State], bool]:
    return lambda _state: mlflow_unit.SERVICE in machine.running_units()


def test_the_jobs_run_the_workload_venvs_cli(ctx, deployed, job_command):
    out = ctx.run(ctx.on.action("create-backup", params={"wait": False}), deployed())
    assert job_command(out).startswith(f"{mlflow_unit.PATHS.mlops_workload} backup create")
