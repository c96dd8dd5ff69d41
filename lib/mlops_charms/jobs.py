"""Long operations as workload jobs: a one-shot Pebble service per job, its end a Pebble notice.

A hook never waits for work whose time grows with the data (DESIGN §5). The charm starts a
job instead: the job's command runs as the service ``<slot>-job`` of the layer ``jobs`` in
the workload container, records its output and exit code in the job's folder on the unit's
storage, and then records the Pebble custom notice ``NOTICE_KEY``, which reaches the charm as
``pebble-custom-notice``. The charm reads the result, acts on it once and marks it reported.
A slot runs one job at a time; each charm chooses its slots.

The folder of a job, ``<jobs_dir>/<id>/``:

    job.json   kind, parameters (never secrets), start time
    env        mode 0600: the job's environment, secrets included, sourced by its command
    stdout     the command's standard output: one JSON object, by convention
    stderr     its standard error; the last line is the one-line reason of a failure
    exit       the exit code and end time, written last: the job has ended once it exists

``<jobs_dir>/unreported/<id>`` marks a job whose end the charm has not acted on yet (made
just before ``exit``): one directory listing tells a hook whether there is anything to do.

``JobRecords`` reads and writes these folders whatever runs the job. A ``SlotRunner`` starts
them: ``JobRunner`` as Pebble services, ``systemd_jobs.SystemdJobRunner`` as transient systemd
units on a machine. A job that runs elsewhere (a Kubernetes Job) is recorded the same way by
whatever sees it end, so list-jobs, actions and notices work alike.
"""

from __future__ import annotations

import abc
import json
import logging
import re
import shlex
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import ops

from mlops_charms import workload
from mlops_charms.workload_exec import last_line

if TYPE_CHECKING:
    from mlops_charms.host_files import HostFiles

logger = logging.getLogger(__name__)

NOTICE_KEY = "mlops-stack.dev/job-finished"
LAYER = "jobs"
KEEP = 20  # ended and reported jobs kept for list-jobs, per charm
UNREPORTED = "unreported"

JobState = Literal["running", "succeeded", "failed"]
_JOB_ID = re.compile(r"^[0-9]{14}-[0-9]{4}$")


@dataclass(frozen=True)
class JobSpec:
    """What a job runs. ``params`` are shown by list-jobs; ``environment`` stays private."""

    kind: str
    command: Sequence[str]
    params: Mapping[str, str] = field(default_factory=dict)
    environment: Mapping[str, str] = field(default_factory=dict)
    working_dir: str | None = None


@dataclass(frozen=True)
class Job:
    """A job as recorded in its folder."""

    id: str
    kind: str
    started: str
    state: JobState
    params: dict[str, str] = field(default_factory=dict)
    finished: str | None = None
    exit_code: int | None = None
    error: str | None = None
    result: dict[str, Any] | None = None

    @property
    def ended(self) -> bool:
        return self.state != "running"

    def summary(self) -> dict[str, Any]:
        """The job as list-jobs shows it: plain values, no result body."""
        shown: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "started": self.started,
            "params": dict(self.params),
        }
        if self.finished:
            shown["finished"] = self.finished
        if self.error:
            shown["error"] = self.error
        return shown


class JobBusyError(Exception):
    """The slot already runs a job; ``job`` is that job."""

    def __init__(self, job: Job):
        super().__init__(f"job {job.id} ({job.kind}) is running; wait for it (list-jobs)")
        self.job = job


class JobStartError(Exception):
    """The substrate could not start a job; the message is one line."""


