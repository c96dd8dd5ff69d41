#!/usr/bin/env python3
"""Juju glue for the MLflow Tracking Server on a machine: MLflow in a venv, a systemd unit.

Everything that does not depend on the substrate (config, the stores, consumers, statuses,
actions) is ``mlops_charms.tracking_server``'s, shared with tracking-k8s.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

import ops

# charmhelpers imports distutils, gone in Python 3.12: setuptools' import puts its shim in place
# first.
import setuptools  # noqa: F401
from charmhelpers.core import host

import mlflow_unit
from mlflow_unit import PATHS
from mlops_charms import machine, mlflow, systemd, systemd_jobs, tracking_backup, workload_exec
from mlops_charms.host_files import HostFiles
from mlops_charms.jobs import Job
from mlops_charms.mlflow import ServerSettings
from mlops_charms.systemd_jobs import JobPaths, SystemdJobRunner
from mlops_charms.tracking_server import TRACKING_ENDPOINT, TrackingConfig, TrackingServerCharm

STORAGE = "mlflow-data"
JOB_UNIT_PREFIX = "tracking-job-"


@dataclass(frozen=True)
class MachineTrackingConfig(TrackingConfig):
    """The shared options and the machine's own: where pip installs MLflow from."""

    pip_index_url: str = ""

    def __post_init__(self):
        super().__post_init__()
        machine.check_pip_index_url(self.pip_index_url)


def job_paths(data_dir: str) -> JobPaths:
    """The backup and restore jobs: their folders on the storage, run as MLflow's user."""
    return systemd_jobs.storage_job_paths(data_dir, PATHS, unit_prefix=JOB_UNIT_PREFIX)


