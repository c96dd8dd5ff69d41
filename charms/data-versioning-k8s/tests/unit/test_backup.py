"""Backup and restore on Kubernetes: the shared cases, jobs as Pebble services, waiting."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable

import pytest
from ops import pebble, testing
from registry_testing import WORKLOAD, JobOutcome, succeeded

import charm
from mlops_charms import backup, registry, registry_server
from tests.backup_cases import BACKUP_ID, RegistryBackupCases, created
from tests.registry_relations import push_tags


class TestBackup(RegistryBackupCases):
    """The backup tests data-versioning (machine) shares (tests/backup_cases.py)."""


@pytest.fixture
def registry_with(deployed, data_dir) -> Callable[..., testing.State]:
    """A running registry with these versions, the last one the latest."""

    def make(*versions: str) -> testing.State:
        push_tags(data_dir, *versions)
        return deployed(peer_data={registry_server.LATEST_KEY: versions[-1]} if versions else {})

    return make


@pytest.fixture
def backups_listed() -> Callable[..., testing.State]:
    """The state whose ``mlops-workload backup list`` lists these backups."""

    def answer(state: testing.State, *ids: str) -> testing.State:
        container = state.get_container(charm.CONTAINER)
        listed = {
            "destination": "/var/lib/registry/backups",
            "backups": [{"id": i, "created": "2026-01-01T12:00:00Z", "size": 1} for i in ids],
        }
        command = testing.Exec([WORKLOAD, "backup", "list"], stdout=json.dumps(listed) + "\n")
        container = dataclasses.replace(container, execs={*container.execs, command})
        return dataclasses.replace(state, containers={container})

    return answer


@pytest.fixture
def job_ends(ctx, workload) -> Callable[..., tuple[testing.State, object]]:
    """End the running job as its wrapper does; the state after and its Pebble notice."""

    def end(state: testing.State, *, stdout: str = "", stderr: str = "", code: int = 0):
        ended, notice = workload.end(state, JobOutcome(code=code, stdout=stdout, stderr=stderr))
        container = ended.get_container(charm.CONTAINER)
        return ended, ctx.on.pebble_custom_notice(container, notice)

    return end


@pytest.fixture
def servers_running() -> Callable[[testing.State], bool]:
    def running(state: testing.State) -> bool:
        statuses = state.get_container(charm.CONTAINER).service_statuses
        return statuses.get(registry.GIT_SERVICE) == pebble.ServiceStatus.ACTIVE

    return running


def test_create_backup_waits_for_its_job_and_returns_the_backup(
    ctx, registry_with, workload, state_dir
):
    workload.outcomes[backup.CREATE_KIND] = succeeded(created(state_dir))
    ctx.run(ctx.on.action("create-backup"), registry_with("v1"))
    results = ctx.action_results
    assert (results["backup-id"], results["size"], results["files"]) == (BACKUP_ID, 2048, 12)
    assert results["destination"] == f"{state_dir}/backups"
    assert results["members"] == "git/registry.git, s3/dvc"


def test_the_backup_jobs_command_names_the_members_and_the_staging(ctx, registry_with, state_dir):
    out = ctx.run(ctx.on.action("create-backup", params={"wait": False}), registry_with("v1"))
    command = out.get_container(charm.CONTAINER).plan.services["registry-job"].command
    assert f"{WORKLOAD} backup create --destination {state_dir}/backups" in command
    assert "--member git/registry.git --member s3/dvc" in command
    assert f"--staging {state_dir}/backups/.staging" in command


def test_a_restore_that_ends_in_time_returns_and_restarts_the_servers(
    ctx, registry_with, backups_listed, workload
):
    restored = {"id": BACKUP_ID, "restored": ["git/registry.git", "s3/dvc"], "files": 12}
    workload.outcomes[backup.RESTORE_KIND] = succeeded(restored)
    state = backups_listed(registry_with("v1"), BACKUP_ID)
    out = ctx.run(ctx.on.action("restore", params={"backup-id": BACKUP_ID}), state)
    assert ctx.action_results["restored"] == "git/registry.git, s3/dvc"
    statuses = out.get_container(charm.CONTAINER).service_statuses
    assert statuses[registry.GIT_SERVICE] == pebble.ServiceStatus.ACTIVE


def test_a_restore_that_fails_in_time_fails_the_action_in_one_line(
    ctx, registry_with, backups_listed, workload
):
    reason = f"backup {BACKUP_ID} is corrupt: the archive's sha256 differs"
    workload.outcomes[backup.RESTORE_KIND] = JobOutcome(code=1, stderr=f"error: {reason}\n")
    state = backups_listed(registry_with("v1"), BACKUP_ID)
    with pytest.raises(testing.ActionFailed) as failure:
        ctx.run(ctx.on.action("restore", params={"backup-id": BACKUP_ID}), state)
    assert failure.value.message == f"restore failed: {reason}"
