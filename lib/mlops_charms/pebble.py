"""Pebble helpers for sidecar charms: change the workload only when the goal state differs."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import ops

if TYPE_CHECKING:
    from mlops_charms.host_files import HostFiles

logger = logging.getLogger(__name__)


def push_if_changed(
    container: ops.Container | HostFiles,
    path: str,
    content: str,
    *,
    permissions: int = 0o600,
    user: str | None = None,
    group: str | None = None,
) -> bool:
    """Write ``content`` to ``path`` in the workload container unless it is already there.

    A machine charm passes its host's files (``HostFiles``: the same file API).

    Returns True when the file was written, so the caller knows to restart the service.
    """
    try:
        if container.pull(path).read() == content:
            return False
    except ops.pebble.PathError:
        pass
    container.push(path, content, make_dirs=True, permissions=permissions, user=user, group=group)
    return True


def apply_layer(
    container: ops.Container, label: str, layer: ops.pebble.LayerDict, *, restart: bool
) -> bool:
    """Make ``layer`` the container's layer ``label`` and run exactly its enabled services.

    The plan is compared first: when the layer is unchanged and ``restart`` is False (the
    files the services read are unchanged too), nothing is replanned and nothing restarts;
    an enabled service that is not running is started. A service the layer disables is
    never started, and is stopped if it runs (a replan does not stop it).
    Returns True when a service was (re)started or stopped.
    """
    wanted = ops.pebble.Layer(layer)
    plan = container.get_plan()
    layer_changed = any(
        plan.services.get(name) != service for name, service in wanted.services.items()
    ) or any(plan.checks.get(name) != check for name, check in wanted.checks.items())
    enabled = [name for name, service in wanted.services.items() if service.startup != "disabled"]
    disabled = [name for name in wanted.services if name not in enabled]
    acted = False
    if layer_changed:
        container.add_layer(label, wanted, combine=True)
    try:
        if restart and enabled:
            # Changed files are read at start only: restart every enabled service, not just
            # those whose definition changed (all a replan would restart).
            acted = True
            container.restart(*enabled)
        elif layer_changed:
            acted = True
            container.replan()
        elif enabled:
            services = container.get_services(*enabled)
            stopped = [name for name, info in services.items() if not info.is_running()]
            if stopped:
                acted = True
                container.start(*stopped)
    except ops.pebble.ChangeError as error:
        # A service that exits at once (a failed start step): Pebble restarts it with its
        # back-off, and the charm's status says why from its check or the workload's files.
        logger.warning("a service did not stay up: %s", str(error.err).splitlines()[-1])
    if disabled:
        running = [
            name for name, info in container.get_services(*disabled).items() if info.is_running()
        ]
        if running:
            container.stop(*running)
            acted = True
    return acted


def stop_layer_services(container: ops.Container, layer: ops.pebble.LayerDict) -> bool:
    """Stop every running service of ``layer`` (a unit that must not serve); True if any."""
    names = list(ops.pebble.Layer(layer).services)
    running = [name for name, info in container.get_services(*names).items() if info.is_running()]
    if running:
        container.stop(*running)
    return bool(running)