class TrackingMachineCharm(TrackingServerCharm):
    """Runs MLflow as a systemd unit and offers it to the stack over ``mlops_tracking``."""

    on = systemd_jobs.MachineJobEvents()  # type: ignore[reportAssignmentType]
    config_class = MachineTrackingConfig

    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        self._install_problem: str | None = None
        self._service_problem: str | None = None
        # First: a job whose unit vanished (a reboot) is recorded before the reconcile acts.
        framework.observe(self.on.update_status, self._on_update_status)
        for event in (
            *machine.workload_events(self),
            self.on[STORAGE].storage_attached,
            # A backup's or restore's end: report it; after a restore, serve again.
            self.on.job_ended,
        ):
            framework.observe(event, self._reconcile)

    @property
    def _data_dir(self) -> str:
        return str(self.model.storages[STORAGE][0].location)

    @property
    def _address(self) -> str:
        return machine.unit_address(self.model, TRACKING_ENDPOINT)

    @property
    def _internal_url(self) -> str:
        return f"{self._scheme}://{self._address}:{self._config().port}"

    def _server_hosts(self) -> tuple[str, ...]:
        return (socket.getfqdn(), socket.gethostname(), self._address)

    def _prepare_substrate(self) -> bool:
        if not self.model.storages[STORAGE]:
            return False
        config = self.load_config(MachineTrackingConfig)
        self._install_problem = machine.install_problem(lambda: self._install(config))
        if self._install_problem:
            return False
        self.unit.set_ports(config.port, config.metrics_port)
        return True

    def _install(self, config: MachineTrackingConfig) -> None:
        """apt, the system user, MLflow's venv and the data folders; each step once."""
        stamps = machine.Stamps(Path(PATHS.state_dir))
        machine.ensure_apt_packages(stamps, mlflow_unit.APT_PACKAGES)
        machine.ensure_system_user(PATHS.user)
        venv = machine.Venv(Path(PATHS.venv), PATHS.python)
        venv.ensure(
            stamps,
            mlflow_unit.REQUIREMENTS,
            fingerprint=" ".join(mlflow_unit.REQUIREMENTS),
            wheelhouse=machine.wheelhouse(self.model),
            index_url=config.pip_index_url,
            probe="mlflow",
            serving=(mlflow_unit.SERVICE, mlflow_unit.METRICS_SERVICE),
        )
        # The workload CLI for the backup jobs, in its own venv: its DVC pins never meet MLflow's.
        machine.ensure_workload(
            stamps,
            machine.Venv(Path(PATHS.workload_venv), PATHS.python),
            Path(self.charm_dir) / "workload",
            also=mlflow_unit.WORKLOAD_REQUIREMENTS,
            wheelhouse=lambda: machine.wheelhouse(self.model),
            index_url=config.pip_index_url,
            stamp="workload-venv",
        )
        host.mkdir(self._data_dir, owner=PATHS.user, group=PATHS.user, perms=0o750)
        host.mkdir(f"{self._data_dir}/secrets", owner=PATHS.user, group=PATHS.user, perms=0o700)
        systemd_jobs.install(job_paths(self._data_dir))

    def _substrate_status(self) -> ops.StatusBase | None:
        return machine.workload_status(
            self.model,
            STORAGE,
            install_problem=self._install_problem,
            installed=Path(PATHS.mlflow),
            installing="MLflow",
            service_problem=self._service_problem,
        )

    def _run_server(self, settings: ServerSettings) -> None:
        """Write the files and the units; restart what changed, else keep both services up."""
        files = mlflow.files(settings, systemd.env_file)
        before = {path: self._read_file(path) for path in files}
        machine.write_files(files, owner=PATHS.user)
        units = {
            mlflow_unit.SERVICE: (
                PATHS.unit_file,
                mlflow_unit.unit_file(settings, self.unit.name),
            ),
            mlflow_unit.METRICS_SERVICE: (
                PATHS.metrics_unit_file,
                mlflow_unit.metrics_unit_file(settings, self.unit.name),
            ),
        }
        # Each server reads its files at start: a change restarts it (not a rotated admin
        # password: MLflow reads it only to create the admin user).
        restarts = mlflow.restarts(settings, before, files)
        restart = [
            name
            for name, needed in (
                (mlflow_unit.SERVICE, restarts.server),
                (mlflow_unit.METRICS_SERVICE, restarts.exporter),
            )
            if needed
        ]
        self._service_problem = machine.apply_units(units, restart=restart)

    def _stop_server(self, settings: ServerSettings) -> None:
        for service in (mlflow_unit.SERVICE, mlflow_unit.METRICS_SERVICE):
            host.service_stop(service)

    def _read_file(self, path: str) -> str | None:
        try:
            return Path(path).read_text()
        except (OSError, UnicodeDecodeError):
            return None

    # --- backups: jobs as transient systemd units, run as MLflow's user ---------------------

    @property
    def _mlops_workload(self) -> str:
        return PATHS.mlops_workload

    def _jobs(self) -> SystemdJobRunner:
        return SystemdJobRunner(
            job_paths(self._data_dir), juju_unit=self.unit.name, slot=tracking_backup.JOB_SLOT
        )

    def _job_reported(self, job: Job) -> None:
        self._jobs().finish(job)

    def _on_update_status(self, _event: ops.UpdateStatusEvent) -> None:
        if self.model.storages[STORAGE] and Path(job_paths(self._data_dir).jobs_dir).is_dir():
            self._jobs().record_lost()

    def _storage_files(self) -> HostFiles:
        return HostFiles()

    def _run_workload(
        self, command: list[str], *, what: str, environment: dict[str, str], working_dir: str
    ) -> str:
        return workload_exec.run_as(
            PATHS.user,
            command,
            what=what,
            environment=environment,
            working_dir=working_dir,
            timeout=120,
        )

    def _backup_substrate_unready(self) -> str | None:
        if not self.model.storages[STORAGE]:
            return f"the {STORAGE} storage is not attached yet"
        if not Path(PATHS.mlops_workload).exists():
            return "the workload CLI is not installed yet"
        return None


if __name__ == "__main__":  # pragma: nocover
    ops.main(TrackingMachineCharm)
