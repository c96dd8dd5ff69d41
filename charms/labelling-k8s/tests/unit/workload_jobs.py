"""Labelling jobs run the way Pebble runs them in the container, for ops.testing.

ops.testing's Pebble marks a started service active and runs nothing. Here the job's service
runs for real: the command line the charm put in the plan (``JobRunner``'s wrapper script,
verbatim) is run by ``/bin/sh`` on this machine with three container paths mapped to this
machine's: the storage mount (the test's folder), ``mlops-workload`` (a fake printing the
outcome the test set for the command, as the real CLI prints it) and Pebble's client (a fake
that records the notice the wrapper sends). So a job's folder ends as in the container —
``stdout``, ``stderr``, ``exit``, the ``unreported`` mark — and its end is a custom notice.

When a job ends is the test's choice, as Pebble's timing would decide it:

- ``AT_START``: within Pebble's 1 s okay delay, so ``Container.start`` fails "exited quickly";
- ``WHILE_WAITED``: after start returned, while an action polls for it (its first poll);
- ``LATER``: it keeps running until the test ends it between hooks (``end``).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import shlex
import subprocess
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import ops
import pytest
from ops import pebble, testing

from mlops_charms import jobs, workload

Ending = Literal["at-start", "while-waited", "later"]
AT_START: Ending = "at-start"
WHILE_WAITED: Ending = "while-waited"
LATER: Ending = "later"

CONTAINER = "label-studio"
SERVICE = "labelling-job"
WORKLOAD = "/opt/mlops/bin/mlops-workload"

# `mlops-workload`: records the environment it sees, prints what the test set, exits with it.
_FAKE_WORKLOAD = """#!/bin/sh
env -0 > "$MLOPS_FAKE_RECORD"
printf '%s' "$MLOPS_FAKE_STDOUT"
printf '%s' "$MLOPS_FAKE_STDERR" >&2
exit "$MLOPS_FAKE_CODE"
"""
# `pebble notify KEY k=v...`: appends "KEY k=v..." to a file, on Juju's socket only.
_FAKE_PEBBLE = """#!/bin/sh
[ "$1" = notify ] && [ "$PEBBLE_SOCKET" = {socket} ] || exit 1
shift
printf '%s\\n' "$*" >> {notices}
"""


@dataclass(frozen=True)
class Outcome:
    """What ``mlops-workload labelling <command>`` prints and exits with."""

    stdout: str = ""
    stderr: str = ""
    exit_code: int = 0
    ends: Ending = AT_START


@dataclass
class JobRun:
    """One job the charm started: its command in the container, what the process saw."""

    id: str
    command: list[str]
    folder: Path
    working_dir: str | None
    environment: dict[str, str] = field(default_factory=dict)
    ended: bool = False


class WorkloadJobs:
    """The labelling jobs of one test: their outcomes, runs and notices."""

    def __init__(self, container_data_dir: str, data_dir: Path, scratch: Path):
        self.container_data_dir = container_data_dir.rstrip("/")
        self.data_dir = data_dir
        scratch.mkdir(parents=True, exist_ok=True)
        self._scratch = scratch
        self._notices_file = scratch / "notices"
        self._workload = scratch / "mlops-workload"
        self._workload.write_text(_FAKE_WORKLOAD)
        self._pebble = scratch / "pebble"
        self._pebble.write_text(
            _FAKE_PEBBLE.format(
                socket=shlex.quote(workload.JUJU_PEBBLE.socket),
                notices=shlex.quote(str(self._notices_file)),
            )
        )
        for program in (self._workload, self._pebble):
            program.chmod(0o755)
        self.outcomes: dict[str, Outcome] = {}
        self.runs: list[JobRun] = []
        self._waited_for: list[tuple[ops.Container, JobRun, list[str]]] = []

    # --- what the test sets -----------------------------------------------------------------

    def succeeds(self, command: str, result: dict, *, ends: Ending = AT_START) -> None:
        """``command`` prints ``result`` as the CLI does (one JSON line) and exits 0."""
        self.outcomes[command] = Outcome(stdout=json.dumps(result) + "\n", ends=ends)

    def fails(
        self, command: str, reason: str, *, exit_code: int = 1, ends: Ending = AT_START
    ) -> None:
        """``command`` fails as the CLI does: ``error: <reason>`` last on stderr."""
        stderr = f"working...\nerror: {reason}\n"
        self.outcomes[command] = Outcome(stderr=stderr, exit_code=exit_code, ends=ends)

    def prints(self, command: str, stdout: str, *, ends: Ending = AT_START) -> None:
        """``command`` exits 0 after printing ``stdout`` verbatim."""
        self.outcomes[command] = Outcome(stdout=stdout, ends=ends)

    # --- what happened ----------------------------------------------------------------------

    @property
    def last(self) -> JobRun:
        assert self.runs, "no job was started"
        return self.runs[-1]

    def notices(self) -> list[tuple[str, dict[str, str]]]:
        """Every notice the wrappers sent: key and data."""
        if not self._notices_file.exists():
            return []
        sent = []
        for line in self._notices_file.read_text().splitlines():
            key, *pairs = line.split(" ")
            sent.append((key, dict(pair.split("=", 1) for pair in pairs)))
        return sent

    # --- ending jobs ------------------------------------------------------------------------

    def end(self, state: testing.State) -> tuple[testing.State, testing.Notice]:
        """End the job ``state``'s container runs; the state after it, with its notice."""
        container = state.get_container(CONTAINER)
        assert container.service_statuses.get(SERVICE) == pebble.ServiceStatus.ACTIVE, (
            "no job is running"
        )
        run, words = self._run_for(container.plan.services[SERVICE])
        self._run_wrapper(run, words)
        statuses = {**container.service_statuses, SERVICE: pebble.ServiceStatus.INACTIVE}
        container = dataclasses.replace(container, service_statuses=statuses)
        return self.deliver(dataclasses.replace(state, containers={container}))

    def deliver(self, state: testing.State) -> tuple[testing.State, testing.Notice]:
        """``state`` with the last notice a job sent, as Pebble keeps it (one per key)."""
        sent = self.notices()
        assert sent, "no job sent a notice"
        key, data = sent[-1]
        container = state.get_container(CONTAINER)
        previous = [n for n in container.notices if n.key == key]
        now = datetime.datetime.now(datetime.UTC)
        if previous:
            notice = dataclasses.replace(
                previous[0],
                last_occurred=now,
                last_repeated=now,
                occurrences=previous[0].occurrences + 1,
                last_data=data,
            )
        else:
            notice = testing.Notice(key, last_data=data)
        notices = [*(n for n in container.notices if n.key != key), notice]
        container = dataclasses.replace(container, notices=notices)
        return dataclasses.replace(state, containers={container}), notice

    # --- the simulated Pebble ---------------------------------------------------------------

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Run jobs when the charm starts their service; poll without sleeping."""
        original_start = ops.Container.start
        fake = self

        def start(container: ops.Container, *names: str) -> None:
            original_start(container, *names)
            if container.name == CONTAINER and SERVICE in names:
                fake._started(container)

        monkeypatch.setattr(ops.Container, "start", start)
        clock = types.SimpleNamespace(monotonic=jobs.time.monotonic, sleep=self._sleep)
        monkeypatch.setattr(jobs, "time", clock)

    def _started(self, container: ops.Container) -> None:
        run, words = self._run_for(container.get_plan().services[SERVICE])
        ends = self._outcome(run).ends
        if ends == AT_START:
            self._run_wrapper(run, words)
            container.pebble.stop_services([SERVICE])  # the process is gone
            raise _exited_quickly()
        if ends == WHILE_WAITED:
            self._waited_for.append((container, run, words))

    def _sleep(self, _seconds: float) -> None:
        assert self._waited_for, (
            "an action waits for a job this test never ends: choose when it ends"
        )
        container, run, words = self._waited_for.pop(0)
        self._run_wrapper(run, words)
        container.pebble.stop_services([SERVICE])

    def _run_for(self, service: pebble.Service) -> tuple[JobRun, list[str]]:
        words = shlex.split(service.command)
        # /bin/sh -c SCRIPT job FOLDER COMMAND...: what JobRunner._layer builds.
        assert words[:2] == ["/bin/sh", "-c"] and words[3] == "job", words
        folder, command = words[4], words[5:]
        job_id = folder.rsplit("/", 1)[-1]
        for run in self.runs:
            if run.id == job_id:
                return run, words
        run = JobRun(job_id, command, self._host_path(folder), service.working_dir or None)
        self.runs.append(run)
        return run, words

    def _outcome(self, run: JobRun) -> Outcome:
        words = run.command
        if words[:2] == ["/bin/sh", "-c"]:  # steps (a restore's): the first is the workload's
            words = shlex.split(words[2].split(" && ")[0])
        assert words[0] == WORKLOAD and words[1] in ("labelling", "backup"), run.command
        # `labelling <command>` by its command; `backup <command>` as "backup <command>".
        command = words[2] if words[1] == "labelling" else " ".join(words[1:3])
        assert command in self.outcomes, f"the test set no outcome for {command!r}"
        return self.outcomes[command]

    def _run_wrapper(self, run: JobRun, words: list[str]) -> None:
        assert not run.ended, f"job {run.id} ended twice"
        outcome = self._outcome(run)
        script = words[2]
        assert workload.JUJU_PEBBLE.binary in script, "the wrapper no longer notifies Pebble"
        script = script.replace(workload.JUJU_PEBBLE.binary, str(self._pebble))
        record = self._scratch / f"{run.id}.env"
        environment = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "MLOPS_FAKE_RECORD": str(record),
            "MLOPS_FAKE_STDOUT": outcome.stdout,
            "MLOPS_FAKE_STDERR": outcome.stderr,
            "MLOPS_FAKE_CODE": str(outcome.exit_code),
        }
        subprocess.run(
            [
                "/bin/sh",
                "-c",
                script,
                "job",
                str(run.folder),
                str(self._workload),
                *run.command[1:],
            ],
            cwd=self._host_path(run.working_dir) if run.working_dir else self.data_dir,
            env=environment,
            check=True,
            timeout=30,
        )
        seen = dict(
            entry.split("=", 1) for entry in record.read_text().split("\0") if "=" in entry
        )
        run.environment = {k: v for k, v in seen.items() if not k.startswith("MLOPS_FAKE_")}
        run.ended = True

    def _host_path(self, path: str) -> Path:
        if path == self.container_data_dir:
            return self.data_dir
        prefix = f"{self.container_data_dir}/"
        assert path.startswith(prefix), f"{path} is not on the unit's storage"
        return self.data_dir / path.removeprefix(prefix)


def _exited_quickly() -> pebble.ChangeError:
    now = datetime.datetime.now(datetime.UTC)
    err = (
        "cannot perform the following tasks:\n"
        f'- Start service "{SERVICE}" (cannot start service: exited quickly with code 0)'
    )
    change = pebble.Change(
        id=pebble.ChangeID("1"),
        kind="start",
        summary=f'Start service "{SERVICE}"',
        status="Error",
        tasks=[],
        ready=True,
        err=err,
        spawn_time=now,
        ready_time=now,
    )
    return pebble.ChangeError(err, change)