class JobRecords:
    """The folders of a charm's jobs on its storage: created, read, listed, acknowledged.

    A job whose folder has no ``exit`` yet runs, unless ``_is_running`` says otherwise.

    Args:
        container: the workload container (the storage is mounted in it), or the machine's
            own files (``host_files.HostFiles``) for a machine charm.
        jobs_dir: where job folders live, on the unit's storage.
        user, group: who owns the folders; None: root.

    """

    def __init__(
        self,
        container: ops.Container | HostFiles,
        jobs_dir: str,
        *,
        user: str | None = None,
        group: str | None = None,
    ):
        self.container = container
        self.jobs_dir = jobs_dir.rstrip("/")
        self.user = user
        self.group = group or user

    # --- writing ----------------------------------------------------------------------------

    def create(
        self,
        kind: str,
        params: Mapping[str, str],
        files: Mapping[str, tuple[str, int]] | None = None,
    ) -> Job:
        """A new job's folder with its ``job.json`` (and ``files``: name -> content, mode)."""
        self._prune()
        job_id = self._new_id()
        folder = f"{self.jobs_dir}/{job_id}"
        started = _now()
        for directory in (self.jobs_dir, f"{self.jobs_dir}/{UNREPORTED}", folder):
            self.container.make_dir(directory, make_parents=True, user=self.user, group=self.group)
        record = {"id": job_id, "kind": kind, "params": dict(params), "started": started}
        for name, (content, mode) in {
            "job.json": (json.dumps(record), 0o644),
            **(files or {}),
        }.items():
            self.container.push(
                f"{folder}/{name}", content, permissions=mode, user=self.user, group=self.group
            )
        return Job(job_id, kind, started, "running", dict(params))

    def record_end(
        self, job_id: str, exit_code: int, *, stdout: str = "", stderr: str = ""
    ) -> None:
        """Record the end of a job that did not record its own (cancelled, or lost), once.

        The same files in the same order as a job's wrapper: output, the unreported mark,
        then ``exit``. A job that has recorded its end already is left as it is.
        """
        folder = f"{self.jobs_dir}/{job_id}"
        if self._read(f"{folder}/exit") is not None:
            return
        for name, content in (("stdout", stdout), ("stderr", stderr)):
            self.container.push(f"{folder}/{name}", content, user=self.user, group=self.group)
        self.container.push(
            f"{self.jobs_dir}/{UNREPORTED}/{job_id}", "", user=self.user, group=self.group
        )
        self.container.push(
            f"{folder}/exit", f"{exit_code} {_now()}\n", user=self.user, group=self.group
        )

    # --- reading ----------------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        """The job ``job_id`` of this folder, or None if there is no such job."""
        folder = f"{self.jobs_dir}/{job_id}"
        try:
            record = json.loads(self.container.pull(f"{folder}/job.json").read())
        except (ops.pebble.PathError, json.JSONDecodeError):
            return None
        ended = self._read(f"{folder}/exit")
        base = {
            "id": job_id,
            "kind": str(record.get("kind", "")),
            "started": str(record.get("started", "")),
            "params": {str(k): str(v) for k, v in dict(record.get("params") or {}).items()},
        }
        if ended is None:
            if self._is_running(job_id):
                return Job(**base, state="running")
            return Job(**base, state="failed", error="the job ended without recording a result")
        code_text, _, finished = ended.strip().partition(" ")
        code = int(code_text) if code_text.lstrip("-").isdigit() else -1
        if code != 0:
            reason = last_line(self._read(f"{folder}/stderr") or "") or f"exit code {code}"
            return Job(**base, state="failed", finished=finished, exit_code=code, error=reason)
        try:
            result = json.loads(self._read(f"{folder}/stdout") or "")
        except json.JSONDecodeError:
            result = None
        if not isinstance(result, dict):
            error = "the job printed no JSON result"
            return Job(**base, state="failed", finished=finished, exit_code=0, error=error)
        return Job(**base, state="succeeded", finished=finished, exit_code=0, result=result)

    def read_file(self, job_id: str, name: str) -> str | None:
        """A file of the job's folder (``log``, ``stderr``...), or None if it has none."""
        return self._read(f"{self.jobs_dir}/{job_id}/{name}")

    def list(self) -> list[Job]:
        """Every job kept, oldest first."""
        jobs = (self.get(job_id) for job_id in self._job_ids())
        return [job for job in jobs if job is not None]

    def unreported(self) -> list[Job]:
        """Ended jobs the charm has not acted on yet, oldest first (one listing when none)."""
        try:
            marks = self.container.list_files(f"{self.jobs_dir}/{UNREPORTED}")
        except ops.pebble.APIError:  # no job ever started
            return []
        jobs = (self.get(mark.name) for mark in sorted(marks, key=lambda m: m.name))
        return [job for job in jobs if job is not None and job.ended]

    def mark_reported(self, job: Job) -> None:
        """Record that the charm has acted on ``job``'s end."""
        path = f"{self.jobs_dir}/{UNREPORTED}/{job.id}"
        if self.container.exists(path):
            self.container.remove_path(path)

    def wait(self, job_id: str, timeout: float, poll: float = 0.5) -> Job | None:
        """Wait up to ``timeout`` seconds for the job to end; the job as it then is."""
        deadline = time.monotonic() + timeout
        job = self.get(job_id)
        while job is not None and not job.ended and time.monotonic() < deadline:
            time.sleep(poll)
            job = self.get(job_id)
        return job

    # --- internals --------------------------------------------------------------------------

    def _is_running(self, job_id: str) -> bool:
        """Whether a job that has not recorded its end still runs (here: until it records it)."""
        del job_id
        return True

    def _job_ids(self) -> list[str]:
        try:
            entries = self.container.list_files(self.jobs_dir)
        except ops.pebble.APIError:
            return []
        folders = (e.name for e in entries if e.type == ops.pebble.FileType.DIRECTORY)
        return sorted(name for name in folders if name[0].isdigit())

    def _new_id(self) -> str:
        """The start time, then a counter: ids sort in start order, within a second too."""
        second = f"{datetime.now(UTC):%Y%m%d%H%M%S}"
        same = [job_id for job_id in self._job_ids() if job_id.startswith(second + "-")]
        counters = [int(job_id.rsplit("-", 1)[1]) for job_id in same if job_id[-4:].isdigit()]
        return f"{second}-{max(counters, default=0) + 1:04d}"

    def _prune(self) -> None:
        """Keep the newest ``KEEP`` jobs; older ones go once reported, or once lost.

        A job without an end of its own that no longer runs was lost (a container restart),
        and goes too; one that still runs stays.
        """
        job_ids = self._job_ids()
        for job_id in job_ids[: max(0, len(job_ids) - KEEP)]:
            if self.container.exists(f"{self.jobs_dir}/{UNREPORTED}/{job_id}"):
                continue
            folder = f"{self.jobs_dir}/{job_id}"
            if self.container.exists(f"{folder}/exit") or not self._is_running(job_id):
                self.container.remove_path(folder, recursive=True)

    def _read(self, path: str) -> str | None:
        try:
            return self.container.pull(path).read()
        except ops.pebble.PathError:
            return None


