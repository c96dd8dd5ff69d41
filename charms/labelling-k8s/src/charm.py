#!/usr/bin/env python3
"""Juju glue for Label Studio on Kubernetes: Label Studio and its jobs under Pebble.

Everything that does not depend on the substrate (config, the registry, re-label batches, the
approach, jobs, statuses, actions) is ``mlops_charms.labelling_server``'s, shared with the
machine charm ``labelling``.
"""

from __future__ import annotations

import ops

import label_studio_layer
from mlops_charms import label_studio, pebble, sidecar, workload_exec
from mlops_charms.jobs import JobRunner
from mlops_charms.label_studio import Binaries, ServerSettings
from mlops_charms.labelling_server import JOB_SLOT, STORAGE, LabellingServerCharm
from mlops_charms.log_forwarding import LogForwarding

CONTAINER = "label-studio"


class LabellingCharm(LabellingServerCharm):
    """Runs Label Studio under Pebble and feeds it from the stack's data registry."""

    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        self.container = self.unit.get_container(CONTAINER)
        self.log_forwarding = LogForwarding(self, CONTAINER)
        for event in (
            *sidecar.workload_events(self, CONTAINER, STORAGE),
            # Label Studio answering, or a job's end: act on it at once.
            self.on[CONTAINER].pebble_custom_notice,
        ):
            framework.observe(event, self._reconcile)

    @property
    def _data_dir(self) -> str:
        return sidecar.mount_location(self, CONTAINER, STORAGE)

    @property
    def _server_host(self) -> str:
        return sidecar.service_host(self)

    def _certificate_hosts(self) -> list[str]:
        # The service's shorter names too: clients in the cluster may use them.
        app, model = self.app.name, self.model.name
        return [*super()._certificate_hosts(), app, f"{app}.{model}", f"{app}.{model}.svc"]

    @property
    def _binaries(self) -> Binaries:
        return label_studio.ROCK

    def _storage_files(self) -> ops.Container:
        return self.container

    def _prepare_substrate(self) -> bool:
        return self.container.can_connect()

    def _substrate_status(self) -> ops.StatusBase | None:
        if not self.container.can_connect():
            return ops.WaitingStatus("waiting for Pebble in the label-studio container")
        return None

    def _substrate_unready(self) -> str | None:
        if not self.container.can_connect():
            return "the label-studio container is not ready yet"
        return None

    def _run_server(self, settings: ServerSettings) -> None:
        files = label_studio.files(settings)
        before = {path: self._read_file(path) for path in files}
        for path, content in files.items():
            pebble.push_if_changed(self.container, path, content)
        pebble.apply_layer(
            self.container,
            "label-studio",
            label_studio_layer.layer(settings),
            restart=label_studio.restart_needed(before, files),
        )

    def _read_file(self, path: str) -> str | None:
        try:
            return self.container.pull(path).read()
        except ops.pebble.PathError:
            return None

    def _run_command(
        self,
        command: list[str],
        *,
        what: str,
        environment: dict[str, str],
        working_dir: str,
        timeout: float = 120.0,
    ) -> None:
        workload_exec.run(
            self.container,
            command,
            what=what,
            environment=environment,
            working_dir=working_dir,
            timeout=timeout,
        )

    def _stop_server(self, settings: ServerSettings) -> None:
        pebble.stop_layer_services(self.container, label_studio_layer.layer(settings))

    def _jobs(self) -> JobRunner:
        return JobRunner(self.container, f"{self._data_dir}/jobs", slot=JOB_SLOT)


if __name__ == "__main__":  # pragma: nocover
    ops.main(LabellingCharm)
