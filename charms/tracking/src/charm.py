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
from mlops_charms import machine, mlflow, systemd
from mlops_charms.mlflow import ServerSettings
from mlops_charms.tracking_server import TRACKING_ENDPOINT, TrackingConfig, TrackingServerCharm

STORAGE = "mlflow-data"


@dataclass(frozen=True)
class MachineTrackingConfig(TrackingConfig):
    """The shared options and the machine's own: where pip installs MLflow from."""

    pip_index_url: str = ""

    def __post_init__(self):
        super().__post_init__()
        machine.check_pip_index_url(self.pip_index_url)


class TrackingMachineCharm(TrackingServerCharm):
    """Runs MLflow as a systemd unit and offers it to the stack over ``mlops_tracking``."""

    config_class = MachineTrackingConfig

    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        self._install_problem: str | None = None
        self._service_problem: str | None = None
        for event in (
            *machine.workload_events(self),
            self.on[STORAGE].storage_attached,
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
        return f"http://{self._address}:{self._config().port}"

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
        )
        host.mkdir(self._data_dir, owner=PATHS.user, group=PATHS.user, perms=0o750)
        host.mkdir(f"{self._data_dir}/secrets", owner=PATHS.user, group=PATHS.user, perms=0o700)

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
        # Both servers read the files at start: a change restarts them (not a rotated admin
        # password: MLflow reads it only to create the admin user).
        restart = units if mlflow.restart_needed(before, files) else ()
        self._service_problem = machine.apply_units(units, restart=restart)

    def _stop_server(self, settings: ServerSettings) -> None:
        for service in (mlflow_unit.SERVICE, mlflow_unit.METRICS_SERVICE):
            host.service_stop(service)

    def _read_file(self, path: str) -> str | None:
        try:
            return Path(path).read_text()
        except (OSError, UnicodeDecodeError):
            return None


if __name__ == "__main__":  # pragma: nocover
    ops.main(TrackingMachineCharm)
