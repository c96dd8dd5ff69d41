"""Where the training charm keeps what it installs and runs on the machine; tests point it away.

The runs themselves are transient systemd services started by the shared machine job runner
(``mlops_charms.systemd_jobs``); this module says only where training's live.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlops_charms.systemd_jobs import JobPaths


@dataclass(frozen=True)
class MachinePaths:
    """The machine's paths for training: its jobs, its venv, the programs a job's unit runs."""

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
    def jobs(self) -> JobPaths:
        return JobPaths(
            jobs_dir=self.jobs_dir,
            unit_prefix="mlops-training-job-",
            user=self.user,
            units_dir=self.units_dir,
            scripts_dir=self.scripts_dir,
            python=self.python,
            juju_exec=self.juju_exec,
        )


PATHS = MachinePaths()


def unit_name(job_id: str) -> str:
    """The systemd unit of a training job."""
    return PATHS.jobs.unit_name(job_id)
