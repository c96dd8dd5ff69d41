"""Backup and restore cases both tracking charms share: one behaviour, one test, each charm.

The actions (``mlops_charms.tracking_backup``, ``mlops_charms.mlflow_backup``,
``mlops_charms.backup``) behave the same on Kubernetes and on a machine; each charm's
``test_backup.py`` subclasses ``TrackingBackupCases`` and gives ``ctx``, ``make_state``,
``data_dir`` (the storage on the test's disk), ``state_dir`` (where the charm sees it) and:

- ``deployed(**state)``: a unit whose MLflow came up;
- ``job_command(state)``: the running job's command line, as one string;
- ``job_ends(state, stdout=, stderr=, code=)``: the running job ends as its wrapper ends it;
  the state after and the event that tells the charm;
- ``server_running(state)``: whether MLflow's service runs.

The jobs run nothing here: tests/workload/tracking/test_backup.py runs the real ones against a
real MLflow.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ops import testing

from mlops_charms import backup
from tests import backup_cases
from tests.backup_cases import (
    BACKUP_ID,
    BAD_RESTORE,
    StorageBackupCases,
    job_record,
    jobs_recorded,
)
from tests.registry_action_cases import refused
from tests.tracking_testing import (
    ADMIN_PASSWORD,
    DB_PASSWORD,
    S3_SECRET_KEY,
    database_relation,
    database_secret,
    s3_relation,
    s3_secret,
)

RESTORED = {"id": BACKUP_ID, "restored": ["mlflow.db", "artifacts"], "files": 3}


def write_backup(data_dir: Path, backup_id: str = BACKUP_ID) -> None:
    """A backup on the storage, as ``mlops-workload backup create`` leaves it."""
    backup_cases.write_backup(
        data_dir,
        backup_id,
        service="tracking",
        members={"mlflow.db": 1, "artifacts": 2},
        excluded={"basic_auth.db": "the deployment's own users"},
    )


def _no_secret_in(text: str) -> None:
    for secret in (ADMIN_PASSWORD, DB_PASSWORD, S3_SECRET_KEY):
        assert secret not in text


class TrackingBackupCases(StorageBackupCases):
    """The substrate-neutral backup tests; a ``Test...`` subclass runs them on a charm."""

    LISTED = "mlflow.db (1 files), artifacts (2 files)"
    write_backup = staticmethod(write_backup)

    @pytest.mark.parametrize("action", ["create-backup", "list-backups", "restore"])
    def test_backup_actions_refuse_on_a_non_leader(self, ctx, make_state, data_dir, action):
        params = {"backup-id": BACKUP_ID} if action == "restore" else {}
        assert refused(ctx, make_state(leader=False), action, **params) == (
            "run the action on the leader unit"
        )
        assert jobs_recorded(data_dir) == []

    @pytest.mark.parametrize(("params", "reason"), BAD_RESTORE.values(), ids=BAD_RESTORE.keys())
    def test_restore_refuses_bad_params_and_keeps_serving(
        self, ctx, deployed, data_dir, server_running, params, reason
    ):
        state = deployed()
        with pytest.raises(testing.ActionFailed) as failure:
            ctx.run(ctx.on.action("restore", params=params), state)
        assert reason in failure.value.message
        assert jobs_recorded(data_dir) == []
        assert server_running(state)

    def test_create_backup_holds_the_store_and_the_artifacts_not_the_users(
        self, ctx, deployed, data_dir, state_dir, job_command
    ):
        out = ctx.run(ctx.on.action("create-backup", params={"wait": False}), deployed())
        assert ctx.action_results["state"] == "running"
        (record,) = jobs_recorded(data_dir)
        assert (record["kind"], record["params"]) == (
            backup.CREATE_KIND,
            {"destination": f"{state_dir}/backups"},
        )
        command = job_command(out)
        assert "--member mlflow.db:sqlite,optional --member artifacts:optional" in command
        assert "--excluded 'basic_auth.db: the deployment's own users" in command.replace(
            "'\"'\"'", "'"
        )
        _no_secret_in(command)
        _no_secret_in(json.dumps(record))

    def test_with_postgresql_the_store_is_left_to_its_charm(
        self, ctx, deployed, data_dir, job_command
    ):
        secret = database_secret()
        state = deployed(relations=[database_relation(secret)], secrets=[secret])
        out = ctx.run(ctx.on.action("create-backup", params={"wait": False}), state)
        command = job_command(out)
        assert "mlflow.db" not in command
        assert "--member artifacts:optional" in command
        assert "the tracking store in PostgreSQL: back it up with the PostgreSQL charm" in command
        _no_secret_in(command)

    def test_with_s3_artifacts_the_backup_goes_to_the_bucket_without_them(
        self, ctx, deployed, data_dir, job_command
    ):
        secret = s3_secret()
        state = deployed(relations=[s3_relation(secret)], secrets=[secret])
        out = ctx.run(ctx.on.action("create-backup", params={"wait": False}), state)
        (record,) = jobs_recorded(data_dir)
        destination = record["params"]["destination"]
        assert destination == f"s3://mlflow-artifacts/backups/{ctx.app_name}"
        command = job_command(out)
        assert "--member mlflow.db:sqlite,optional" in command
        assert "artifacts:optional" not in command
        assert "the artifacts in s3://mlflow-artifacts/team-a" in command
        env = (data_dir / "jobs" / record["id"] / "env").read_text()
        assert S3_SECRET_KEY in env  # the job's private environment (0600) only
        _no_secret_in(command)
        _no_secret_in(json.dumps(record))

    def test_with_both_stores_elsewhere_there_is_nothing_to_back_up(self, ctx, deployed, data_dir):
        db, s3 = database_secret(), s3_secret()
        state = deployed(relations=[database_relation(db), s3_relation(s3)], secrets=[db, s3])
        message = refused(ctx, state, "create-backup", wait=False)
        assert message.startswith("nothing to back up on this unit")
        assert jobs_recorded(data_dir) == []

    def test_restore_stops_mlflow_and_no_hook_starts_it_until_it_ends(
        self, ctx, deployed, data_dir, state_dir, job_command, job_ends, server_running
    ):
        write_backup(data_dir)
        params = {"backup-id": BACKUP_ID, "wait": False}
        out = ctx.run(ctx.on.action("restore", params=params), deployed())
        (record,) = jobs_recorded(data_dir)
        assert (record["kind"], record["params"]["backup"]) == (backup.RESTORE_KIND, BACKUP_ID)
        command = job_command(out)
        assert f"backup restore --destination {state_dir}/backups" in command
        assert f"--id {BACKUP_ID}" in command
        assert not server_running(out)
        assert out.unit_status == testing.MaintenanceStatus(f"restoring {BACKUP_ID}")
        for event in (ctx.on.update_status(), ctx.on.config_changed()):
            out = ctx.run(event, out)
            assert not server_running(out)
            assert out.unit_status == testing.MaintenanceStatus(f"restoring {BACKUP_ID}")
        ended, event = job_ends(out, stdout=json.dumps(RESTORED) + "\n")
        after = ctx.run(event, ended)
        assert server_running(after)
        assert after.unit_status.name == "active"
        assert not list((data_dir / "jobs" / "unreported").iterdir())  # acted on, once

    def test_a_failed_restore_serves_the_old_state_again_and_is_listed(
        self, ctx, deployed, data_dir, job_ends, server_running
    ):
        write_backup(data_dir)
        params = {"backup-id": BACKUP_ID, "wait": False}
        out = ctx.run(ctx.on.action("restore", params=params), deployed())
        reason = f"backup {BACKUP_ID} is corrupt: the archive's sha256 differs"
        ended, event = job_ends(out, stderr=f"error: {reason}\n", code=1)
        after = ctx.run(event, ended)
        assert server_running(after)
        ctx.run(ctx.on.action("list-jobs"), after)
        (listed,) = json.loads(ctx.action_results["jobs"])
        assert (listed["kind"], listed["state"], listed["error"]) == ("restore", "failed", reason)

    def test_a_running_backup_keeps_the_restore_out(self, ctx, deployed, data_dir, server_running):
        write_backup(data_dir)
        out = ctx.run(ctx.on.action("create-backup", params={"wait": False}), deployed())
        message = refused(ctx, out, "restore", **{"backup-id": BACKUP_ID, "wait": False})
        assert "(create-backup) is running" in message
        assert server_running(out)
        assert len(jobs_recorded(data_dir)) == 1
        assert job_record(data_dir, jobs_recorded(data_dir)[0]["id"])["kind"] == "create-backup"