class SlotRunner(JobRecords, abc.ABC):
    """Starts the jobs of one slot, one at a time, and says which one runs."""

    @abc.abstractmethod
    def start(self, spec: JobSpec) -> Job:
        """Start ``spec``; ``JobBusyError``: the slot is busy; ``JobStartError``: not started."""

    @abc.abstractmethod
    def current(self) -> Job | None:
        """The job this slot runs now, if any."""


class JobRunner(SlotRunner):
    """Starts, reads and lists the jobs of one slot of a workload container.

    Args:
        container: the workload container.
        jobs_dir: where job folders live, on the unit's storage.
        slot: the slot's name; its service is ``<slot>-job``.
        user, group: who the jobs run as (and own their folders); None: root.

    """

    def __init__(
        self,
        container: ops.Container,
        jobs_dir: str,
        *,
        slot: str,
        user: str | None = None,
        group: str | None = None,
    ):
        super().__init__(container, jobs_dir, user=user, group=group)
        self.workload = container  # the container itself: its services and layers too
        self.service = f"{slot}-job"

    # --- starting ---------------------------------------------------------------------------

    def start(self, spec: JobSpec) -> Job:
        """Start ``spec`` in this slot; raise ``JobBusyError`` when a job runs already."""
        current = self.current()
        if current is not None:
            raise JobBusyError(current)
        self._wait_for_the_wrapper()
        env = (workload.secrets_env(spec.environment), 0o600)
        job = self.create(spec.kind, spec.params, {"env": env})
        folder = f"{self.jobs_dir}/{job.id}"
        self.workload.add_layer(LAYER, self._layer(folder, spec), combine=True)
        try:
            self.workload.start(self.service)
        except ops.pebble.ChangeError:
            # "exited quickly": a job that ends within Pebble's 1 s okay delay; it has
            # recorded its own end (or is reported as lost).
            logger.debug("job %s ended at once", job.id)
        return job

    def _layer(self, folder: str, spec: JobSpec) -> ops.pebble.LayerDict:
        notify = shlex.join(workload.JUJU_PEBBLE.notify_command(NOTICE_KEY))
        # Run the command, mark it unreported, record its end, tell the charm. The mark comes
        # first: whoever sees the end (an action waiting on it) sees the mark too, and can
        # clear it. The wrapper itself always succeeds: Pebble neither restarts nor reports it.
        # The service's output, which Pebble forwards (mlops_charms.log_forwarding), is the
        # job's start, its log (stderr, kept in its file too) and its end; its result (stdout)
        # goes to its file only. sh has no pipefail: the exit code crosses the pipe in a file.
        script = (
            'dir="$1"; shift; id=$(basename "$dir"); '
            f'echo "job $id" {shlex.quote(f"({spec.kind}): started")}; '
            '{ . "$dir/env" && "$@" 2>&1 >"$dir/stdout"; echo $? >"$dir/code"; } '
            # No code: the command's shell was killed (or the env would not source).
            '| tee "$dir/stderr"; code=$(cat "$dir/code" 2>/dev/null) || code=1; '
            'rm -f "$dir/code"; echo "job $id: ended, exit code $code"; '
            f': >"$(dirname "$dir")/{UNREPORTED}/$id"; '
            'echo "$code $(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$dir/exit.new" '
            '&& mv "$dir/exit.new" "$dir/exit"; '
            f'{notify} "job=$id" >/dev/null 2>&1; exit 0'
        )
        command = ["/bin/sh", "-c", script, "job", folder, *spec.command]
        service: dict[str, Any] = {
            "override": "replace",
            "summary": f"job: {spec.kind}",
            "command": shlex.join(command),
            "startup": "disabled",
            "on-success": "ignore",
            "on-failure": "ignore",
        }
        if spec.working_dir:
            service["working-dir"] = spec.working_dir
        if self.user:
            service["user"] = self.user
            service["group"] = self.group
        return {"summary": "workload jobs", "services": {self.service: service}}  # type: ignore[typeddict-item]

    # --- reading ----------------------------------------------------------------------------

    def current(self) -> Job | None:
        """The job this slot runs now, if any (one that recorded its end runs no more)."""
        job_id = self._running_id()
        job = self.get(job_id) if job_id else None
        return job if job is not None and not job.ended else None

    # --- internals --------------------------------------------------------------------------

    def _is_running(self, job_id: str) -> bool:
        return self._running_id() == job_id

    def _running_id(self) -> str | None:
        services = self.workload.get_services(self.service)
        info = services.get(self.service)
        if info is None or not info.is_running():
            return None
        command = self.workload.get_plan().services[self.service].command
        words = shlex.split(command)
        # /bin/sh -c SCRIPT job FOLDER COMMAND...: the folder names the job.
        return words[4].rsplit("/", 1)[-1] if len(words) > 4 else None

    def _wait_for_the_wrapper(self, timeout: float = 10.0) -> None:
        """Let an ended job's wrapper exit (it still records its notice): the slot is free.

        Starting a service that is still active does nothing, so a new job would be lost.
        """
        deadline = time.monotonic() + timeout
        while (job_id := self._running_id()) is not None:
            if time.monotonic() > deadline:
                job = self.get(job_id)
                raise JobBusyError(job or Job(job_id, "", "", "running"))
            time.sleep(0.1)


