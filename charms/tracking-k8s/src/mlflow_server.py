"""MLflow under Pebble: the layer that runs the core's server (``mlops_charms.mlflow``).

The command, environment, files and REST API are the core's, shared with the machine charm;
this module only wraps them in Pebble services and a check. Secrets never appear in the Pebble
plan: the service's command sources ``secrets.env`` (mode 0600) before it execs MLflow (see
``mlops_charms.workload``).
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

from mlops_charms import mlflow, workload

if TYPE_CHECKING:
    from ops.pebble import LayerDict

SERVICE = "mlflow"
METRICS_SERVICE = "mlflow-metrics"
READY_CHECK = "mlflow-ready"
# Recorded by the service once MLflow answers: the charm then provisions consumers at once.
READY_NOTICE = "mlops-stack.dev/mlflow/ready"


def layer(settings: mlflow.ServerSettings) -> LayerDict:
    """The Pebble layer that runs the server and its metrics exporter, and checks its health."""
    health = mlflow.health_url(settings)
    # Over HTTPS, every probe verifies MLflow against the CA of its certificate.
    ca_file = settings.tls_ca_path if settings.tls else None
    return {
        "summary": "MLflow Tracking Server",
        "services": {
            SERVICE: workload.service_sourcing_secrets(
                summary="MLflow Tracking Server with basic auth",
                secrets_env_path=settings.secrets_env_path,
                command=mlflow.server_command(settings),
                environment=mlflow.environment(settings),
                before=mlflow.start_steps(settings),
                ready_notice=workload.ReadyNotice(health, READY_NOTICE, ca_file=ca_file),
            ),
            METRICS_SERVICE: {
                "override": "replace",
                "summary": "MLflow's Prometheus metrics, without auth",
                "command": shlex.join(mlflow.metrics_exporter_command(settings)),
                "startup": "enabled",
            },
        },
        "checks": {
            READY_CHECK: workload.https_ready_check(health, ca_file)
            if ca_file
            else workload.http_ready_check(health)
        },
    }
