#!/usr/bin/env python3
"""Juju glue for Label Studio on a machine: venvs, a systemd unit, jobs as transient units.

Everything that does not depend on the substrate (config, the registry, re-label batches, the
approach, jobs, statuses, actions) is ``mlops_charms.labelling_server``'s, shared with
labelling-k8s.
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

import label_studio_unit
from label_studio_unit import PATHS
from mlops_charms import label_studio, machine, systemd, systemd_jobs, workload_exec
from mlops_charms.host_files import HostFiles
from mlops_charms.jobs import Job
from mlops_charms.label_studio import Binaries, ServerSettings
from mlops_charms.labelling_server import (
    DATASET_ENDPOINT,
    JOB_SLOT,
    STORAGE,
    LabellingConfig,
    LabellingServerCharm,
)
from mlops_charms.systemd_jobs import JobPaths, SystemdJobRunner

JOB_UNIT_PREFIX = "labelling-job-"


@dataclass(frozen=True)
class MachineLabellingConfig(LabellingConfig):
    """The shared options and the machine's own: where pip installs the workload from."""

    pip_index_url: str = ""

    def __post_init__(self):
        super().__post_init__()
        machine.check_pip_index_url(self.pip_index_url)


def job_paths(data_dir: str) -> JobPaths:
    """The labelling jobs: their folders on the storage, run as Label Studio's user."""
    return systemd_jobs.storage_job_paths(data_dir, PATHS, unit_prefix=JOB_UNIT_PREFIX)


class LabellingMachineCharm(LabellingServerCharm):
    """Runs Label Studio as a systemd unit and feeds it from the stack's data registry."""

    on = systemd_jobs.MachineJobEvents()  # type: ignore[reportAssignmentType]
    config_class = MachineLabellingConfig
    registry_charm = "data-versioning"

    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        self._install_problem: str | None = None
        self._service_problem: str | None = None
        # First: a job whose unit vanished (a reboot) is recorded before the reconcile acts.
        framework.observe(self.on.update_status, self._on_update_status)
        for event in (
            *machine.workload_events(self),
            self.on[STORAGE].storage_attached,
            self.on.job_ended,
        ):
            framework.observe(event, self._reconcile)

    @property
    def _data_dir(self) -> str:
        return str(self.model.storages[STORAGE][0].location)

    @property
    def _address(self) -> str:
        return machine.unit_address(self.model, DATASET_ENDPOINT)

    @property
    def _server_host(self) -> str:
        return self._address

    def _certificate_hosts(self) -> list[str]:
        # The machine's name too: annotators may reach it by name rather than address.
        return [*super()._certificate_hosts(), socket.getfqdn()]

    @property
    def _binaries(self) -> Binaries:
        return PATHS.binaries

    def _storage_files(self) -> HostFiles:
        return HostFiles()

    def _jobs(self) -> SystemdJobRunner:
        return SystemdJobRunner(job_paths(self._data_dir), juju_unit=self.unit.name, slot=JOB_SLOT)

    def _job_reported(self, job: Job) -> None:
        self._jobs().finish(job)

    def _on_update_status(self, _event: ops.UpdateStatusEvent) -> None:
        if self.model.storages[STORAGE] and Path(job_paths(self._data_dir).jobs_dir).is_dir():
            self._jobs().record_lost()

    def _prepare_substrate(self) -> bool:
        if not self.model.storages[STORAGE]:
            return False
        config = self.load_config(MachineLabellingConfig)
        self._install_problem = machine.install_problem(lambda: self._install(config))
        return self._install_problem is None

    def _install(self, config: MachineLabellingConfig) -> None:
        """apt, the system user, the two venvs, the data and jobs folders; each step once."""
        stamps = machine.Stamps(Path(PATHS.state_dir))
        machine.ensure_apt_packages(stamps, label_studio_unit.APT_PACKAGES)
        machine.ensure_system_user(PATHS.user)
        # One stamp per venv: each records its own install.
        machine.Venv(Path(PATHS.venv), PATHS.python).ensure(
            stamps,
            label_studio_unit.REQUIREMENTS,
            fingerprint=label_studio_unit.VENV_FINGERPRINT,
            wheelhouse=machine.wheelhouse(self.model),
            index_url=config.pip_index_url,
            probe="uwsgi",
            stamp="label-studio-venv",
            serving=(label_studio_unit.SERVICE,),
        )
        machine.ensure_workload(
            stamps,
            machine.Venv(Path(PATHS.workload_venv), PATHS.python),
            Path(self.charm_dir) / "workload",
            also=label_studio_unit.WORKLOAD_REQUIREMENTS,
            wheelhouse=lambda: machine.wheelhouse(self.model),
            index_url=config.pip_index_url,
            stamp="workload-venv",
            serving=(label_studio_unit.METRICS_SERVICE,),  # the exporter runs mlops-workload
        )
        host.mkdir(self._data_dir, owner=PATHS.user, group=PATHS.user, perms=0o750)
        host.mkdir(f"{self._data_dir}/secrets", owner=PATHS.user, group=PATHS.user, perms=0o700)
        systemd_jobs.install(job_paths(self._data_dir))

    def _substrate_status(self) -> ops.StatusBase | None:
        return machine.workload_status(
            self.model,
            STORAGE,
            install_problem=self._install_problem,
            installed=Path(PATHS.binaries.uwsgi),
            installing="Label Studio",
            service_problem=self._service_problem,
        )

    def _substrate_unready(self) -> str | None:
        if not self.model.storages[STORAGE]:
            return f"the {STORAGE} storage is not attached yet"
        if not Path(PATHS.binaries.uwsgi).exists():
            return "Label Studio is not installed yet"
        return None

    def _run_server(self, settings: ServerSettings) -> None:
        """Write the files and the unit; restart Label Studio when either changed."""
        files = label_studio.files(settings, systemd.env_file)
        before = {path: _read_file(path) for path in files}
        machine.write_files(files, owner=PATHS.user)
        unit = label_studio_unit.unit_file(settings, self.unit.name)
        metrics_unit = label_studio_unit.metrics_unit_file(settings, self.unit.name)
        units = {
            label_studio_unit.SERVICE: (PATHS.unit_file, unit),
            label_studio_unit.METRICS_SERVICE: (PATHS.metrics_unit_file, metrics_unit),
        }
        # The server reads its files at start: a change restarts it (not a rotated admin
        # password or token: only `label-studio init` reads them, to create the admin).
        restart = units if label_studio.restart_needed(before, files) else ()
        self._service_problem = machine.apply_units(units, restart=restart)

    def _run_command(
        self,
        command: list[str],
        *,
        what: str,
        environment: dict[str, str],
        working_dir: str,
        timeout: float = 120.0,
    ) -> None:
        workload_exec.run_as(
            PATHS.user,
            command,
            what=what,
            environment=environment,
            working_dir=working_dir,
            timeout=timeout,
        )

    def _stop_server(self, settings: ServerSettings) -> None:
        host.service_stop(label_studio_unit.SERVICE)
        host.service_stop(label_studio_unit.METRICS_SERVICE)


def _read_file(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError):
        return None


if __name__ == "__main__":  # pragma: nocover
    ops.main(LabellingMachineCharm)
