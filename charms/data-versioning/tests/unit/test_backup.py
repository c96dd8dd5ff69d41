"""Backup and restore on a machine: the shared cases, jobs as transient systemd units."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from ops import testing
from scenario.state import _Event

import charm
import registry_units
from mlops_charms import registry_server
from tests.backup_cases import RegistryBackupCases
from tests.registry_relations import push_tags
from tests.systemd_units import systemd_words, unit_settings


class TestBackup(RegistryBackupCases):
    """The backup tests data-versioning-k8s shares (tests/backup_cases.py)."""


@pytest.fixture
def registry_with(deployed, data_dir) -> Callable[..., testing.State]:
    """A running registry with these versions, the last one the latest."""

    def make(*versions: str) -> testing.State:
        push_tags(data_dir, *versions)
        return deployed(peer_data={registry_server.LATEST_KEY: versions[-1]} if versions else {})

    return make


@pytest.fixture
def backups_listed(commands, data_dir) -> Callable[..., testing.State]:
    """The state in which ``mlops-workload backup list`` lists these backups."""

    def answer(state: testing.State, *ids: str) -> testing.State:
        commands.results["list-backups"] = {
            "destination": f"{data_dir}/backups",
            "backups": [{"id": i, "created": "2026-01-01T12:00:00Z", "size": 1} for i in ids],
        }
        return state

    return answer


@pytest.fixture
def job_ends(machine, data_dir) -> Callable[..., tuple[testing.State, object]]:
    """End the running job as its ExecStopPost does; the state and the ``job-ended`` event."""

    def end(state: testing.State, *, stdout: str = "", stderr: str = "", code: int = 0):
        running = sorted(machine.running_units())
        (unit,) = [u for u in running if u.startswith(f"{registry_units.UNIT_PREFIX}job-")]
        job_id = unit.removeprefix(f"{registry_units.UNIT_PREFIX}job-").removesuffix(".service")
        (machine.state / "units" / unit).unlink()
        records = charm.SystemdJobRunner(
            charm.JobPaths(
                jobs_dir=str(data_dir / "jobs"),
                unit_prefix=f"{registry_units.UNIT_PREFIX}job-",
            )
        )
        records.record_end(job_id, code, stdout=stdout, stderr=stderr)
        return state, _Event("job_ended")

    return end


@pytest.fixture
def servers_running(machine) -> Callable[[testing.State], bool]:
    return lambda _state: registry_units.GIT_UNIT in machine.running_units()


def test_restore_stops_every_server_unit(ctx, registry_with, backups_listed, machine):
    state = backups_listed(registry_with("v1"), "20260101T120000Z")
    ctx.run(
        ctx.on.action("restore", params={"backup-id": "20260101T120000Z", "wait": False}), state
    )
    servers = {registry_units.server_unit(n) for n in ("git-http", "s3", "s3-read-only")}
    assert not servers & machine.running_units()


def test_the_backup_job_runs_the_venvs_workload(ctx, registry_with, data_dir):
    ctx.run(ctx.on.action("create-backup", params={"wait": False}), registry_with("v1"))
    job_id = ctx.action_results["job"]
    unit = Path(registry_units.PATHS.job_units_dir, f"mlops-registry-job-{job_id}.service")
    exec_start = systemd_words(unit_settings(unit.read_text())["ExecStart"][0])
    assert exec_start[:3] == [registry_units.PATHS.binaries.mlops_workload, "backup", "create"]
    record = json.loads((data_dir / "jobs" / job_id / "job.json").read_text())
    assert record["params"] == {"destination": f"{data_dir}/backups"}
