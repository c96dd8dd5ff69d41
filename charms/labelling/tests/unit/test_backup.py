"""Backup and restore on a machine: the shared cases, jobs as transient systemd units."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path

import pytest
from ops import testing
from scenario.state import _Event

import charm
import label_studio_unit
from mlops_charms.systemd_jobs import SystemdJobRunner
from tests.labelling_backup_cases import LabellingBackupCases
from tests.systemd_units import systemd_words, unit_settings


class TestBackup(LabellingBackupCases):
    """The backup tests labelling-k8s shares (tests/labelling_backup_cases.py)."""


@pytest.fixture
def storage() -> testing.Storage:
    return testing.Storage("labelling-data")


@pytest.fixture
def data_dir(ctx, storage: testing.Storage) -> Path:
    """The unit's ``labelling-data`` storage (``deployed``'s): a real folder."""
    path = storage.get_filesystem(ctx)
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def state_dir(data_dir: Path) -> str:
    return str(data_dir)


@pytest.fixture
def deployed(ctx, make_state, storage) -> Callable[..., testing.State]:
    """A unit whose Label Studio came up (start)."""
    return lambda **kwargs: ctx.run(ctx.on.start(), make_state(storages={storage}, **kwargs))


@pytest.fixture
def outcomes() -> dict[str, tuple[str, str, int]]:
    return {}


@pytest.fixture
def job_will(outcomes) -> Callable[..., None]:
    """A job runs until the test ends it (systemd runs nothing here): its outcome then."""

    def set_outcome(command: str, *, stdout="{}\n", stderr="", code=0, later=True) -> None:
        del later
        outcomes[command] = (stdout, stderr, code)

    return set_outcome


def _job_unit(job_id: str) -> Path:
    return Path(label_studio_unit.PATHS.jobs_units_dir, f"{charm.JOB_UNIT_PREFIX}{job_id}.service")


@pytest.fixture
def job_ends(machine, data_dir, outcomes) -> Callable[..., tuple[testing.State, object]]:
    """The running job ends as its ExecStopPost ends it; the ``job-ended`` event."""

    def end(state: testing.State):
        runner = SystemdJobRunner(charm.job_paths(str(data_dir)), slot="labelling")
        job = runner.current()
        assert job is not None, "no job is running"
        (machine.state / "units" / _job_unit(job.id).name).unlink()
        stdout, stderr, code = outcomes[job.kind.removesuffix("-backup")]
        runner.record_end(job.id, code, stdout=stdout, stderr=stderr)
        return state, _Event("job_ended")

    return end


@pytest.fixture
def job_command() -> Callable[[str], str]:
    def command(job_id: str) -> str:
        exec_start = unit_settings(_job_unit(job_id).read_text())["ExecStart"][0]
        return shlex.join(systemd_words(exec_start))

    return command


@pytest.fixture
def server_running(machine) -> Callable[[testing.State], bool]:
    return lambda _state: label_studio_unit.SERVICE in machine.running_units()
