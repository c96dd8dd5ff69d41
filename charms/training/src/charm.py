#!/usr/bin/env python3
"""Juju glue for training on a bare-metal GPU machine: observe, reconcile, status, actions.

The runs are transient systemd services of this unit's machine (``mlops_charms.systemd_jobs``),
started from the same core as training-k8s's Jobs (``mlops_charms.training``: parameters, command,
environment, relabel offering). An action starts one and returns its id at once; the job's
``ExecStopPost`` records its end in its folder (``mlops_charms.jobs`` layout) and dispatches
this charm's ``job-ended`` event through ``juju-exec``; the charm then reports it once.
``update-status`` does the same, so an end whose dispatch was lost is only late. With
``mlops-approach`` related, the leader also follows the stack's approach: the loop
(``mlops_charms.training_loop``) decides what to run, this charm starts it as it starts an
action's run.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import ops

# charmhelpers imports distutils, gone in Python 3.12: setuptools' import puts its shim in place
# (the venv's .pth that would do it is not read: dispatch puts the venv on PYTHONPATH).
import setuptools  # noqa: F401

import gpus
import installer
import machine_paths
from mlops_charms import (
    charm_tracing,
    databags,
    jobs,
    machine,
    systemd,
    systemd_jobs,
    training,
    training_loop,
)
from mlops_charms.dataset import DatasetRequirerData
from mlops_charms.host_files import HostFiles
from mlops_charms.jobs import Job
from mlops_charms.systemd_jobs import JobLimits, JobUnit, SystemdJobRunner
from mlops_charms.tracking import TrackingRequirerData
from mlops_charms.training import (
    DATASET_ENDPOINT,
    TRACKING_ENDPOINT,
    JobLogsParams,
    JobParams,
    RunAccess,
    RunError,
    RunParams,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MachineConfig:
    """The charm's config options, validated."""

    gpus_per_job: int = 1
    install_gpu_driver: bool = False
    job_memory_max: str = ""
    job_deadline: int = 86400
    pip_index_url: str = ""
    experiment: str = ""

    def __post_init__(self):
        if not 0 <= self.gpus_per_job <= 64:
            raise ValueError("gpus-per-job: must be between 0 and 64")
        if self.job_memory_max and not systemd_jobs.MEMORY_MAX.match(self.job_memory_max):
            raise ValueError("job-memory-max: bytes with K/M/G/T, a percentage, or empty")
        if self.job_deadline < 1:
            raise ValueError("job-deadline: must be at least 1 second")
        machine.check_pip_index_url(self.pip_index_url)
        if self.experiment and (len(self.experiment) > 256 or "\n" in self.experiment):
            raise ValueError("experiment: must be one line of at most 256 characters")


