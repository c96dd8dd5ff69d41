"""Jobs as transient systemd services, for every machine charm: the job interface of ``jobs``.

A machine charm's long operation (DESIGN §5) runs as ``<unit_prefix><id>.service`` in
``/run/systemd/system`` (runtime units: gone at reboot), rendered from ``UNIT_TEMPLATE``
(jinja2): the job's command as ``ExecStart``, its plain settings as ``Environment=`` lines, its
secrets in the job folder's ``env`` (0600, the ``EnvironmentFile``, never in the unit), its
result (stdout) in the job folder's ``output``, its log in the journal, ``Restart=no``, and
optional limits (the GPUs it was given, ``MemoryMax``, ``RuntimeMaxSec``). Its ``ExecStopPost``
runs ``job_ended.py`` as root, which records the end in the job's folder (the ``jobs`` layout,
so ``JobRecords`` reads it as on Kubernetes) and dispatches the charm's ``job-ended`` event
through ``juju-exec``: the machine's counterpart of a Pebble job's custom notice.

``SystemdJobRunner`` is a ``jobs.SlotRunner``: a charm's core starts, lists, waits for and reports
jobs the same way on either substrate.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import ops
from charmhelpers.core import host

from mlops_charms import job_ended, machine
from mlops_charms.host_files import HostFiles
from mlops_charms.jobs import Job, JobBusyError, JobSpec, JobStartError, SlotRunner, record_failure
from mlops_charms.systemd import (
    env_file,
    exec_start,
    is_active,
    quote,
    reason,
    render_source,
    systemctl,
)

JOB_ENDED_SCRIPT = Path(job_ended.__file__)
MEMORY_MAX = re.compile(r"^([1-9][0-9]*[KMGT]?|[1-9][0-9]?%|100%|infinity)$")
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9/._@+-]*$")

UNIT_TEMPLATE = """\
# A job of {{ juju_unit }} ({{ kind }}), rendered by its charm. Transient: it lives in /run (gone
# at reboot), runs once and is never restarted; its end is recorded by ExecStopPost.
[Unit]
Description=MLOps job {{ job_id }} ({{ kind }}) of {{ juju_unit }}
After=network-online.target
Wants=network-online.target

[Service]
Type=exec
Restart=no
User={{ user }}
Group={{ user }}
WorkingDirectory={{ work_dir }}
# Plain settings only: the credentials are in the EnvironmentFile, mode 0600, root's.
EnvironmentFile={{ env_file }}
{% for assignment in environment -%}
Environment={{ assignment }}
{% endfor -%}
{% if cuda_visible_devices is not none -%}
Environment=CUDA_VISIBLE_DEVICES={{ cuda_visible_devices }}
{% endif -%}
ExecStart={{ exec_start }}
# The result (one JSON line) goes to a file; the log (stderr) to the journal (job-logs).
StandardOutput=file:{{ output_file }}
StandardError=journal
SyslogIdentifier={{ unit_name }}
{% if memory_max -%}
MemoryMax={{ memory_max }}
{% endif -%}
RuntimeMaxSec={{ runtime_max_sec }}
TimeoutStopSec=120
KillMode=control-group
# '+': with full privileges, as root, whatever User= says: it writes the job's folder and
# dispatches the charm's job-ended event through juju-exec.
ExecStopPost=+{{ exec_stop_post }}
"""


class JobEndedEvent(ops.EventBase):
    """A job's ExecStopPost dispatched ``hooks/job-ended`` (through juju-exec)."""


class MachineJobEvents(ops.CharmEvents):
    """A machine charm's events, with ``job_ended``: ``JUJU_DISPATCH_PATH=hooks/job-ended``."""

    job_ended = ops.EventSource(JobEndedEvent)


@dataclass(frozen=True)
class JobPaths:
    """Where a charm's jobs live on the machine and who runs them; the tests point these away."""

    jobs_dir: str
    unit_prefix: str
    user: str = "root"
    units_dir: str = "/run/systemd/system"
    # Outside the charm's folder: a job that ends during an upgrade still finds its script.
    scripts_dir: str = "/usr/local/lib/mlops-jobs"
    python: str = "/usr/bin/python3"
    juju_exec: str = "/usr/bin/juju-exec"

    @property
    def job_ended(self) -> str:
        return f"{self.scripts_dir}/job_ended.py"

    def unit_name(self, job_id: str) -> str:
        """The systemd unit of a job."""
        return f"{self.unit_prefix}{job_id}.service"


