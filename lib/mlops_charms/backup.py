"""Backups and restores as jobs, the same for every service charm (``mlops-workload backup``).

A service's core says what its state is (``BackupPlan``: the members of its storage, what is
left out and why, where backups go); this module turns that into the jobs and the short
command the charms run, validates the actions' parameters and shapes their results. The
archive format, its checks and the swap are the workload's (workload/src/mlops_workload/
backup.py).

Where backups go: the service's S3 bucket when it has one (``s3_destination``, under
``backups/<app>/``), else ``backups/`` on the unit's storage. The bucket's keys travel in the
job's private environment, never in its parameters or a command line.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import ops

from mlops_charms import client_ca, jobs
from mlops_charms.jobs import Job, JobSpec, SlotRunner

CREATE_KIND = "create-backup"
RESTORE_KIND = "restore"
BACKUP_ID = re.compile(r"^[0-9]{8}T[0-9]{6}Z(-[0-9]{1,3})?$")
STAGING = ".staging"  # in the backups folder: on the state's own disk, for the swap


@dataclass(frozen=True)
class BackupPlan:
    """What a service backs up and where: paths relative to ``root``, the destination."""

    service: str
    root: str
    members: tuple[str, ...]  # ``PATH`` or ``PATH:sqlite``
    backups_dir: str  # on the unit's storage: the destination without a bucket, the staging
    destination: str  # a folder, or s3://bucket/prefix
    environment: Mapping[str, str] = field(default_factory=dict, repr=False)
    excluded: tuple[str, ...] = ()  # "what: why"
    packages: tuple[str, ...] = ()  # whose versions the manifest records
    reset: tuple[str, ...] = ()  # paths removed after a restore (rebuilt by the charm)

    @property
    def staging(self) -> str:
        return f"{self.backups_dir}/{STAGING}"


def s3_destination(
    app: str,
    *,
    bucket: str,
    endpoint: str | None,
    region: str | None,
    access_key: str,
    secret_key: str,
    path_style: bool | None = None,
    ca_file: str | None = None,
) -> tuple[str, dict[str, str]]:
    """``s3://<bucket>/backups/<app>`` and the environment that reaches it."""
    environment = {
        "AWS_ACCESS_KEY_ID": access_key,
        "AWS_SECRET_ACCESS_KEY": secret_key,
        **client_ca.S3_UPLOAD_SETTINGS,
    }
    if endpoint:
        environment["MLOPS_BACKUP_S3_ENDPOINT"] = endpoint
    if region:
        environment["MLOPS_BACKUP_S3_REGION"] = region
    if path_style is not None:
        environment["MLOPS_BACKUP_S3_PATH_STYLE"] = "true" if path_style else "false"
    if ca_file:
        environment["AWS_CA_BUNDLE"] = ca_file
    return f"s3://{bucket}/backups/{app}", environment


def _base(binary: str, plan: BackupPlan, command: str) -> list[str]:
    return [binary, "backup", command, "--destination", plan.destination]


def create_job(
    binary: str, plan: BackupPlan, *, app: str, unit: str, environment: Mapping[str, str]
) -> JobSpec:
    """The job that backs up ``plan``'s members (``environment``: HOME and the like)."""
    command = [*_base(binary, plan, "create"), "--root", plan.root, "--staging", plan.staging]
    command += ["--service", plan.service, "--app", app, "--unit", unit]
    for member in plan.members:
        command += ["--member", member]
    for text in plan.excluded:
        command += ["--excluded", text]
    for package in plan.packages:
        command += ["--package", package]
    return JobSpec(
        kind=CREATE_KIND,
        command=command,
        params={"destination": plan.destination},
        environment={**environment, **plan.environment},
        working_dir=plan.root,
    )


def restore_job(
    binary: str,
    plan: BackupPlan,
    backup_id: str,
    *,
    environment: Mapping[str, str],
    after: Sequence[tuple[Sequence[str], str]] = (),
) -> JobSpec:
    """The job that restores ``backup_id`` into ``plan``'s root (its servers stopped).

    ``after``: (command, working folder) run in order once the state is restored (their output
    goes to the job's log: its result stays the restore's); one failing fails the job.
    """
    command: list[str] = [
        *_base(binary, plan, "restore"),
        *("--root", plan.root, "--staging", plan.staging, "--id", backup_id),
    ]
    for path in plan.reset:
        command += ["--reset", path]
    if after:
        steps = [shlex.join(command)]
        steps += [f"cd {shlex.quote(folder)} && {shlex.join(step)} >&2" for step, folder in after]
        command = ["/bin/sh", "-c", " && ".join(steps)]
    return JobSpec(
        kind=RESTORE_KIND,
        command=command,
        params={"backup": backup_id, "destination": plan.destination},
        environment={**environment, **plan.environment},
        working_dir=plan.root,
    )


def list_command(binary: str, plan: BackupPlan) -> list[str]:
    """The short command that lists the backups (it reads their manifests only)."""
    return _base(binary, plan, "list")


def restoring(runner: SlotRunner) -> str | None:
    """The backup a running job of ``runner`` restores now, or None."""
    job = runner.current()
    if job is None or job.kind != RESTORE_KIND:
        return None
    return job.params.get("backup") or "a backup"


# --- actions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateBackupParams:
    """Parameters of the create-backup action."""

    wait: bool = True


@dataclass(frozen=True)
class RestoreParams:
    """Parameters of the restore action."""

    backup_id: str = ""  # required by the action's schema; checked here too
    wait: bool = True

    def __post_init__(self):
        if not self.backup_id:
            raise ValueError("backup-id is required (list-backups shows the backups)")
        if not BACKUP_ID.match(self.backup_id):
            raise ValueError(
                f"backup-id must be an id as list-backups shows it, such as "
                f"20260101T120000Z, not {self.backup_id!r}"
            )