def is_job_id(text: str) -> bool:
    """Whether ``text`` has the form of a job id (``20260101120000-0001``)."""
    return bool(_JOB_ID.match(text))


def started_at(job: Job) -> float:
    """When ``job`` started, as a POSIX time (0 when its record has no readable time)."""
    try:
        return datetime.strptime(job.started, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return 0.0


def _now() -> str:
    return f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}"


# --- what actions do with jobs -------------------------------------------------------------


def start_for_action(
    event: ops.ActionEvent, runner: SlotRunner, spec: JobSpec, *, wait: bool, timeout: float
) -> Job | None:
    """Start ``spec`` for an action; with ``wait``, wait up to ``timeout`` s for its end.

    Returns the job as it then is. A job still running is reported to the action (its id and
    how to follow it); the caller reports an ended one. None: the action failed (said why).
    """
    try:
        job = runner.start(spec)
    except JobBusyError as error:
        event.fail(str(error))
        return None
    except (ops.pebble.Error, ops.ModelError, JobStartError) as error:
        event.fail(f"cannot start the job: {str(error).splitlines()[0]}")
        return None
    event.log(f"job {job.id} started")
    if wait:
        job = runner.wait(job.id, timeout) or job
    if not job.ended:
        event.set_results(
            {
                "job": job.id,
                "state": job.state,
                "message": "still running: its end shows in list-jobs and in the unit's status",
            }
        )
    return job


