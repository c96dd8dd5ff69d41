"""Label Studio as a systemd unit on this machine: where it lives, its unit file, what to install.

The server's command, environment, setup steps and files are the core's
(``mlops_charms.label_studio``, shared with labelling-k8s); this module only says where they go
on a machine: Label Studio and uWSGI in one venv, ``mlops-workload`` with DVC in another (as in
the rock, rocks/labelling), ``label-studio.service`` run as the ``label-studio`` system user,
its secrets in the unit's ``EnvironmentFile`` (``secrets.env``, mode 0600) and its plain
settings in ``Environment=`` lines. Nothing here imports charmhelpers: the workload test
renders the very unit the charm writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mlops_charms import label_studio, systemd
from mlops_charms.label_studio import Binaries, ServerSettings

SERVICE = label_studio.SERVICE
TEMPLATES = Path(__file__).resolve().parent / "templates"
TEMPLATE = "label-studio.service.j2"
METRICS_SERVICE = label_studio.METRICS_SERVICE
METRICS_TEMPLATE = "label-studio-metrics.service.j2"
# The same packages and pins as the rock of labelling-k8s (rocks/labelling/rockcraft.yaml).
REQUIREMENTS = ("label-studio==1.23.2", "label-studio-sdk==2.1.2", "uwsgi==2.0.31")
WORKLOAD_REQUIREMENTS = ("dvc==3.67.1", "dvc-s3==3.3.0")
# uWSGI is built from its source (PyPI has no wheel): a compiler and Python's headers, and
# OpenSSL's, for its HTTPS router (the certificates relation).
APT_PACKAGES = ("python3-venv", "python3-dev", "build-essential", "libssl-dev", "git")
# What Label Studio's venv holds, for its install stamp: "openssl" since uWSGI is built with it,
# so that a unit installed before rebuilds it (machine.Venv.ensure).
VENV_FINGERPRINT = " ".join([*REQUIREMENTS, "uwsgi-built-with=openssl"])


@dataclass(frozen=True)
class MachinePaths:
    """Where Label Studio, the workload CLI and the units live; the tests point these away."""

    units_dir: str = "/etc/systemd/system"
    venv: str = "/opt/label-studio"
    workload_venv: str = "/opt/mlops"
    # The install steps' stamps (mlops_charms.machine): outside the storage, which may change.
    state_dir: str = "/var/lib/labelling-charm"
    python: str = "/usr/bin/python3"
    user: str = "label-studio"
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
    def binaries(self) -> Binaries:
        return Binaries(
            label_studio=f"{self.venv}/bin/label-studio",
            uwsgi=f"{self.venv}/bin/uwsgi",
            # ubuntu@24.04's Python, which the venv is made with (as the rock's).
            app_dir=f"{self.venv}/lib/python3.12/site-packages/label_studio",
            mlops_workload=f"{self.workload_venv}/bin/mlops-workload",
        )


PATHS = MachinePaths()


def unit_file(settings: ServerSettings, juju_unit: str) -> str:
    """The text of ``label-studio.service`` that runs the core's server with ``settings``."""
    environment = {
        **label_studio.environment(settings),
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
                systemd.exec_start(step) for step in label_studio.setup_steps(settings)
            ],
            "exec_start": systemd.exec_start(label_studio.server_command(settings)),
        },
    )


def metrics_unit_file(settings: ServerSettings, juju_unit: str) -> str:
    """The text of ``label-studio-metrics.service``: the core's metrics exporter.

    Its secrets (the admin's token, for Label Studio's counts) come from the server's
    ``EnvironmentFile``, never from the unit file.
    """
    return systemd.render_unit(
        TEMPLATES,
        METRICS_TEMPLATE,
        {
            "juju_unit": juju_unit,
            "user": PATHS.user,
            "work_dir": settings.data_dir,
            "env_file": settings.secrets_env_path,
            "exec_start": systemd.exec_start(label_studio.metrics_exporter_command(settings)),
        },
    )