def created_results(job: Job) -> dict[str, Any]:
    """create-backup's results once its job succeeded."""
    result = job.result or {}
    return {
        "job": job.id,
        "state": job.state,
        "backup-id": str(result.get("id", "")),
        "destination": str(result.get("destination", "")),
        "size": int(result.get("size") or 0),
        "files": int(result.get("files") or 0),
        "bytes": int(result.get("bytes") or 0),
        "members": ", ".join(str(m) for m in result.get("members", [])),
    }


def restored_results(job: Job) -> dict[str, Any]:
    """Restore's results once its job succeeded."""
    result = job.result or {}
    return {
        "job": job.id,
        "state": job.state,
        "backup-id": str(result.get("id", "")),
        "restored": ", ".join(str(m) for m in result.get("restored", [])),
        "files": int(result.get("files") or 0),
        "created": str(result.get("created", "")),
    }


def listed_results(result: Mapping[str, Any]) -> dict[str, Any]:
    """list-backups' results from ``mlops-workload backup list``."""
    listed: Sequence[Any] = result.get("backups", [])
    return {
        "destination": str(result.get("destination", "")),
        "count": len(listed),
        "backups": json.dumps(list(listed)),
    }


def listed_ids(result: Mapping[str, Any]) -> set[str]:
    """The ids of the complete backups ``mlops-workload backup list`` listed."""
    return {
        str(entry.get("id"))
        for entry in result.get("backups", [])
        if isinstance(entry, dict) and not entry.get("error")
    }


def list_on_storage(files: Any, folder: str) -> dict[str, Any]:
    """The backups in ``folder`` of the unit's storage, read from their manifests.

    ``files`` is the workload container or the machine's files (``HostFiles``). The same
    answer as ``mlops-workload backup list`` for a folder, without running it: a charm
    whose backups are only on its storage lists them with a few file reads.
    """
    try:
        names = sorted(entry.name for entry in files.list_files(folder))
    except ops.pebble.APIError:
        names = []
    listed: list[dict[str, Any]] = []
    for name in reversed(names):
        backup_id = name.removesuffix(".json")
        if name == backup_id or not BACKUP_ID.match(backup_id):
            continue
        try:
            manifest = json.loads(files.pull(f"{folder}/{name}").read())
            members = manifest["members"]
            listed.append(
                {
                    "id": backup_id,
                    "created": manifest.get("created", ""),
                    "service": manifest.get("service", ""),
                    "unit": manifest.get("unit", ""),
                    "size": manifest.get("archive", {}).get("size", 0),
                    "files": manifest.get("files", 0),
                    "bytes": manifest.get("bytes", 0),
                    "contents": ", ".join(
                        f"{m.get('path')} ({m.get('files')} files)" for m in members
                    ),
                    "excluded": ", ".join(e.get("what", "") for e in manifest.get("excluded", [])),
                }
            )
        except (ops.pebble.PathError, ValueError, KeyError, TypeError, AttributeError):
            listed.append({"id": backup_id, "error": "unreadable manifest"})
    return {"destination": folder, "backups": listed}


# --- the actions' flow, the same for every service ------------------------------------------


def refused_here(
    event: ops.ActionEvent, *, config_problem: str | None, unready: str | None, leader: bool
) -> bool:
    """Fail ``event`` when a backup action cannot run on this unit now; whether it did.

    ``unready``: the action's one line when the substrate is not reachable yet.
    """
    if config_problem:
        event.fail(f"cannot run while blocked: {config_problem}")
    elif unready:
        event.fail(unready)
    elif not leader:
        event.fail("run the action on the leader unit")
    else:
        return False
    return True


def create_for_action(
    event: ops.ActionEvent,
    runner: SlotRunner,
    spec: JobSpec,
    *,
    wait: bool,
    timeout: float,
    act_on_ended: Callable[[Job], None],
) -> None:
    """create-backup: start the job; with ``wait``, report its end (``act_on_ended`` first)."""
    job = jobs.start_for_action(event, runner, spec, wait=wait, timeout=timeout)
    if job is None or not job.ended:
        return
    act_on_ended(job)
    if job.state == "failed":
        event.fail(f"create-backup failed: {job.error}")
        return
    event.set_results(created_results(job))


def restore_for_action(
    event: ops.ActionEvent,
    runner: SlotRunner,
    *,
    backup_id: str,
    destination: str,
    listed: Callable[[], Mapping[str, Any] | None],
    stop_servers: Callable[[], None],
    spec: JobSpec,
    wait: bool,
    timeout: float,
    serve_again: Callable[[], object],
) -> None:
    """restore: stop the servers, restore in a job; its end (a reconcile) serves again.

    ``listed``: the backups there are, or None once it has failed ``event``. A busy slot, an
    unknown backup or servers that will not stop fail the action with nothing changed.
    """
    running = runner.current()
    if running is not None:
        event.fail(str(jobs.JobBusyError(running)))
        return
    backups = listed()
    if backups is None:
        return
    if backup_id not in listed_ids(backups):
        event.fail(f"no backup {backup_id} at {destination} (list-backups)")
        return
    try:
        stop_servers()
    except (ops.pebble.Error, OSError) as error:
        event.fail(f"cannot stop the servers: {str(error).splitlines()[0]}")
        return
    job = jobs.start_for_action(event, runner, spec, wait=wait, timeout=timeout)
    if job is None or job.ended:
        serve_again()  # not started, or ended in time: serve again (on the restored state)
    if job is None or not job.ended:
        return
    if job.state == "failed":
        event.fail(f"restore failed: {job.error}")
        return
    event.set_results(restored_results(job))