def list_for_action(event: ops.ActionEvent, runner: JobRecords) -> None:
    """The list-jobs action: every job kept, newest first, as JSON."""
    try:
        listed = runner.list()
    except (ops.pebble.Error, ops.ModelError) as error:
        event.fail(f"cannot read the jobs: {str(error).splitlines()[0]}")
        return
    summaries = [job.summary() for job in reversed(listed)]
    running = [job.id for job in listed if not job.ended]
    event.set_results(
        {"count": len(summaries), "running": ",".join(running), "jobs": json.dumps(summaries)}
    )


def action_results(result: Mapping[str, Any]) -> dict[str, Any]:
    """A job's JSON result as action results: hyphenated keys, lists as JSON text.

    Juju's action results are nested string maps: a list becomes its JSON text beside its
    ``<name>-count``, None an empty string.
    """
    converted: dict[str, Any] = {}
    for key, value in result.items():
        name = str(key).replace("_", "-")
        if isinstance(value, dict):
            converted[name] = action_results(value)
        elif isinstance(value, list):
            converted[name] = json.dumps(value)
            converted[f"{name}-count"] = str(len(value))
        else:
            converted[name] = "" if value is None else str(value)
    return converted


def find_for_action(event: ops.ActionEvent, records: JobRecords, job_id: str) -> Job | None:
    """The job ``job_id`` for an action; None after failing ``event``: there is no such job."""
    job = records.get(job_id)
    if job is None:
        event.fail(f"no job {job_id} (list-jobs shows the jobs)")
    return job


def find_running_for_action(
    event: ops.ActionEvent, records: JobRecords, job_id: str
) -> Job | None:
    """The running job ``job_id``; None after failing ``event``: no such job, or it has ended."""
    job = find_for_action(event, records, job_id)
    if job is not None and job.ended:
        event.fail(f"job {job.id} has ended already ({job.state})")
        return None
    return job


def record_failure(records: JobRecords, job: Job, reason: str) -> None:
    """Record that ``job`` failed for ``reason`` (the charm saw it), and that it is reported."""
    records.record_end(job.id, 1, stderr=reason + "\n")
    records.mark_reported(job)


def record_cancelled(records: JobRecords, job: Job) -> None:
    """Record ``job`` as cancelled by the cancel-job action, before its runner is stopped.

    Recorded first: whatever sees the runner stop finds the end and adds nothing.
    """
    record_failure(records, job, "cancelled by the cancel-job action")


def log_results(job: Job, log: str, lines: int) -> dict[str, str]:
    """The job-logs action's results: the last ``lines`` lines of the job's ``log``."""
    tail = log.splitlines()[-lines:]
    return {"job": job.id, "state": job.state, "lines": str(len(tail)), "log": "\n".join(tail)}
