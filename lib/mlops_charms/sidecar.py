"""What every sidecar charm of the stack derives from Juju the same way."""

from __future__ import annotations

import ops


def service_host(charm: ops.CharmBase) -> str:
    """The in-cluster DNS name of the application's Kubernetes service."""
    return f"{charm.app.name}.{charm.model.name}.svc.cluster.local"


def mount_location(charm: ops.CharmBase, container: str, storage: str) -> str:
    """Where ``storage`` is mounted in the workload ``container`` (from the charm's metadata)."""
    return charm.meta.containers[container].mounts[storage].location


def config_problem(charm: ops.CharmBase, config_class: type) -> str | None:
    """None when the config loads into ``config_class``, else the status line saying why not."""
    try:
        charm.load_config(config_class)
    except ValueError as error:
        return f"invalid config: {error}"
    return None