class ServiceHost(Protocol):
    """What a machine charm's paths say of its service's user and its jobs' folders."""

    @property
    def user(self) -> str: ...
    @property
    def python(self) -> str: ...
    @property
    def jobs_units_dir(self) -> str: ...
    @property
    def jobs_scripts_dir(self) -> str: ...


def storage_job_paths(data_dir: str, host: ServiceHost, *, unit_prefix: str) -> JobPaths:
    """The jobs of a service whose state is on its storage: recorded there, run as its user."""
    return JobPaths(
        jobs_dir=f"{data_dir}/jobs",
        unit_prefix=unit_prefix,
        user=host.user,
        units_dir=host.jobs_units_dir,
        scripts_dir=host.jobs_scripts_dir,
        python=host.python,
    )


@dataclass(frozen=True)
class JobLimits:
    """What a job may use: the GPUs it was given (None: not a GPU job), memory, time."""

    gpus: Sequence[int] | None = None
    memory_max: str = ""
    runtime_max_sec: int = 86400


@dataclass(frozen=True)
class JobUnit:
    """Everything the unit file of one job says."""

    paths: JobPaths
    job_id: str
    kind: str
    juju_unit: str
    command: Sequence[str]
    settings: Mapping[str, str] = field(default_factory=dict)
    working_dir: str | None = None
    limits: JobLimits = JobLimits()

    @property
    def name(self) -> str:
        return self.paths.unit_name(self.job_id)

    @property
    def folder(self) -> str:
        return f"{self.paths.jobs_dir}/{self.job_id}"

    @property
    def scratch(self) -> str:
        """The job's own folder to work in, removed when it ends."""
        return f"{self.folder}/work"

    def context(self) -> dict[str, object]:
        """The template's variables."""
        paths = self.paths
        for path in (self.folder, paths.python, paths.job_ended, paths.juju_exec):
            if not _SAFE_PATH.match(path):
                raise ValueError(f"unsafe path for a unit file: {path!r}")
        if self.limits.memory_max and not MEMORY_MAX.match(self.limits.memory_max):
            raise ValueError(f"not a MemoryMax value: {self.limits.memory_max!r}")
        stop_post = [
            paths.python,
            paths.job_ended,
            "--job-dir",
            self.folder,
            "--unit",
            self.juju_unit,
            "--juju-exec",
            paths.juju_exec,
            "--journal-unit",
            self.name,
        ]
        gpus = self.limits.gpus
        return {
            "job_id": self.job_id,
            "kind": self.kind,
            "juju_unit": self.juju_unit,
            "unit_name": self.name.removesuffix(".service"),
            "user": paths.user,
            "work_dir": self.working_dir or self.scratch,
            "env_file": f"{self.folder}/env",
            "output_file": f"{self.folder}/output",
            "environment": [quote(f"{k}={v}") for k, v in sorted(self.settings.items())],
            "cuda_visible_devices": None if gpus is None else ",".join(map(str, gpus)),
            "exec_start": exec_start(list(self.command)),
            "exec_stop_post": " ".join(stop_post),
            "memory_max": self.limits.memory_max,
            "runtime_max_sec": self.limits.runtime_max_sec,
        }

    def text(self) -> str:
        """The unit file's text."""
        return render_source(UNIT_TEMPLATE, self.context())

    def write(self) -> Path:
        """Write the unit file; its path."""
        target = Path(self.paths.units_dir) / self.name
        machine.write_if_changed(str(target), self.text(), owner="root", perms=0o644)
        return target


def install(paths: JobPaths) -> None:
    """The jobs folder and the ExecStopPost script (root's, outside the charm); idempotent."""
    host.mkdir(paths.jobs_dir, perms=0o755)
    host.mkdir(paths.scripts_dir, perms=0o755)
    machine.write_if_changed(
        paths.job_ended, JOB_ENDED_SCRIPT.read_text(), owner="root", perms=0o755
    )


