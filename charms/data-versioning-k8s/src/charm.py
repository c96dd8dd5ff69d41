#!/usr/bin/env python3
"""Juju glue for the DVC data registry on Kubernetes: the servers under Pebble.

Everything that does not depend on the substrate (config, secrets, consumers, the remote, the
versions, statuses, actions) is ``mlops_charms.registry_server``'s, shared with the machine
charm ``data-versioning``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import ops

import registry_layer
from mlops_charms import pebble, registry, sidecar, workload, workload_exec
from mlops_charms.jobs import JobRunner
from mlops_charms.log_forwarding import LogForwarding
from mlops_charms.registry import Binaries, RegistrySettings
from mlops_charms.registry_server import JOB_SLOT, STORAGE, RegistryServerCharm

CONTAINER = "registry"


class DataVersioningCharm(RegistryServerCharm):
    """Runs the DVC data registry under Pebble and offers it over ``mlops_dataset``."""

    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        self.container = self.unit.get_container(CONTAINER)
        self.log_forwarding = LogForwarding(self, CONTAINER)
        for event in (
            *sidecar.workload_events(self, CONTAINER, STORAGE),
            # The post-receive hook's notice: tags were pushed.
            self.on[CONTAINER].pebble_custom_notice,
        ):
            framework.observe(event, self._reconcile)

    @property
    def _state_dir(self) -> str:
        return sidecar.mount_location(self, CONTAINER, STORAGE)

    @property
    def _files(self) -> ops.Container:
        return self.container

    @property
    def _default_public_host(self) -> str:
        return sidecar.service_host(self)

    @property
    def _binaries(self) -> Binaries:
        return registry.ROCK

    @property
    def _tags_notify(self) -> tuple[str, ...]:
        return tuple(workload.JUJU_PEBBLE.notify_command(registry.NOTICE_KEY))

    def _prepare_substrate(self) -> bool:
        return self.container.can_connect()

    def _substrate_status(self) -> ops.StatusBase | None:
        if not self.container.can_connect():
            return ops.WaitingStatus("waiting for Pebble in the registry container")
        return None

    def _jobs(self) -> JobRunner:
        return JobRunner(
            self.container,
            f"{self._state_dir}/jobs",
            slot=JOB_SLOT,
            user=self.service_user,
            group=self.service_user,
        )

    def _run(
        self,
        command: Sequence[str],
        *,
        what: str,
        environment: Mapping[str, str],
        working_dir: str,
        timeout: float = 120.0,
    ) -> str:
        return workload_exec.run(
            self.container,
            command,
            what=what,
            environment=environment,
            user=self.service_user,
            group=self.service_user,
            working_dir=working_dir,
            timeout=timeout,
        )

    def _run_servers(self, settings: RegistrySettings, *, restart: bool) -> None:
        pebble.apply_layer(
            self.container, registry_layer.LABEL, registry_layer.layer(settings), restart=restart
        )

    def _servers_running(self) -> bool:
        services = self.container.get_services(registry.GIT_SERVICE)
        return bool(services) and services[registry.GIT_SERVICE].is_running()

    def _stop_servers(self, settings: RegistrySettings) -> None:
        services = self.container.get_services(*(s.name for s in registry.services(settings)))
        running = [name for name, info in services.items() if info.is_running()]
        if running:
            self.container.stop(*running)


if __name__ == "__main__":  # pragma: nocover
    ops.main(DataVersioningCharm)
