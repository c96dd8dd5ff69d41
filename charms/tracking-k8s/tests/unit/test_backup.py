"""Backup and restore on Kubernetes: the shared cases, jobs as Pebble services."""

from __future__ import annotations

import dataclasses
import datetime
import json
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest
from ops import pebble, testing

import charm
import mlflow_server
from mlops_charms import jobs, tracking_backup
from tests.backup_cases import BACKUP_ID
from tests.registry_action_cases import refused
from tests.tracking_backup_cases import TrackingBackupCases
from tests.tracking_testing import DATA_DIR, S3_SECRET_KEY, s3_relation, s3_secret

JOB_SERVICE = f"{tracking_backup.JOB_SLOT}-job"


class TestBackup(TrackingBackupCases):
    """The backup tests tracking (machine) could share (tests/tracking_backup_cases.py)."""


@pytest.fixture
def state_dir() -> str:
    return DATA_DIR


@pytest.fixture
def deployed(ctx, make_state) -> Callable[..., testing.State]:
    """A unit whose MLflow came up (pebble-ready)."""

    def deploy(**kwargs) -> testing.State:
        state = make_state(**kwargs)
        return ctx.run(ctx.on.pebble_ready(state.get_container(charm.CONTAINER)), state)

    return deploy


@pytest.fixture
def job_command() -> Callable[[testing.State], str]:
    """The running job's command, from the container's plan (ops.testing runs nothing)."""

    def command(state: testing.State) -> str:
        return state.get_container(charm.CONTAINER).plan.services[JOB_SERVICE].command

    return command


@pytest.fixture
def job_ends(ctx, data_dir: Path) -> Callable[..., tuple[testing.State, object]]:
    """End the running job as its wrapper does: output, the mark, ``exit``, the notice."""

    def end(state: testing.State, *, stdout: str = "", stderr: str = "", code: int = 0):
        container = state.get_container(charm.CONTAINER)
        assert container.service_statuses.get(JOB_SERVICE) == pebble.ServiceStatus.ACTIVE
        # /bin/sh -c SCRIPT job FOLDER COMMAND...: what JobRunner._layer builds.
        folder = shlex.split(container.plan.services[JOB_SERVICE].command)[4]
        job_id = folder.rsplit("/", 1)[-1]
        host = data_dir / "jobs" / job_id
        (host / "stdout").write_text(stdout)
        (host / "stderr").write_text(stderr)
        (data_dir / "jobs" / jobs.UNREPORTED / job_id).write_text("")
        (host / "exit").write_text(f"{code} 2026-01-01T12:05:00Z\n")
        statuses = {**container.service_statuses, JOB_SERVICE: pebble.ServiceStatus.INACTIVE}
        notice = testing.Notice(
            jobs.NOTICE_KEY,
            last_data={"job": job_id},
            last_occurred=datetime.datetime.now(datetime.UTC),
        )
        container = dataclasses.replace(
            container, service_statuses=statuses, notices=[*container.notices, notice]
        )
        ended = dataclasses.replace(state, containers={container})
        return ended, ctx.on.pebble_custom_notice(container, notice)

    return end


@pytest.fixture
def server_running() -> Callable[[testing.State], bool]:
    def running(state: testing.State) -> bool:
        statuses = state.get_container(charm.CONTAINER).service_statuses
        return statuses.get(mlflow_server.SERVICE) == pebble.ServiceStatus.ACTIVE

    return running


def test_the_jobs_run_the_rocks_workload_cli_on_the_storage(ctx, deployed, job_command):
    out = ctx.run(ctx.on.action("create-backup", params={"wait": False}), deployed())
    command = job_command(out)
    assert f"{charm.MLOPS_WORKLOAD} backup create --destination {DATA_DIR}/backups" in command
    assert f"--staging {DATA_DIR}/backups/.staging" in command
    service = out.get_container(charm.CONTAINER).plan.services[JOB_SERVICE]
    assert service.working_dir == DATA_DIR


def test_list_backups_in_the_bucket_runs_the_cli_with_the_keys_in_its_environment(ctx, deployed):
    secret = s3_secret()
    state = deployed(relations=[s3_relation(secret)], secrets=[secret])
    listed = {
        "destination": f"s3://mlflow-artifacts/backups/{ctx.app_name}",
        "backups": [{"id": BACKUP_ID, "created": "2026-01-01T12:00:00Z", "size": 1}],
    }
    container = state.get_container(charm.CONTAINER)
    answer = testing.Exec(
        [charm.MLOPS_WORKLOAD, "backup", "list"], stdout=json.dumps(listed) + "\n"
    )
    container = dataclasses.replace(container, execs={answer})
    state = dataclasses.replace(state, containers={container})
    ctx.run(ctx.on.action("list-backups"), state)
    assert ctx.action_results["count"] == 1
    (run,) = ctx.exec_history[charm.CONTAINER]
    assert run.command[:4] == [charm.MLOPS_WORKLOAD, "backup", "list", "--destination"]
    assert S3_SECRET_KEY not in " ".join(run.command)
    assert run.environment["AWS_SECRET_ACCESS_KEY"] == S3_SECRET_KEY


def test_a_failing_bucket_listing_fails_restore_and_stops_nothing(ctx, deployed, data_dir):
    secret = s3_secret()
    state = deployed(relations=[s3_relation(secret)], secrets=[secret])
    container = state.get_container(charm.CONTAINER)
    answer = testing.Exec(
        [charm.MLOPS_WORKLOAD, "backup", "list"],
        return_code=1,
        stderr="error: cannot list s3://mlflow-artifacts: AccessDenied\n",
    )
    state = dataclasses.replace(state, containers={dataclasses.replace(container, execs={answer})})
    message = refused(ctx, state, "restore", **{"backup-id": BACKUP_ID})
    assert message == "list-backups failed: cannot list s3://mlflow-artifacts: AccessDenied"
    assert not (data_dir / "jobs").exists()
