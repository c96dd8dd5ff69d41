#!/usr/bin/env python3
"""Juju glue for the MLflow Tracking Server on Kubernetes: MLflow under Pebble, an ingress.

Everything that does not depend on the substrate (config, the stores, consumers, statuses,
actions) is ``mlops_charms.tracking_server``'s, shared with the machine charm ``tracking``.
"""

from __future__ import annotations

import urllib.parse

import ops

import mlflow_server
from mlops_charms import mlflow, pebble, sidecar, tracking_backup, workload_exec
from mlops_charms.ingress import IngressRequirer
from mlops_charms.jobs import JobRunner
from mlops_charms.log_forwarding import LogForwarding
from mlops_charms.mlflow import ServerSettings
from mlops_charms.tracking_server import TrackingConfig, TrackingServerCharm

CONTAINER = "mlflow"
STORAGE = "mlflow-data"
# The stack's workload CLI in the rock, in its own venv (rocks/mlflow): backups run it.
MLOPS_WORKLOAD = "/opt/mlops/bin/mlops-workload"


class TrackingCharm(TrackingServerCharm):
    """Runs MLflow under Pebble and offers it to the stack over ``mlops_tracking``."""

    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        self.container = self.unit.get_container(CONTAINER)
        self.ingress = IngressRequirer(self, "ingress", port=TrackingConfig.port)
        self.log_forwarding = LogForwarding(self, CONTAINER)
        for event in (
            *sidecar.workload_events(self, CONTAINER, STORAGE),
            self.on.ingress_relation_joined,
            self.on.ingress_relation_changed,
            self.on.ingress_relation_broken,
            # MLflow answering after a (re)start: provision the consumers at once.
            self.on[CONTAINER].pebble_custom_notice,
        ):
            framework.observe(event, self._reconcile)

    @property
    def _data_dir(self) -> str:
        return sidecar.mount_location(self, CONTAINER, STORAGE)

    @property
    def _internal_url(self) -> str:
        return f"{self._scheme}://{sidecar.service_host(self)}:{self._config().port}"

    @property
    def _external_url(self) -> str | None:
        return self.ingress.url

    def _server_hosts(self) -> tuple[str, ...]:
        ingress_host = (
            urllib.parse.urlsplit(self.ingress.url).hostname if self.ingress.url else None
        )
        return (
            self.app.name,
            f"{self.app.name}.{self.model.name}",
            f"{self.app.name}.{self.model.name}.svc",
            sidecar.service_host(self),
            *((ingress_host,) if ingress_host else ()),
        )

    def _prepare_substrate(self) -> bool:
        if not self.container.can_connect():
            return False
        config = self._config()
        self.unit.set_ports(config.port, config.metrics_port)
        # Over HTTPS the ingress reaches the unit with HTTPS too: it serves nothing else.
        self.ingress.publish(port=config.port, scheme="https" if self._server_tls() else "http")
        return True

    def _substrate_status(self) -> ops.StatusBase | None:
        if not self.container.can_connect():
            return ops.WaitingStatus("waiting for Pebble in the mlflow container")
        return None

    def _substrate_relation_statuses(self) -> list[ops.StatusBase]:
        if self.ingress.problem:
            return [ops.BlockedStatus(f"ingress: {self.ingress.problem}")]
        return []

    def _run_server(self, settings: ServerSettings) -> None:
        files = mlflow.files(settings)
        before = {path: self._read_file(path) for path in files}
        for path, content in files.items():
            pebble.push_if_changed(self.container, path, content)
        restart = mlflow.restarts(settings, before, files).any
        pebble.apply_layer(
            self.container, "mlflow", mlflow_server.layer(settings), restart=restart
        )

    def _read_file(self, path: str) -> str | None:
        try:
            return self.container.pull(path).read()
        except ops.pebble.PathError:
            return None

    def _stop_server(self, settings: ServerSettings) -> None:
        pebble.stop_layer_services(self.container, mlflow_server.layer(settings))

    # --- backups: jobs as Pebble services in the mlflow container ---------------------------

    @property
    def _mlops_workload(self) -> str:
        return MLOPS_WORKLOAD

    def _jobs(self) -> JobRunner:
        return JobRunner(self.container, f"{self._data_dir}/jobs", slot=tracking_backup.JOB_SLOT)

    def _storage_files(self) -> ops.Container:
        return self.container

    def _run_workload(
        self, command: list[str], *, what: str, environment: dict[str, str], working_dir: str
    ) -> str:
        return workload_exec.run(
            self.container, command, what=what, environment=environment, working_dir=working_dir
        )

    def _backup_substrate_unready(self) -> str | None:
        if not self.container.can_connect():
            return "the mlflow container is not ready yet"
        return None


if __name__ == "__main__":  # pragma: nocover
    ops.main(TrackingCharm)
