"""What a backup of the MLflow Tracking Server holds and where it goes (``mlops_charms.backup``).

Substrate-neutral and Juju-free, like ``mlops_charms.mlflow``: a tracking charm turns its
``ServerSettings`` into a ``BackupPlan``; ``mlops_charms.backup`` turns that into the jobs.

The state on the unit's storage is MLflow's tracking store (``mlflow.db``, SQLite: copied with
the online backup API, consistent while MLflow serves) and the artifacts it serves
(``artifacts/``). Each is left out when it lives elsewhere: a PostgreSQL store is backed up by
its own charm, S3 artifacts stay in their bucket (and the backups go to that bucket, under
``backups/<app>/``).

The auth store (``basic_auth.db``: MLflow's users and their grants) is left out and a restore
keeps it as it is: it holds this deployment's admin and the consumers' users with the
passwords in this deployment's Juju secrets. A backup's users would carry another
deployment's (or an older rotation's) passwords, which the charm cannot read back: the restored
MLflow would lock the charm and its consumers out. The charm grants each consumer EDIT on its
experiment by name again once MLflow serves the restored store.
"""

from __future__ import annotations

from mlops_charms.backup import BackupPlan, s3_destination
from mlops_charms.mlflow import ServerSettings

BACKUP_SERVICE = "tracking"
STORE_FILE = "mlflow.db"
ARTIFACTS_DIR = "artifacts"
AUTH_FILE = "basic_auth.db"


def backups_dir(settings: ServerSettings) -> str:
    """Where backups go without a bucket, and where a restore stages (the state's own disk)."""
    return f"{settings.data_dir}/backups"


def backup_plan(settings: ServerSettings, app: str) -> BackupPlan:
    """The tracking store and the artifacts that are on the storage; where the backups go.

    Both stores external (PostgreSQL and S3): no member, and the plan says why in
    ``excluded`` (``create-backup`` refuses it with that reason).
    """
    members: list[str] = []
    excluded = [
        f"{AUTH_FILE}: the deployment's own users, matching its secrets; a restore keeps it",
        "secrets, prometheus, jobs: rendered by the charm or transient",
    ]
    if settings.database is None:
        # Optional: a unit whose MLflow never started has no store yet.
        members.append(f"{STORE_FILE}:sqlite,optional")
    else:
        excluded.append("the tracking store in PostgreSQL: back it up with the PostgreSQL charm")
    folder = backups_dir(settings)
    destination, environment = folder, {}
    artifacts = settings.artifacts
    if artifacts is None:
        members.append(f"{ARTIFACTS_DIR}:optional")  # MLflow makes it at the first upload
    else:
        excluded.append(
            f"the artifacts in {artifacts.destination}: they stay in that bucket, backed up "
            "with it"
        )
        bucket = artifacts.destination.removeprefix("s3://").split("/", 1)[0]
        destination, environment = s3_destination(
            app,
            bucket=bucket,
            endpoint=artifacts.endpoint,
            region=artifacts.region,
            access_key=artifacts.access_key,
            secret_key=artifacts.secret_key,
            path_style=artifacts.path_style,
            ca_file=settings.s3_ca_path if artifacts.ca_chain else None,
        )
    return BackupPlan(
        service=BACKUP_SERVICE,
        root=settings.data_dir,
        members=tuple(members),
        backups_dir=folder,
        destination=destination,
        environment=environment,
        excluded=tuple(excluded),
    )


def nothing_to_back_up(plan: BackupPlan) -> str | None:
    """Why ``plan`` has nothing to back up (both stores elsewhere), or None."""
    if plan.members:
        return None
    return (
        "nothing to back up on this unit: the tracking store is in PostgreSQL and the "
        "artifacts are in S3; back them up with their own charms"
    )
