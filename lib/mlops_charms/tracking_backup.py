"""Backups of the MLflow Tracking Server: the create-backup, list-backups and restore actions.

The tracking charms' side of ``mlops_charms.backup``, for either substrate: what a backup holds
is ``mlflow_backup.backup_plan``'s, the jobs are ``mlops-workload backup`` run by the
substrate's job runner (Pebble services on Kubernetes, transient systemd units on a machine),
and the flow (leader only, one job at a time, MLflow stopped during a restore and started again
by the job's end) is the shared one. ``TrackingServerCharm`` owns one ``TrackingBackups`` and
asks it, in every reconcile, whether MLflow may run now (not while a restore runs).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import ops

from mlops_charms import backup, jobs, mlflow_backup, secrets, workload_exec
from mlops_charms.jobs import Job
from mlops_charms.mlflow import ServerSettings
from mlops_charms.workload_exec import WorkloadError

if TYPE_CHECKING:
    from mlops_charms.tracking_server import TrackingServerCharm

logger = logging.getLogger(__name__)

JOB_SLOT = "tracking"
# How long an action with wait=true waits for its job before returning the job's id.
ACTION_WAIT = 300.0


class TrackingBackups(ops.Object):
    """The backup actions of a tracking charm, and whether a restore holds MLflow stopped."""

    def __init__(self, charm: TrackingServerCharm, server_secret_label: str):
        super().__init__(charm, "backups")
        self._charm = charm
        self._secret_label = server_secret_label
        framework = charm.framework
        framework.observe(charm.on.create_backup_action, self._on_create_backup)
        framework.observe(charm.on.list_backups_action, self._on_list_backups)
        framework.observe(charm.on.restore_action, self._on_restore)
        framework.observe(charm.on.list_jobs_action, self._on_list_jobs)

    # --- what the reconcile asks ------------------------------------------------------------

    def restoring(self) -> str | None:
        """The backup a running job restores now, or None (also when the jobs are unreadable)."""
        if self._charm._backup_substrate_unready():
            return None
        try:
            return backup.restoring(self._charm._jobs())
        except (ops.pebble.Error, ops.ModelError, OSError):
            return None

    def hold_server(self) -> bool:
        """Whether MLflow must stay stopped (a restore runs); else report the ended jobs.

        A job that ended after its action stopped waiting is reported here, on the hook its
        end woke (its result stays in list-jobs).
        """
        if self.restoring() is not None:
            return True  # the restore's end wakes the charm again
        try:
            runner = self._charm._jobs()
            for job in runner.unreported():
                self._mark_reported(job)
        except (ops.pebble.Error, ops.ModelError, OSError) as error:
            logger.warning("cannot read the ended backup jobs: %s", error)
        return False

    def _mark_reported(self, job: Job) -> None:
        self._charm._jobs().mark_reported(job)
        self._charm._job_reported(job)

    # --- the actions ------------------------------------------------------------------------

    def _settings(self, event: ops.ActionEvent) -> ServerSettings | None:
        """Settings for a backup action (the leader's; MLflow need not be healthy)."""
        charm = self._charm
        if backup.refused_here(
            event,
            config_problem=charm._config_problem(),
            unready=charm._backup_substrate_unready(),
            leader=charm.unit.is_leader(),
        ):
            return None
        if charm.database.status() or charm.s3.status():
            event.fail("the server's stores are not ready: check `juju status`")
            return None
        server_secret = secrets.admin_secret_or_fail(charm.model, self._secret_label, event)
        if server_secret is None:
            return None
        return charm._settings(charm._config(), server_secret)

    def _plan(self, settings: ServerSettings) -> backup.BackupPlan:
        return mlflow_backup.backup_plan(settings, self._charm.app.name)

    def _listed(self, event: ops.ActionEvent, settings: ServerSettings) -> dict[str, Any] | None:
        """The backups at the destination (their manifests only); None after failing ``event``.

        On the storage: a few file reads. In a bucket: ``mlops-workload backup list`` where
        MLflow runs, with the bucket's keys in its environment only.
        """
        plan = self._plan(settings)
        if not plan.destination.startswith("s3://"):
            return backup.list_on_storage(self._charm._storage_files(), plan.destination)
        try:
            return workload_exec.decode_json(
                self._charm._run_workload(
                    backup.list_command(self._charm._mlops_workload, plan),
                    what="list-backups",
                    environment={"HOME": settings.data_dir, **plan.environment},
                    working_dir=settings.data_dir,
                ),
                what="list-backups",
            )
        except (WorkloadError, ops.pebble.Error, OSError) as error:
            event.fail(str(error).splitlines()[0] if str(error) else "list-backups failed")
            return None

    def _on_create_backup(self, event: ops.ActionEvent) -> None:
        params = event.load_params(backup.CreateBackupParams, errors="fail")
        settings = self._settings(event)
        if settings is None:
            return
        plan = self._plan(settings)
        nothing = mlflow_backup.nothing_to_back_up(plan)
        if nothing:
            event.fail(nothing)
            return
        spec = backup.create_job(
            self._charm._mlops_workload,
            plan,
            app=self._charm.app.name,
            unit=self._charm.unit.name,
            environment={"HOME": settings.data_dir},
        )
        backup.create_for_action(
            event,
            self._charm._jobs(),
            spec,
            wait=params.wait,
            timeout=ACTION_WAIT,
            act_on_ended=self._mark_reported,  # reported here, to the action
        )

    def _on_list_backups(self, event: ops.ActionEvent) -> None:
        settings = self._settings(event)
        if settings is None:
            return
        listed = self._listed(event, settings)
        if listed is not None:
            event.set_results(backup.listed_results(listed))

    def _on_restore(self, event: ops.ActionEvent) -> None:
        """Stop MLflow, restore in a job; the job's end (a reconcile) starts it again.

        MLflow's leader migrates a restored store of an older MLflow before it serves it
        (``mlflow_schema``, on every start): the job needs no step of its own for that.
        """
        params = event.load_params(backup.RestoreParams, errors="fail")
        settings = self._settings(event)
        if settings is None:
            return
        plan = self._plan(settings)
        backup.restore_for_action(
            event,
            self._charm._jobs(),
            backup_id=params.backup_id,
            destination=plan.destination,
            listed=lambda: self._listed(event, settings),
            stop_servers=lambda: self._charm._stop_server(settings),
            spec=backup.restore_job(
                self._charm._mlops_workload,
                plan,
                params.backup_id,
                environment={"HOME": settings.data_dir},
            ),
            wait=params.wait,
            timeout=ACTION_WAIT,
            serve_again=self._charm._reconcile_workload,
        )

    def _on_list_jobs(self, event: ops.ActionEvent) -> None:
        unready = self._charm._backup_substrate_unready()
        if unready:
            event.fail(unready)
            return
        jobs.list_for_action(event, self._charm._jobs())