class TrainingMachineCharm(ops.CharmBase):
    """Runs training work as systemd jobs on this machine's GPUs and reports their ends."""

    on = systemd_jobs.MachineJobEvents()  # type: ignore[reportAssignmentType]

    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        self.tracing = charm_tracing.trace_charm(self)
        self._install_problem: str | None = None
        for event in (
            *machine.workload_events(self),
            *training.relation_events(self),
            self.on.job_ended,
        ):
            framework.observe(event, self._reconcile)
        framework.observe(self.on.collect_unit_status, self._on_collect_status)
        for kind in training.RUN_ACTIONS:
            framework.observe(self.on[kind].action, self._on_run_action)
        framework.observe(self.on.list_jobs_action, self._on_list_jobs)
        framework.observe(self.on.cancel_job_action, self._on_cancel_job)
        framework.observe(self.on.job_logs_action, self._on_job_logs)

    # --- goal state -------------------------------------------------------------------------

    def _config_problem(self) -> str | None:
        try:
            self.load_config(MachineConfig)
        except ValueError as error:
            return str(error).splitlines()[0]
        return None

    def _config(self) -> MachineConfig:
        return self.load_config(MachineConfig)

    def _jobs(self) -> SystemdJobRunner:
        """The runs, side by side (no slot): each has the GPUs it was given."""
        return SystemdJobRunner(machine_paths.PATHS.jobs, juju_unit=self.unit.name)

    # --- reconcile --------------------------------------------------------------------------

    def _reconcile(self, event: ops.EventBase) -> None:
        """Install what jobs need, ask for access, report ended jobs; each step idempotent."""
        if self.unit.is_leader():
            self._request_access()
        if self._config_problem():
            return
        config = self._config()
        self._install_problem = machine.install_problem(lambda: self._install(config))
        if self._install_problem:
            return
        records = self._jobs()
        if isinstance(event, ops.UpdateStatusEvent):
            records.record_lost()
        for job in records.unreported():
            self._act_on(job)
            records.mark_reported(job)
        if self.unit.is_leader():
            training.offer_relabel_batches(self.model, self.app, [])
            training_loop.reconcile(self.model, records, self._start_run, outside_the_cluster=True)

    def _install(self, config: MachineConfig) -> None:
        installer.ensure_packages()
        if config.install_gpu_driver:
            inventory = gpus.detect()
            if not inventory.gpus and inventory.pci_cards:
                installer.install_gpu_driver()
        paths = machine_paths.PATHS
        machine.ensure_system_user(paths.user)
        systemd_jobs.install(paths.jobs)
        source = Path(self.charm_dir) / "workload"
        installer.ensure_workload(
            source, lambda: machine.wheelhouse(self.model), config.pip_index_url
        )

    def _request_access(self) -> None:
        for relation in self.model.relations[DATASET_ENDPOINT]:
            # Write: augment makes new versions (the other jobs only read).
            databags.save_app_data(relation, self.app, DatasetRequirerData(access="write"))
        experiment = (
            self._config().experiment if not self._config_problem() else ""
        ) or self.app.name
        for relation in self.model.relations[TRACKING_ENDPOINT]:
            databags.save_app_data(relation, self.app, TrackingRequirerData(experiment=experiment))

    def _act_on(self, job: Job) -> None:
        """Act once on an ended job: its batch is offered (the leader writes the offer)."""
        if self.unit.is_leader():
            training.act_on_ended(self.model, self.app, job)
        elif job.kind == "error-analysis" and job.state == "succeeded":
            logger.warning("job %s ran on a non-leader unit: its batch is not offered", job.id)
        self._jobs().finish(job)

    def _busy_gpus(self, records: SystemdJobRunner) -> set[int]:
        return {
            index
            for job in records.list()
            if not job.ended
            for index in gpus.parse_allocation(job.params.get("gpus", ""))
        }

    # --- status -----------------------------------------------------------------------------

    def _on_collect_status(self, event: ops.CollectStatusEvent) -> None:
        problem = self._config_problem()
        if problem:
            event.add_status(ops.BlockedStatus(problem))
            return
        if self._install_problem:
            event.add_status(ops.BlockedStatus(f"install failed: {self._install_problem}"))
        for answer in (
            training.registry(self.model).problem,
            training.tracking(self.model, outside_the_cluster=True).problem,
        ):
            if answer:
                event.add_status(answer)
        inventory = gpus.detect()
        if inventory.pci_cards and not inventory.gpus:
            hint = "" if self._config().install_gpu_driver else ": set install-gpu-driver=true"
            event.add_status(ops.BlockedStatus(inventory.summary() + hint))
        records = self._jobs()
        loop = ""
        if self.unit.is_leader():
            loop = training_loop.add_status(event, self.model, records, outside_the_cluster=True)
        running = sum(1 for job in records.list() if not job.ended)
        jobs_running = f"{running} job(s) running" if running else "no job running"
        event.add_status(ops.ActiveStatus(f"{inventory.summary()}; {jobs_running}{loop}"))

    # --- actions ----------------------------------------------------------------------------

    def _on_run_action(self, event: ops.ActionEvent) -> None:
        kind, params = training.load_run_action(event)
        problem = self._config_problem()
        if problem:
            event.fail(f"cannot run while blocked: {problem}")
            return
        if not Path(machine_paths.PATHS.mlops_workload).exists():
            event.fail("the workload is not installed yet (see the unit's status)")
            return
        access = training.access_for_run(event, self.model, kind, params, outside_the_cluster=True)
        if access is None:
            return
        try:
            job = self._start_run(kind, params, access)
        except RunError as error:
            event.fail(error.reason)
            return
        unit_name = machine_paths.unit_name(job.id)
        event.log(f"job {job.id} started: {unit_name}")
        shown = {"job": job.id, "unit": unit_name, "gpus": job.params["gpus"]}
        records = self._jobs()
        training.report_job(event, records, job, shown, self._act_on, wait=params.wait)

    def _start_run(
        self,
        kind: str,
        params: RunParams,
        access: RunAccess,
        shown: Mapping[str, str] | None = None,
    ) -> Job:
        """Record the run's job and start its systemd unit on free GPUs; ``RunError``: why not.

        ``shown``: more job parameters for list-jobs (who started it). An action and the
        approach's loop (``training_loop.StartRun``) start runs alike.
        """
        config = self._config()
        records = self._jobs()
        inventory = gpus.detect()
        wanted = config.gpus_per_job if inventory.gpus else 0
        allocated = gpus.allocate(inventory.indices, self._busy_gpus(records), wanted)
        if allocated is None:
            raise RunError(f"{wanted} GPU(s) wanted, fewer are free: wait for a job (list-jobs)")
        given = ",".join(map(str, allocated))
        try:
            job = records.create(
                kind, {**params.shown(access.version), "gpus": given, **(shown or {})}
            )
        except (ValueError, OSError) as error:
            raise RunError(f"cannot record the job: {error}") from None
        try:
            # The run's environment names the job's folder: the unit is made once it exists.
            records.start_recorded(job, self._job_unit(job, params, access, allocated))
        except (jobs.JobStartError, ValueError, OSError) as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            if not isinstance(error, jobs.JobStartError):  # start_recorded recorded its own
                jobs.record_failure(records, job, reason)
            raise RunError(reason, job) from None
        return job

    def _job_unit(
        self,
        job: Job,
        params: RunParams,
        access: RunAccess,
        allocated: list[int],
    ) -> JobUnit:
        """The job's unit; its credentials written to the job's 0600 ``env`` first."""
        config = self._config()
        paths = machine_paths.PATHS
        folder = f"{paths.jobs_dir}/{job.id}"
        settings, credentials = training.run_environment(access, params, workdir=f"{folder}/work")
        HostFiles().push(f"{folder}/env", systemd.env_file(credentials), permissions=0o600)
        # The providers' CAs (HTTPS), public: readable by the job's user, beside its env.
        ca = training.run_ca(access.registry, access.tracking, folder=folder)
        for path, pem in ca.paths().items():
            HostFiles().push(path, pem, permissions=0o644)
        settings = {**settings, **ca.environment}
        return JobUnit(
            paths=paths.jobs,
            job_id=job.id,
            kind=job.kind,
            juju_unit=self.unit.name,
            command=training.command(
                paths.mlops_workload, job.kind, params.arguments(access.version)
            ),
            settings=settings,
            limits=JobLimits(allocated, config.job_memory_max, config.job_deadline),
        )

    def _on_list_jobs(self, event: ops.ActionEvent) -> None:
        jobs.list_for_action(event, self._jobs())

    def _on_cancel_job(self, event: ops.ActionEvent) -> None:
        params = event.load_params(JobParams, errors="fail")
        records = self._jobs()
        job = jobs.find_running_for_action(event, records, params.job)
        if job is None:
            return
        jobs.record_cancelled(records, job)  # its ExecStopPost then adds nothing
        stopped = records.stop(job.id)
        event.set_results(
            {"job": job.id, "state": "cancelled", "stopped": "yes" if stopped else "no"}
        )

    def _on_job_logs(self, event: ops.ActionEvent) -> None:
        params = event.load_params(JobLogsParams, errors="fail")
        records = self._jobs()
        job = jobs.find_for_action(event, records, params.job)
        if job is None:
            return
        try:
            text = records.journal(job.id, params.lines)
        except (RuntimeError, OSError) as error:
            event.fail(str(error))
            return
        event.set_results(jobs.log_results(job, text, params.lines))


if __name__ == "__main__":  # pragma: nocover
    ops.main(TrainingMachineCharm)
