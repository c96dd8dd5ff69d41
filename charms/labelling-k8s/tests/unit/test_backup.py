"""Backup and restore on Kubernetes: the shared cases, jobs as Pebble services."""

from __future__ import annotations

import shlex
from collections.abc import Callable

import pytest
from ops import pebble, testing
from workload_jobs import LATER, Outcome, WorkloadJobs

from mlops_charms import label_studio
from tests.labelling_backup_cases import BACKUP_ID, LabellingBackupCases, write_backup
from tests.labelling_testing import ADMIN_TOKEN, DATA_DIR

CONTAINER = "label-studio"


class TestBackup(LabellingBackupCases):
    """The backup tests labelling (machine) shares (tests/labelling_backup_cases.py)."""


@pytest.fixture
def state_dir() -> str:
    return DATA_DIR


@pytest.fixture
def deployed(ctx, make_state) -> Callable[..., testing.State]:
    """A unit whose Label Studio came up (pebble-ready)."""

    def deploy(**kwargs) -> testing.State:
        state = make_state(**kwargs)
        return ctx.run(ctx.on.pebble_ready(state.get_container(CONTAINER)), state)

    return deploy


@pytest.fixture
def job_will(workload_jobs: WorkloadJobs) -> Callable[..., None]:
    def set_outcome(command: str, *, stdout="{}\n", stderr="", code=0, later=False) -> None:
        key = f"backup {command}"
        if code:
            workload_jobs.fails(key, stderr or "failed", exit_code=code)
        else:
            workload_jobs.prints(key, stdout if stdout.endswith("\n") else stdout + "\n")
        if later:
            old = workload_jobs.outcomes[key]
            workload_jobs.outcomes[key] = Outcome(old.stdout, old.stderr, old.exit_code, LATER)

    return set_outcome


@pytest.fixture
def job_ends(ctx, workload_jobs: WorkloadJobs) -> Callable[..., tuple[testing.State, object]]:
    def end(state: testing.State):
        ended, notice = workload_jobs.end(state)
        return ended, ctx.on.pebble_custom_notice(ended.get_container(CONTAINER), notice)

    return end


@pytest.fixture
def job_command(workload_jobs: WorkloadJobs) -> Callable[[str], str]:
    def command(job_id: str) -> str:
        (run,) = [r for r in workload_jobs.runs if r.id == job_id]
        return shlex.join(run.command)

    return command


@pytest.fixture
def server_running() -> Callable[[testing.State], bool]:
    def running(state: testing.State) -> bool:
        statuses = state.get_container(CONTAINER).service_statuses
        return statuses.get(label_studio.SERVICE) == pebble.ServiceStatus.ACTIVE

    return running


def test_the_restore_job_adopts_the_admin_with_keys_kept_private(
    ctx, deployed, data_dir, workload_jobs: WorkloadJobs
):
    write_backup(data_dir)
    workload_jobs.outcomes["backup restore"] = Outcome(ends=LATER)
    ctx.run(ctx.on.action("restore", params={"backup-id": BACKUP_ID, "wait": False}), deployed())
    (run,) = workload_jobs.runs
    script = run.command[2]
    assert 'call_command("migrate"' in script and "Token.objects" in script
    assert ADMIN_TOKEN not in " ".join(run.command)
    env = (run.folder / "env").read_text()
    assert f"LABEL_STUDIO_USER_TOKEN={ADMIN_TOKEN}" in env
