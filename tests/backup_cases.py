"""Backup and restore cases both data-versioning charms share: one behaviour, one test, each charm.

The actions (``mlops_charms.registry_server``, ``mlops_charms.backup``) behave the same on
Kubernetes and on a machine; each charm's ``test_backup.py`` subclasses ``RegistryBackupCases``
and gives, besides the action fixtures (``ctx``, ``make_state``, ``registry_with``, ``data_dir``,
``state_dir``):

- ``backups_listed(state, *ids)``: the state in which ``mlops-workload backup list`` lists these
  backups (the real command reads their manifests);
- ``job_ends(state, stdout=, stderr=, code=)``: the running job ends as its wrapper ends it;
  the state after and the event that tells the charm (a Pebble notice, or ``job-ended``);
- ``servers_running(state)``: whether the registry's git server runs.

The jobs run nothing here: tests/workload/registry/test_backup.py runs the real ones.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from ops import testing

from mlops_charms import backup, registry_server
from tests.registry_action_cases import refused, started_jobs
from tests.registry_relations import S3_KEYS, integrator_1

BACKUP_ID = "20260101T120000Z"
CREATED = {
    "id": BACKUP_ID,
    "destination": "{root}/backups",
    "size": 2048,
    "files": 12,
    "bytes": 4096,
    "members": ["git/registry.git", "s3/dvc"],
    "excluded": [],
}
BAD_RESTORE = {
    "missing": ({}, "backup-id"),
    "not an id": ({"backup-id": "latest"}, "backup-id must be an id as list-backups shows it"),
    "a path": ({"backup-id": "../../etc"}, "backup-id must be an id as list-backups shows it"),
}


def write_backup(
    data_dir: Path,
    backup_id: str = BACKUP_ID,
    *,
    service: str,
    members: dict[str, int],
    excluded: dict[str, str],
) -> None:
    """A backup on the storage, as ``mlops-workload backup create`` leaves it.

    ``members``: path to its number of files; ``excluded``: what to why.
    """
    folder = data_dir / "backups"
    folder.mkdir(exist_ok=True)
    (folder / f"{backup_id}.tar.gz").write_bytes(b"archive")
    manifest = {
        "format": 1,
        "id": backup_id,
        "service": service,
        "created": "2026-01-01T12:00:00Z",
        "archive": {"name": f"{backup_id}.tar.gz", "size": 7, "sha256": "0" * 64},
        "members": [{"path": path, "files": files} for path, files in members.items()],
        "files": sum(members.values()),
        "bytes": 100,
        "excluded": [{"what": what, "why": why} for what, why in excluded.items()],
    }
    (folder / f"{backup_id}.json").write_text(json.dumps(manifest))


def job_record(data_dir: Path, job_id: str) -> dict:
    return json.loads((data_dir / "jobs" / job_id / "job.json").read_text())


def job_command(data_dir: Path, job_id: str) -> str:
    """What the job runs, as its record and environment show it (one text, for searching)."""
    return (data_dir / "jobs" / job_id / "env").read_text()


def jobs_recorded(data_dir: Path) -> list[dict]:
    """Every job the charm started (none when it never made its jobs folder)."""
    return [json.loads(p.read_text()) for p in sorted((data_dir / "jobs").glob("*/job.json"))]


class StorageBackupCases:
    """The cases tracking's and labelling's backups share: backups on the unit's storage.

    A subclass names its service's backup: ``write_backup(data_dir, backup_id=BACKUP_ID)``
    leaves one on the storage, and ``LISTED`` is how list-backups shows its contents. The
    fixtures are the charm's: ``ctx``, ``deployed``, ``data_dir``, ``state_dir``,
    ``server_running``.
    """

    LISTED: str
    write_backup: Callable[..., None]

    def test_list_backups_reads_the_manifests_on_the_storage(
        self, ctx, deployed, data_dir, state_dir
    ):
        self.write_backup(data_dir)
        self.write_backup(data_dir, "20260102T120000Z")
        ctx.run(ctx.on.action("list-backups"), deployed())
        assert ctx.action_results["count"] == 2
        assert ctx.action_results["destination"] == f"{state_dir}/backups"
        listed = json.loads(ctx.action_results["backups"])
        assert [b["id"] for b in listed] == ["20260102T120000Z", BACKUP_ID]
        assert listed[0]["contents"] == self.LISTED

    def test_restore_of_an_unknown_backup_fails_and_stops_nothing(
        self, ctx, deployed, data_dir, state_dir, server_running
    ):
        self.write_backup(data_dir)
        state = deployed()
        message = refused(ctx, state, "restore", **{"backup-id": "20250101T000000Z"})
        assert message == f"no backup 20250101T000000Z at {state_dir}/backups (list-backups)"
        assert jobs_recorded(data_dir) == []
        assert server_running(state)


class RegistryBackupCases:
    """The substrate-neutral backup tests; a ``Test...`` subclass runs them on a charm."""

    @pytest.mark.parametrize("action", ["create-backup", "list-backups", "restore"])
    def test_backup_actions_refuse_on_a_non_leader(self, ctx, make_state, data_dir, action):
        params = {"backup-id": BACKUP_ID} if action == "restore" else {}
        message = refused(ctx, make_state(leader=False), action, **params)
        assert message == "run the action on the leader unit"
        assert started_jobs(data_dir) == []

    @pytest.mark.parametrize(("params", "reason"), BAD_RESTORE.values(), ids=BAD_RESTORE.keys())
    def test_restore_refuses_bad_params_and_leaves_the_servers_running(
        self, ctx, registry_with, data_dir, servers_running, params, reason
    ):
        state = registry_with("v1")
        with pytest.raises(testing.ActionFailed) as failure:
            ctx.run(ctx.on.action("restore", params=params), state)
        assert reason in failure.value.message
        assert started_jobs(data_dir) == []
        assert servers_running(state)

    def test_create_backup_starts_a_job_with_the_repository_and_the_objects(
        self, ctx, registry_with, data_dir, state_dir
    ):
        ctx.run(ctx.on.action("create-backup", params={"wait": False}), registry_with("v1"))
        job_id = ctx.action_results["job"]
        assert ctx.action_results["state"] == "running"
        record = job_record(data_dir, job_id)
        assert record["kind"] == backup.CREATE_KIND
        assert record["params"] == {"destination": f"{state_dir}/backups"}
        assert (data_dir / "backups").is_dir()

    def test_the_backup_holds_no_keys_in_what_list_jobs_shows(self, ctx, registry_with, data_dir):
        ctx.run(ctx.on.action("create-backup", params={"wait": False}), registry_with("v1"))
        shown = (data_dir / "jobs" / ctx.action_results["job"] / "job.json").read_text()
        assert "SECRET" not in shown.upper()

    def test_with_the_objects_in_a_bucket_the_backup_goes_there_without_them(
        self, ctx, deployed, data_dir, state_dir
    ):
        _use_the_bucket(data_dir, state_dir)
        state = deployed(relations=[integrator_1()])
        ctx.run(ctx.on.action("create-backup", params={"wait": False}), state)
        job_id = ctx.action_results["job"]
        record = job_record(data_dir, job_id)
        assert record["params"]["destination"].startswith("s3://datasets/backups/data-versioning")
        env = (data_dir / "jobs" / job_id / "env").read_text()
        assert S3_KEYS["secret-key"] in env  # the job's private environment (0600) only
        assert S3_KEYS["secret-key"] not in json.dumps(record)

    def test_a_running_job_keeps_create_backup_out(self, ctx, registry_with, data_dir):
        state = registry_with("v1")
        out = ctx.run(ctx.on.action("create-backup", params={"wait": False}), state)
        with pytest.raises(testing.ActionFailed, match=r"\(create-backup\) is running"):
            ctx.run(ctx.on.action("create-backup", params={"wait": False}), out)
        assert len(started_jobs(data_dir)) == 1

    def test_a_running_job_keeps_restore_out_and_the_servers_up(
        self, ctx, registry_with, backups_listed, data_dir, servers_running
    ):
        state = backups_listed(registry_with("v1"), BACKUP_ID)
        out = ctx.run(ctx.on.action("create-backup", params={"wait": False}), state)
        params = {"backup-id": BACKUP_ID, "wait": False}
        with pytest.raises(testing.ActionFailed, match=r"\(create-backup\) is running"):
            ctx.run(ctx.on.action("restore", params=params), out)
        assert len(started_jobs(data_dir)) == 1
        assert servers_running(out)

    def test_restore_of_an_unknown_backup_fails_and_stops_nothing(
        self, ctx, registry_with, backups_listed, data_dir, state_dir, servers_running
    ):
        state = backups_listed(registry_with("v1"), BACKUP_ID)
        message = refused(ctx, state, "restore", **{"backup-id": "20250101T000000Z"})
        assert message == f"no backup 20250101T000000Z at {state_dir}/backups (list-backups)"
        assert started_jobs(data_dir) == []
        assert servers_running(state)

    def test_list_backups_reads_the_manifests(self, ctx, registry_with, backups_listed, state_dir):
        state = backups_listed(registry_with("v1"), BACKUP_ID, "20260102T120000Z")
        ctx.run(ctx.on.action("list-backups"), state)
        results = ctx.action_results
        assert results["count"] == 2
        assert results["destination"] == f"{state_dir}/backups"
        listed = json.loads(results["backups"])
        assert [b["id"] for b in listed] == [BACKUP_ID, "20260102T120000Z"]

    def test_restore_stops_the_servers_and_says_so_until_it_ends(
        self, ctx, registry_with, backups_listed, data_dir, servers_running
    ):
        state = backups_listed(registry_with("v1"), BACKUP_ID)
        out = ctx.run(
            ctx.on.action("restore", params={"backup-id": BACKUP_ID, "wait": False}), state
        )
        record = job_record(data_dir, ctx.action_results["job"])
        assert record["kind"] == backup.RESTORE_KIND
        assert record["params"]["backup"] == BACKUP_ID
        assert not servers_running(out)
        assert out.unit_status == testing.MaintenanceStatus(f"restoring {BACKUP_ID}")

    def test_no_hook_starts_the_servers_while_a_restore_runs(
        self, ctx, registry_with, backups_listed, servers_running
    ):
        state = backups_listed(registry_with("v1"), BACKUP_ID)
        out = ctx.run(
            ctx.on.action("restore", params={"backup-id": BACKUP_ID, "wait": False}), state
        )
        for event in (ctx.on.update_status(), ctx.on.config_changed()):
            out = ctx.run(event, out)
            assert not servers_running(out)
            assert out.unit_status == testing.MaintenanceStatus(f"restoring {BACKUP_ID}")

    def test_the_end_of_a_restore_starts_the_servers_again(
        self, ctx, registry_with, backups_listed, job_ends, servers_running
    ):
        state = backups_listed(registry_with("v1"), BACKUP_ID)
        out = ctx.run(
            ctx.on.action("restore", params={"backup-id": BACKUP_ID, "wait": False}), state
        )
        restored = {"id": BACKUP_ID, "restored": ["git/registry.git"], "files": 3}
        ended, event = job_ends(out, stdout=json.dumps(restored) + "\n")
        after = ctx.run(event, ended)
        assert servers_running(after)
        assert after.unit_status.name == "active"

    def test_a_failed_restore_starts_the_old_state_again_and_is_listed(
        self, ctx, registry_with, backups_listed, job_ends, servers_running
    ):
        state = backups_listed(registry_with("v1"), BACKUP_ID)
        out = ctx.run(
            ctx.on.action("restore", params={"backup-id": BACKUP_ID, "wait": False}), state
        )
        reason = f"backup {BACKUP_ID} is corrupt: the archive's sha256 differs"
        ended, event = job_ends(out, stderr=f"error: {reason}\n", code=1)
        after = ctx.run(event, ended)
        assert servers_running(after)
        ctx.run(ctx.on.action("list-jobs"), after)
        (listed,) = json.loads(ctx.action_results["jobs"])
        assert (listed["kind"], listed["state"], listed["error"]) == ("restore", "failed", reason)


def _use_the_bucket(data_dir: Path, state_dir: str) -> None:
    """The objects were moved to integrator 1's bucket already (``conf/backend.json``)."""
    relation = integrator_1()
    data = relation.remote_app_data
    bucket = {
        "bucket": data["bucket"],
        "path": "",
        "endpoint": data["endpoint"],
        "region": data["region"],
        "access_key": data["access-key"],
        "secret_key": data["secret-key"],
        "ca_chain": None,
        "path_style": None,
    }
    conf = data_dir / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "backend.json").write_text(json.dumps(bucket, sort_keys=True))
    del state_dir


# The results of create-backup when its job ended in time (shared by the charms' wait tests).
def created(root: str) -> dict:
    return {**CREATED, "destination": CREATED["destination"].replace("{root}", root)}


__all__ = ["BACKUP_ID", "RegistryBackupCases", "created", "registry_server"]
