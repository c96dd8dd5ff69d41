"""Label Studio under Pebble: the layer that runs the shared core's server.

The command, environment, setup steps and files are the core's (``mlops_charms.label_studio``),
shared with the machine charm; this module only wraps them in a Pebble service and check.
Secrets never appear in the Pebble plan: the service's command sources ``secrets.env`` (mode
0600) before it execs (see ``mlops_charms.workload``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlops_charms import label_studio, workload
from mlops_charms.label_studio import ServerSettings

if TYPE_CHECKING:
    from ops.pebble import CheckDict, LayerDict

READY_CHECK = "label-studio-ready"
# Recorded by the service once Label Studio answers: waiting relabel batches go at once.
READY_NOTICE = "mlops-stack.dev/label-studio/ready"


def layer(settings: ServerSettings) -> LayerDict:
    """The Pebble layer that runs Label Studio and its metrics exporter, and checks its health.

    The exporter has no check: Label Studio serves without it.
    """
    return {
        "summary": "Label Studio",
        "services": {
            label_studio.SERVICE: workload.service_sourcing_secrets(
                summary="Label Studio (label-studio init, then uWSGI)",
                secrets_env_path=settings.secrets_env_path,
                before=label_studio.setup_steps(settings),
                command=label_studio.server_command(settings),
                environment=label_studio.environment(settings),
                ready_notice=workload.ReadyNotice(
                    settings.health_url,
                    READY_NOTICE,
                    ca_file=label_studio.ready_probe_ca(settings),
                ),
            ),
            label_studio.METRICS_SERVICE: workload.service_sourcing_secrets(
                summary="Label Studio's Prometheus metrics, without auth (mlops-workload metrics)",
                secrets_env_path=settings.secrets_env_path,
                command=label_studio.metrics_exporter_command(settings),
                environment={},
            ),
        },
        "checks": {READY_CHECK: _ready_check(settings)},
    }


def _ready_check(settings: ServerSettings) -> CheckDict:
    ca_file = label_studio.ready_probe_ca(settings)
    if ca_file is None:
        return workload.http_ready_check(settings.health_url)
    return workload.https_ready_check(settings.health_url, ca_file)
