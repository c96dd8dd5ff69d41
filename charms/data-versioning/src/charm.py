#!/usr/bin/env python3
"""Juju glue for the DVC data registry on a machine: apt and a venv, systemd units.

Everything that does not depend on the substrate (config, secrets, consumers, the remote, the
versions, statuses, actions) is ``mlops_charms.registry_server``'s, shared with
data-versioning-k8s. Jobs are transient systemd services (``mlops_charms.systemd_jobs``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import ops

# charmhelpers imports distutils, gone in Python 3.12: setuptools' import puts its shim in place
# first.
import setuptools  # noqa: F401
from charmhelpers.core import host

import registry_units
from mlops_charms import machine, registry, systemd, systemd_jobs
from mlops_charms.host_files import HostFiles
from mlops_charms.jobs import Job
from mlops_charms.registry import Binaries, RegistrySettings
from mlops_charms.registry_server import (
    DATASET_ENDPOINT,
    JOB_SLOT,
    STORAGE,
    RegistryConfig,
    RegistryServerCharm,
)
from mlops_charms.systemd_jobs import JobPaths, SystemdJobRunner
from registry_units import PATHS


@dataclass(frozen=True)
class MachineRegistryConfig(RegistryConfig):
    """The shared options and the machine's own: where pip installs DVC and rclone from."""

    pip_index_url: str = ""

    def __post_init__(self):
        super().__post_init__()
        machine.check_pip_index_url(self.pip_index_url)


class TagsPushedEvent(ops.EventBase):
    """Versions were pushed: the tags path unit dispatched ``hooks/tags-pushed``."""


class RegistryMachineEvents(systemd_jobs.MachineJobEvents):
    """The machine charm's events: a job ended (``job_ended``), tags were pushed."""

    tags_pushed = ops.EventSource(TagsPushedEvent)


class DataVersioningMachineCharm(RegistryServerCharm):
    """Runs the DVC data registry as systemd units and offers it over ``mlops_dataset``."""

    on = RegistryMachineEvents()  # type: ignore[reportAssignmentType]
    config_class = MachineRegistryConfig

    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        self.service_user = PATHS.user
        self._install_problem: str | None = None
        self._service_problem: str | None = None
        # Before the reconcile: a job whose unit vanished (a reboot) is recorded as failed.
        framework.observe(self.on.update_status, self._on_update_status)
        for event in (
            *machine.workload_events(self),
            self.on[STORAGE].storage_attached,
            self.on.job_ended,
            self.on.tags_pushed,
        ):
            framework.observe(event, self._reconcile)

    @property
    def _state_dir(self) -> str:
        storages = self.model.storages[STORAGE]
        if storages:
            return str(storages[0].location)
        return str(self.meta.storages[STORAGE].location)

    @property
    def _files(self) -> HostFiles:
        return HostFiles()

    @property
    def _default_public_host(self) -> str:
        return machine.unit_address(self.model, DATASET_ENDPOINT)

    @property
    def _binaries(self) -> Binaries:
        return PATHS.binaries

    def _job_paths(self) -> JobPaths:
        return JobPaths(
            jobs_dir=f"{self._state_dir}/jobs",
            unit_prefix=f"{registry_units.UNIT_PREFIX}job-",
            user=self.service_user,
            units_dir=PATHS.job_units_dir,
            scripts_dir=PATHS.job_scripts_dir,
            python=PATHS.python,
            juju_exec=PATHS.juju_exec,
        )

    def _jobs(self) -> SystemdJobRunner:
        return SystemdJobRunner(self._job_paths(), juju_unit=self.unit.name, slot=JOB_SLOT)

    def _on_ended_job(self, job: Job) -> None:
        self._jobs().finish(job)

    def _on_update_status(self, _event: ops.UpdateStatusEvent) -> None:
        if self._substrate_ready():
            self._jobs().record_lost()

    # --- install ----------------------------------------------------------------------------

    def _prepare_substrate(self) -> bool:
        if not self.model.storages[STORAGE]:
            return False
        config = self.load_config(MachineRegistryConfig)
        self._install_problem = machine.install_problem(lambda: self._install(config))
        return self._install_problem is None

    def _install(self, config: MachineRegistryConfig) -> None:
        """apt, the system user, the workload's venv, the jobs' script; each step once."""
        stamps = machine.Stamps(Path(PATHS.state_dir))
        if not stamps.done("apt", " ".join(registry_units.APT_PACKAGES)):
            machine.ensure_apt_packages(stamps, registry_units.APT_PACKAGES)
            # The package starts Debian's Apache on port 80: the registry runs its own.
            host.service_stop(registry_units.DEBIAN_APACHE)
            host.service("disable", registry_units.DEBIAN_APACHE)
        machine.ensure_system_user(PATHS.user)
        machine.ensure_workload(
            stamps,
            machine.Venv(Path(PATHS.venv), PATHS.python),
            Path(self.charm_dir) / "workload",
            also=registry_units.REQUIREMENTS,
            wheelhouse=lambda: machine.wheelhouse(self.model),
            index_url=config.pip_index_url,
            # rclone, DVC and mlops-workload run from it: every server but Apache's git.
            serving=registry_units.VENV_UNITS,
        )
        systemd_jobs.install(self._job_paths())

    def _substrate_status(self) -> ops.StatusBase | None:
        return machine.workload_status(
            self.model,
            STORAGE,
            install_problem=self._install_problem,
            installed=Path(PATHS.binaries.mlops_workload),
            installing="the registry",
            service_problem=self._service_problem,
        )

    # --- the servers ------------------------------------------------------------------------

    def _run(
        self,
        command: Sequence[str],
        *,
        what: str,
        environment: Mapping[str, str],
        working_dir: str,
        timeout: float = 120.0,
    ) -> str:
        return registry_units.run_as(
            self.service_user,
            command,
            what=what,
            environment=environment,
            working_dir=working_dir,
            timeout=timeout,
        )

    def _run_servers(self, settings: RegistrySettings, *, restart: bool) -> None:
        """Write the units; (re)start a server whose unit or files changed, else keep it up."""
        units = {
            unit: (PATHS.unit_file(unit), text)
            for unit, text in registry_units.unit_files(settings, self.unit.name).items()
        }
        self._service_problem = machine.apply_units(
            units,
            restart=[unit for unit in units if restart and unit.endswith(".service")],
            # Started by its path unit only.
            not_started={f"{registry_units.TAGS_UNIT}.service"},
        )

    def _servers_running(self) -> bool:
        return systemd.is_active(registry_units.GIT_UNIT)

    def _stop_servers(self, settings: RegistrySettings) -> None:
        units = [registry_units.server_unit(s.name) for s in registry.services(settings)]
        stopped = systemd.systemctl("stop", *units)
        if stopped.returncode != 0:
            raise OSError(f"cannot stop the registry: {systemd.reason(stopped)}")


if __name__ == "__main__":  # pragma: nocover
    ops.main(DataVersioningMachineCharm)
