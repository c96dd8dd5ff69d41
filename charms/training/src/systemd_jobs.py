"""Training jobs as transient systemd services: the unit file, and starting, stopping, reading.

Nothing here knows about Juju. A run (the core's command and environment,
``mlops_charms.training``) becomes ``mlops-training-job-<id>.service`` in ``/run/systemd/system``
(runtime units: gone at reboot), rendered from ``templates/job.service.j2`` with charmhelpers'
jinja2 ``render``: the GPUs it was given as ``CUDA_VISIBLE_DEVICES``, ``MemoryMax``,
``RuntimeMaxSec``, ``Restart=no``, its log in the journal, its credentials in the job folder's
``env`` (0600, an ``EnvironmentFile``, never in the unit). Its ``ExecStopPost`` runs
``job_ended.py``, which records the end in the job's folder (``mlops_charms.jobs`` layout) and
dispatches the charm's ``job-ended`` event through ``juju-exec``.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from charmhelpers.core import host
from charmhelpers.core.templating import render

from mlops_charms.host_files import HostFiles
from mlops_charms.jobs import JobRecords
from mlops_charms.systemd import is_active, quote, reason, systemctl

TEMPLATES = Path(__file__).resolve().parent / "templates"
TEMPLATE = "job.service.j2"
UNIT_PREFIX = "mlops-training-job-"
JOB_ENDED_SCRIPT = Path(__file__).resolve().parent / "job_ended.py"
MEMORY_MAX = re.compile(r"^([1-9][0-9]*[KMGT]?|[1-9][0-9]?%|100%|infinity)$")
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9/._@+-]*$")


@dataclass(frozen=True)
class MachinePaths:
    """Where the machine keeps what the charm installs and runs; the tests point these away."""

    units_dir: str = "/run/systemd/system"
    jobs_dir: str = "/var/lib/mlops-training/jobs"
    venv: str = "/opt/mlops-training/venv"
    # Outside the charm's folder: a job that ends during an upgrade still finds its script.
    scripts_dir: str = "/usr/local/lib/mlops-training"
    python: str = "/usr/bin/python3"
    juju_exec: str = "/usr/bin/juju-exec"
    user: str = "mlops-training"

    @property
    def mlops_workload(self) -> str:
        return f"{self.venv}/bin/mlops-workload"

    @property
    def job_ended(self) -> str:
        return f"{self.scripts_dir}/job_ended.py"


PATHS = MachinePaths()


def unit_name(job_id: str) -> str:
    """The systemd unit of a job."""
    return f"{UNIT_PREFIX}{job_id}.service"


@dataclass(frozen=True)
class JobUnit:
    """Everything the unit file of one job says."""

    job_id: str
    kind: str
    juju_unit: str
    command: Sequence[str]
    settings: Mapping[str, str]
    gpus: Sequence[int]
    memory_max: str = ""
    runtime_max_sec: int = 86400

    @property
    def name(self) -> str:
        return unit_name(self.job_id)

    @property
    def folder(self) -> str:
        return f"{PATHS.jobs_dir}/{self.job_id}"

    def context(self) -> dict[str, object]:
        """The template's variables."""
        for path in (self.folder, PATHS.python, PATHS.job_ended, PATHS.juju_exec):
            if not _SAFE_PATH.match(path):
                raise ValueError(f"unsafe path for a unit file: {path!r}")
        if self.memory_max and not MEMORY_MAX.match(self.memory_max):
            raise ValueError(f"not a MemoryMax value: {self.memory_max!r}")
        stop_post = [
            PATHS.python,
            PATHS.job_ended,
            "--job-dir",
            self.folder,
            "--unit",
            self.juju_unit,
            "--juju-exec",
            PATHS.juju_exec,
            "--journal-unit",
            self.name,
        ]
        return {
            "job_id": self.job_id,
            "kind": self.kind,
            "juju_unit": self.juju_unit,
            "unit_name": self.name.removesuffix(".service"),
            "user": PATHS.user,
            "work_dir": f"{self.folder}/work",
            "env_file": f"{self.folder}/env",
            "output_file": f"{self.folder}/output",
            "environment": [quote(f"{k}={v}") for k, v in sorted(self.settings.items())],
            "cuda_visible_devices": ",".join(map(str, self.gpus)),
            "exec_start": " ".join(quote(word) for word in self.command),
            "exec_stop_post": " ".join(stop_post),
            "memory_max": self.memory_max,
            "runtime_max_sec": self.runtime_max_sec,
        }

    def render(self) -> Path:
        """Write the unit file (charmhelpers' jinja2 ``render``); its path."""
        target = Path(PATHS.units_dir) / self.name
        render(TEMPLATE, str(target), self.context(), perms=0o644, templates_dir=str(TEMPLATES))
        return target


class SystemdJobRecords(JobRecords):
    """The job folders on this machine; a job runs while its systemd unit is active."""

    def __init__(self) -> None:
        super().__init__(HostFiles(), PATHS.jobs_dir)

    def _is_running(self, job_id: str) -> bool:
        return is_active(unit_name(job_id))


def start(job: JobUnit) -> None:
    """Render the job's unit and start it; raise ``RuntimeError`` with systemd's reason."""
    job.render()
    reload = systemctl("daemon-reload")
    if reload.returncode != 0:
        raise RuntimeError(f"systemctl daemon-reload failed: {reason(reload)}")
    if not host.service_start(job.name):
        raise RuntimeError(f"systemd did not start {job.name}: see journalctl -u {job.name}")


def stop(job_id: str) -> bool:
    """Ask systemd to stop the job (without waiting: its ExecStopPost dispatches to the charm)."""
    return systemctl("stop", "--no-block", unit_name(job_id)).returncode == 0


def remove_unit_file(job_id: str) -> bool:
    """Remove an ended job's unit file (its journal stays); whether there was one."""
    path = Path(PATHS.units_dir) / unit_name(job_id)
    if not path.exists():
        return False
    path.unlink()
    return True


def journal(job_id: str, lines: int) -> str:
    """The job's log: the last ``lines`` lines the journal has of its unit."""
    completed = subprocess.run(
        ["journalctl", "--unit", unit_name(job_id), "--lines", str(lines), "-o", "cat", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"journalctl failed: {reason(completed)}")
    return completed.stdout
