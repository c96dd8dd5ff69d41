"""The registry under Pebble: the layer that runs the core's servers (``mlops_charms.registry``).

The servers' commands, files, bootstrap and jobs are the core's, shared with the machine charm;
this module only wraps each server in a Pebble service with its readiness check, run as the
rock's user. Secrets never appear in the plan: the S3 servers' commands source ``s3.env``.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, Any, cast

from mlops_charms import registry, workload
from mlops_charms.registry import RegistrySettings

if TYPE_CHECKING:
    from ops.pebble import CheckDict, LayerDict

LABEL = "registry"
GIT_READY_CHECK = "git-http-ready"
S3_READY_CHECK = "s3-ready"
S3_READ_ONLY_READY_CHECK = "s3-read-only-ready"
READY_CHECKS = {
    registry.GIT_SERVICE: GIT_READY_CHECK,
    registry.S3_SERVICE: S3_READY_CHECK,
    registry.S3_READ_ONLY_SERVICE: S3_READ_ONLY_READY_CHECK,
}


def _check(service: registry.Service) -> CheckDict:
    if service.ready_url:
        return workload.http_ready_check(service.ready_url)
    return workload.tcp_ready_check(service.port)


def layer(settings: RegistrySettings) -> LayerDict:
    """The Pebble layer: Apache (git and the S3 front), the two S3 servers, their checks."""
    services: dict[str, Any] = {}
    for service in registry.services(settings):
        services[service.name] = {
            "override": "replace",
            "summary": service.summary,
            "command": shlex.join(service.command),
            "startup": "enabled",
        }
        if settings.service_user:
            services[service.name]["user"] = settings.service_user
            services[service.name]["group"] = settings.service_group or settings.service_user
    # The metrics exporter has no ready check: the registry serves without it.
    checks = {
        READY_CHECKS[s.name]: _check(s)
        for s in registry.services(settings)
        if s.name in READY_CHECKS
    }
    return cast(
        "LayerDict", {"summary": "DVC data registry", "services": services, "checks": checks}
    )