def start_unit(unit: JobUnit) -> None:
    """Write the job's unit and start it; ``JobStartError`` with systemd's reason."""
    try:
        unit.write()
    except (OSError, ValueError) as error:
        raise JobStartError(f"cannot write {unit.name}: {error}") from None
    reload = systemctl("daemon-reload")
    if reload.returncode != 0:
        raise JobStartError(f"systemctl daemon-reload failed: {reason(reload)}")
    if not host.service_start(unit.name):
        raise JobStartError(f"systemd did not start {unit.name}: see journalctl -u {unit.name}")


class SystemdJobRunner(SlotRunner):
    """The jobs of one charm on this machine; a job runs while its systemd unit is active.

    With a ``slot`` (its name), its jobs run one at a time: ``start`` refuses while one runs.
    Without, they run side by side (training's runs share out the GPUs instead).
    """

    def __init__(self, paths: JobPaths, *, juju_unit: str = "", slot: str | None = None):
        super().__init__(HostFiles(), paths.jobs_dir)
        self.paths = paths
        self.juju_unit = juju_unit
        self.slot = slot

    # --- starting ---------------------------------------------------------------------------

    def start(self, spec: JobSpec, limits: JobLimits | None = None) -> Job:
        """Record ``spec``'s job and start its unit; ``JobBusyError``, ``JobStartError``."""
        if self.slot is not None:
            current = self.current()
            if current is not None:
                raise JobBusyError(current)
        job = self.create(spec.kind, spec.params, {"env": (env_file(spec.environment), 0o600)})
        unit = JobUnit(
            paths=self.paths,
            job_id=job.id,
            kind=spec.kind,
            juju_unit=self.juju_unit,
            command=spec.command,
            working_dir=spec.working_dir,
            limits=limits or JobLimits(),
        )
        self.start_recorded(job, unit)
        return job

    def start_recorded(self, job: Job, unit: JobUnit) -> None:
        """Start the unit of ``job``, recorded already; ``JobStartError``: it did not start.

        A job that did not start is recorded as failed, so list-jobs says why it never ran.
        """
        try:
            Path(unit.scratch).mkdir()
            host.chownr(unit.scratch, self.paths.user, self.paths.user)
            start_unit(unit)
        except (JobStartError, OSError) as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            record_failure(self, job, reason)
            raise JobStartError(reason) from None

    def current(self) -> Job | None:
        """The newest job that runs, if any."""
        running = [job for job in self.list() if not job.ended]
        return running[-1] if running else None

    # --- after the end ----------------------------------------------------------------------

    def finish(self, job: Job) -> None:
        """Remove a reported job's unit file (its journal stays)."""
        path = Path(self.paths.units_dir) / self.paths.unit_name(job.id)
        if path.exists():
            path.unlink()
            systemctl("daemon-reload")

    def record_lost(self) -> None:
        """Record as failed the jobs whose unit stopped without recording an end (a reboot)."""
        for job in self.list():
            if job.state == "failed" and job.exit_code is None and job.finished is None:
                self.record_end(
                    job.id, 1, stderr="its systemd unit is gone and its end was not recorded\n"
                )

    def stop(self, job_id: str) -> bool:
        """Ask systemd to stop the job, without waiting: its ExecStopPost dispatches job-ended.

        A hook holds Juju's lock, which that dispatch waits for.
        """
        return systemctl("stop", "--no-block", self.paths.unit_name(job_id)).returncode == 0

    def journal(self, job_id: str, lines: int) -> str:
        """The job's log: the last ``lines`` lines the journal has of its unit."""
        completed = subprocess.run(
            [
                "journalctl",
                "--unit",
                self.paths.unit_name(job_id),
                "--lines",
                str(lines),
                "-o",
                "cat",
                "-q",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if completed.returncode != 0:
            raise RuntimeError(f"journalctl failed: {reason(completed)}")
        return completed.stdout

    def _is_running(self, job_id: str) -> bool:
        return is_active(self.paths.unit_name(job_id))
