"""MLflow as a systemd unit on this machine: where it lives, its unit file, what to install.

The server's command, environment and files are the core's (``mlops_charms.mlflow``, shared
with tracking-k8s); this module only says where they go on a machine: MLflow in a venv, run by
``mlflow.service`` as the ``mlflow`` system user, its secrets in the unit's ``EnvironmentFile``
(``secrets.env``, mode 0600) and its plain settings in ``Environment=`` lines. Nothing here
imports charmhelpers: the workload test renders the very unit the charm writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mlops_charms import mlflow, systemd
from mlops_charms.mlflow import ServerSettings

SERVICE = "mlflow"
METRICS_SERVICE = "mlflow-metrics"
TEMPLATES = Path(__file__).resolve().parent / "templates"
TEMPLATE = "mlflow.service.j2"
METRICS_TEMPLATE = "mlflow-metrics.service.j2"
# The same packages and pins as the OCI image of tracking-k8s (rocks/mlflow/rockcraft.yaml).
REQUIREMENTS = (
    "mlflow[auth]==3.17.2",
    "psycopg2-binary==2.9.13",
    "boto3==1.43.117",
    "prometheus-flask-exporter==0.23.2",
)
APT_PACKAGES = ("python3-venv",)
# The stack's workload package (the charm carries workload/) in its own venv, with the DVC pins
# it needs, as in the rock (/opt/mlops): the backup and restore jobs run its `backup` command.
WORKLOAD_REQUIREMENTS = ("dvc==3.67.1", "dvc-s3==3.3.0")


@dataclass(frozen=True)
class MachinePaths:
    """Where the machine keeps MLflow and its unit; the tests point these away."""

    units_dir: str = "/etc/systemd/system"
    venv: str = "/opt/mlflow/venv"
    # The install steps' stamps (mlops_charms.machine): outside the storage, which may change.
    state_dir: str = "/var/lib/mlflow-charm"
    python: str = "/usr/bin/python3"
    user: str = "mlflow"
    workload_venv: str = "/opt/mlops"
    # Where the jobs' transient units and their ExecStopPost script go (systemd_jobs' defaults).
    jobs_units_dir: str = "/run/systemd/system"
    jobs_scripts_dir: str = "/usr/local/lib/mlops-jobs"

    @property
    def unit_file(self) -> str:
        return f"{self.units_dir}/{SERVICE}.service"

    @property
    def metrics_unit_file(self) -> str:
        return f"{self.units_dir}/{METRICS_SERVICE}.service"

    @property
    def mlflow(self) -> str:
        return f"{self.venv}/bin/mlflow"

    @property
    def mlops_workload(self) -> str:
        return f"{self.workload_venv}/bin/mlops-workload"


PATHS = MachinePaths()


def unit_file(settings: ServerSettings, juju_unit: str) -> str:
    """The text of ``mlflow.service`` that runs the core's server with ``settings``."""
    environment = {
        **mlflow.environment(settings),
        # MLflow starts its server processes by name: the venv's programs come first.
        "PATH": f"{PATHS.venv}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin",
    }
    return systemd.render_unit(
        TEMPLATES,
        TEMPLATE,
        {
            "juju_unit": juju_unit,
            "user": PATHS.user,
            "work_dir": settings.data_dir,
            "env_file": settings.secrets_env_path,
            "environment": [systemd.quote(f"{k}={v}") for k, v in sorted(environment.items())],
            "exec_start_pre": [
                systemd.exec_start(step)
                for step in mlflow.start_steps(settings, f"{PATHS.venv}/bin/python")
            ],
            "exec_start": systemd.exec_start(mlflow.server_command(settings, PATHS.mlflow)),
        },
    )


def metrics_unit_file(settings: ServerSettings, juju_unit: str) -> str:
    """The text of ``mlflow-metrics.service``: the core's metrics exporter, no secrets."""
    command = mlflow.metrics_exporter_command(settings, f"{PATHS.venv}/bin/python")
    return systemd.render_unit(
        TEMPLATES,
        METRICS_TEMPLATE,
        {
            "juju_unit": juju_unit,
            "user": PATHS.user,
            "work_dir": settings.data_dir,
            "exec_start": systemd.exec_start(command),
        },
    )
