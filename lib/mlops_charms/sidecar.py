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


def workload_events(
    charm: ops.CharmBase, container: str, storage: str
) -> tuple[ops.BoundEvent, ...]:
    """The events after which a sidecar charm's workload may need reconciling.

    Config, upgrade, leadership, the periodic update-status, the workload container's Pebble
    becoming ready or its checks changing, and its storage attaching.
    """
    return (
        charm.on.config_changed,
        charm.on.upgrade_charm,
        charm.on.leader_elected,
        charm.on.update_status,
        charm.on[container].pebble_ready,
        charm.on[container].pebble_check_failed,
        charm.on[container].pebble_check_recovered,
        charm.on[storage].storage_attached,
    )


def scale_out_problem(
    charm: ops.CharmBase, *, has_database: bool, has_object_storage: bool | None = None
) -> str | None:
    """Why this application cannot run more than one serving unit yet, or None.

    SQLite and files on a unit's own storage are per unit: behind the one Kubernetes
    Service, a second unit would serve other data. ``has_object_storage`` is None for a
    workload that keeps no files of its own.
    """
    if charm.app.planned_units() <= 1:
        return None
    if not has_database:
        return "scale-out needs the database relation: SQLite is per unit"
    if has_object_storage is False:
        return "scale-out needs s3-credentials: artifacts are per unit"
    return None
