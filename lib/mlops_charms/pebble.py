"""Pebble helpers for sidecar charms: change the workload only when the goal state differs."""

from __future__ import annotations

import ops


def push_if_changed(
    container: ops.Container, path: str, content: str, *, permissions: int = 0o600
) -> bool:
    """Write ``content`` to ``path`` in the workload container unless it is already there.

    Returns True when the file was written, so the caller knows to restart the service.
    """
    try:
        if container.pull(path).read() == content:
            return False
    except ops.pebble.PathError:
        pass
    container.push(path, content, make_dirs=True, permissions=permissions)
    return True


def remove_if_present(container: ops.Container, path: str) -> bool:
    """Remove ``path`` from the workload container; True when something was removed."""
    if not container.exists(path):
        return False
    container.remove_path(path)
    return True


def apply_layer(
    container: ops.Container, label: str, layer: ops.pebble.LayerDict, *, restart: bool
) -> bool:
    """Make ``layer`` the container's layer ``label`` and (re)start its services as needed.

    The plan is compared first: when the layer is unchanged and ``restart`` is False (the
    files the services read are unchanged too), nothing is replanned and nothing restarts;
    only a service that is not running is started.
    Returns True when a service was (re)started.
    """
    wanted = ops.pebble.Layer(layer)
    plan = container.get_plan()
    layer_changed = any(
        plan.services.get(name) != service for name, service in wanted.services.items()
    ) or any(plan.checks.get(name) != check for name, check in wanted.checks.items())
    if layer_changed:
        container.add_layer(label, wanted, combine=True)
        container.replan()
        return True
    if restart:
        container.restart(*wanted.services)
        return True
    stopped = [
        name
        for name, info in container.get_services(*wanted.services).items()
        if not info.is_running()
    ]
    if stopped:
        container.start(*stopped)
    return bool(stopped)
