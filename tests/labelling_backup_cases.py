"""Backup and restore cases both labelling charms share: one behaviour, one test, each charm.

The actions (``mlops_charms.labelling_server``, ``mlops_charms.backup``) behave the same on
Kubernetes and on a machine; each charm's ``test_backup.py`` subclasses ``LabellingBackupCases``
and gives ``ctx``, ``make_state``, ``data_dir``, ``state_dir`` (where the charm sees the storage)
and:

- ``deployed(**state)``: a unit whose Label Studio came up;
- ``job_will(command, *, stdout=, stderr=, code=, later=)``: how the next job of ``backup
  <command>`` ends (at once, or ``later``, when the test calls ``job_ends``);
- ``job_ends(state)``: the running job ends; the state and the event that tells the charm;
- ``server_running(state)``: whether Label Studio's service runs;
- ``job_command(job_id)``: the job's command line, as one string.

The jobs run a fake ``mlops-workload`` here: tests/workload/labelling/test_backup.py runs the
real one against a real Label Studio.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ops import testing

from tests import backup_cases
from tests.backup_cases import BACKUP_ID, StorageBackupCases, jobs_recorded
from tests.labelling_testing import database_relation, database_secret
from tests.registry_action_cases import refused


def write_backup(data_dir: Path, backup_id: str = BACKUP_ID) -> None:
    """A backup on the storage, as ``mlops-workload backup create`` leaves it."""
    backup_cases.write_backup(
        data_dir,
        backup_id,
        service="labelling",
        members={"label_studio.sqlite3": 1, "media": 4},
        excluded={"secrets": "rendered by the charm"},
    )


class LabellingBackupCases(StorageBackupCases):
    """The substrate-neutral backup tests; a ``Test...`` subclass runs them on a charm."""

    LISTED = "label_studio.sqlite3 (1 files), media (4 files)"
    write_backup = staticmethod(write_backup)

    @pytest.mark.parametrize("action", ["create-backup", "list-backups", "restore"])
    def test_backup_actions_refuse_on_a_non_leader(self, ctx, make_state, data_dir, action):
        params = {"backup-id": BACKUP_ID} if action == "restore" else {}
        assert refused(ctx, make_state(leader=False), action, **params) == (
            "run the action on the leader unit"
        )
        assert jobs_recorded(data_dir) == []

    @pytest.mark.parametrize("backup_id", ["latest", "../x", "2026-01-01"])
    def test_restore_refuses_a_bad_id_and_keeps_serving(
        self, ctx, deployed, data_dir, server_running, backup_id
    ):
        state = deployed()
        message = refused(ctx, state, "restore", **{"backup-id": backup_id})
        assert "backup-id must be an id as list-backups shows it" in message
        assert jobs_recorded(data_dir) == []
        assert server_running(state)

    def test_create_backup_holds_the_database_and_the_media(
        self, ctx, deployed, data_dir, state_dir, job_will, job_command
    ):
        job_will("create", later=True)
        ctx.run(ctx.on.action("create-backup", params={"wait": False}), deployed())
        (record,) = jobs_recorded(data_dir)
        assert (record["kind"], record["params"]) == (
            "create-backup",
            {"destination": f"{state_dir}/backups"},
        )
        command = job_command(record["id"])
        assert "--member label_studio.sqlite3:sqlite,optional --member media:optional" in command

    def test_with_postgresql_the_database_is_left_to_its_charm(
        self, ctx, deployed, data_dir, job_will, job_command
    ):
        secret = database_secret()
        job_will("create", later=True)
        state = deployed(relations=[database_relation(secret)], secrets=[secret])
        ctx.run(ctx.on.action("create-backup", params={"wait": False}), state)
        (record,) = jobs_recorded(data_dir)
        command = job_command(record["id"])
        assert "label_studio.sqlite3" not in command
        assert "the PostgreSQL database" in command

    def test_restore_stops_label_studio_and_no_hook_starts_it_until_it_ends(
        self, ctx, deployed, data_dir, job_will, job_ends, server_running
    ):
        write_backup(data_dir)
        job_will("restore", stdout=json.dumps({"id": BACKUP_ID, "restored": []}), later=True)
        params = {"backup-id": BACKUP_ID, "wait": False}
        out = ctx.run(ctx.on.action("restore", params=params), deployed())
        assert not server_running(out)
        assert out.unit_status == testing.MaintenanceStatus(f"restoring {BACKUP_ID}")
        for event in (ctx.on.update_status(), ctx.on.config_changed()):
            out = ctx.run(event, out)
            assert not server_running(out)
            assert out.unit_status == testing.MaintenanceStatus(f"restoring {BACKUP_ID}")
        ended, event = job_ends(out)
        after = ctx.run(event, ended)
        assert server_running(after)
        assert after.unit_status.name == "active"

    def test_a_running_job_keeps_the_restore_out(
        self, ctx, deployed, data_dir, job_will, server_running
    ):
        write_backup(data_dir)
        job_will("create", later=True)
        out = ctx.run(ctx.on.action("create-backup", params={"wait": False}), deployed())
        message = refused(ctx, out, "restore", **{"backup-id": BACKUP_ID, "wait": False})
        assert "(create-backup) is running" in message
        assert server_running(out)
        assert len(jobs_recorded(data_dir)) == 1
