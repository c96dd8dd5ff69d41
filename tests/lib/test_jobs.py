"""Jobs: a one-shot Pebble service per job, its result in its folder, its end a notice.

The jobs run on a real Pebble: the wrapper script runs, records the exit code, marks the job
unreported and calls ``pebble notify`` on the daemon's socket. Most tests share one daemon,
each with a slot of its own, as a charm's slots share its container. The layer's label and
user, and what needs a job to run for as long as a test likes, run in ops.testing.
"""

from __future__ import annotations

import itertools
import json
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import ops
import pytest
from ops import pebble, testing

from mlops_charms import jobs, workload
from mlops_charms.jobs import NOTICE_KEY, Job, JobBusyError, JobRunner, JobSpec
from tests.lib.real_pebble import container_on, custom_notices, pebble_binary, poll, running
from tests.workload.processes import PebbleDaemon

PYTHON = sys.executable
SLOT = "export"


def python_job(code: str, **options: Any) -> JobSpec:
    return JobSpec(kind="export", command=[PYTHON, "-c", code], **options)


def shell_job(script: str, **options: Any) -> JobSpec:
    return JobSpec(kind="export", command=["/bin/sh", "-c", script], **options)


SUCCEEDS = shell_job("""echo '{"rows": 3}'""")


@pytest.fixture
def jobs_dir(tmp_path: Path) -> Path:
    return tmp_path / "storage" / "jobs"


_test_slots = itertools.count()


@pytest.fixture
def shared_daemon(shared_pebble: PebbleDaemon, monkeypatch: pytest.MonkeyPatch) -> PebbleDaemon:
    """The daemon the tests share, with Juju's Pebble client and socket pointed at it."""
    socket = shared_pebble.client.socket_path
    monkeypatch.setattr(
        workload, "JUJU_PEBBLE", workload.PebbleInContainer(pebble_binary(), socket)
    )
    return shared_pebble


@pytest.fixture
def runner(shared_daemon: PebbleDaemon, jobs_dir: Path) -> JobRunner:
    """A slot of the test's own in a container the tests share, as a charm's slots share one."""
    slot = f"test{next(_test_slots)}"
    return JobRunner(container_on(shared_daemon.client), str(jobs_dir), slot=slot)


@pytest.fixture
def own_runner(
    real_container: ops.Container, local_pebble: workload.PebbleInContainer, jobs_dir: Path
) -> JobRunner:
    """A slot in a container of the test's own, for what needs Pebble's services to itself."""
    return JobRunner(real_container, str(jobs_dir), slot=SLOT)


def finished(runner: JobRunner, job: Job) -> Job:
    """The job once its wrapper has exited (at once, normally: see below).

    start() returns once a job that ends within Pebble's 1 s okay delay has ended; on a
    loaded machine the wrapper may still be finishing.
    """

    def wrapper_exited() -> bool:
        return not runner.workload.get_service(runner.service).is_running()

    poll(wrapper_exited, 10, f"the wrapper of job {job.id} to exit")
    recorded = runner.get(job.id)
    assert recorded is not None
    assert recorded.ended
    return recorded


def run_to_end(runner: JobRunner, spec: JobSpec) -> Job:
    return finished(runner, runner.start(spec))


# --- starting --------------------------------------------------------------------------------


def test_start_records_the_job_and_its_parameters(runner: JobRunner, jobs_dir: Path):
    spec = shell_job("echo '{}'", params={"dataset": "cats", "version": "v3"})

    job = runner.start(spec)

    record = json.loads((jobs_dir / job.id / "job.json").read_text())
    assert record == {
        "id": job.id,
        "kind": "export",
        "params": {"dataset": "cats", "version": "v3"},
        "started": job.started,
    }
    assert (job.state, job.params) == ("running", {"dataset": "cats", "version": "v3"})


def test_the_environment_is_private_and_never_in_the_plan(runner: JobRunner, jobs_dir: Path):
    token = "s3cr3t 'quoted' $HOME"
    code = "import json, os; print(json.dumps({'token': os.environ['TOKEN']}))"
    spec = python_job(code, environment={"TOKEN": token})

    job = runner.start(spec)

    env_file = jobs_dir / job.id / "env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert finished(runner, job).result == {"token": token}
    assert "s3cr3t" not in runner.workload.get_plan().to_yaml()
    assert "s3cr3t" not in (jobs_dir / job.id / "job.json").read_text()


def test_the_job_runs_as_the_slots_disabled_service_that_pebble_never_restarts(
    runner: JobRunner,
):
    runner.start(SUCCEEDS)

    service = runner.workload.get_plan().services[runner.service]
    assert service.startup == "disabled"
    assert (service.on_success, service.on_failure) == ("ignore", "ignore")


def test_the_layer_is_jobs_with_the_slot_service_its_user_and_working_dir():
    ctx = testing.Context(ops.CharmBase, meta={"name": "demo", "containers": {"app": {}}})
    state = testing.State(containers={testing.Container("app", can_connect=True)})
    spec = JobSpec(kind="export", command=["export", "--all"], working_dir="/srv/data")

    with ctx(ctx.on.update_status(), state) as manager:
        container = manager.charm.unit.get_container("app")
        JobRunner(container, "/srv/jobs", slot=SLOT, user="app").start(spec)
        out = manager.run()

    [label] = out.get_container("app").layers
    service = out.get_container("app").layers[label].services[f"{SLOT}-job"]
    assert label == jobs.LAYER == "jobs"
    assert (service.user, service.group, service.working_dir) == ("app", "app", "/srv/data")
    assert service.summary == "job: export"
    assert service.command.endswith("export --all")


# --- how a job ends --------------------------------------------------------------------------


def test_a_job_that_prints_a_json_object_succeeds_with_it(runner: JobRunner):
    job = run_to_end(runner, SUCCEEDS)

    assert (job.state, job.exit_code, job.error) == ("succeeded", 0, None)
    assert job.result == {"rows": 3}
    assert job.finished


def test_a_failing_job_gives_its_last_stderr_line_and_exit_code(runner: JobRunner):
    script = "echo 'reading cats' >&2; echo 'error: bucket cats not found' >&2; exit 3"

    job = run_to_end(runner, shell_job(script))

    assert (job.state, job.exit_code) == ("failed", 3)
    assert job.error == "bucket cats not found"
    assert job.result is None


def test_a_failing_job_without_stderr_gives_its_exit_code(runner: JobRunner):
    job = run_to_end(runner, shell_job("exit 4"))

    assert (job.state, job.error) == ("failed", "exit code 4")


@pytest.mark.parametrize("stdout", ["done", "[1, 2]", ""])
def test_a_job_that_prints_no_json_object_fails(runner: JobRunner, stdout: str):
    job = run_to_end(runner, shell_job(f"echo '{stdout}'"))

    assert (job.state, job.exit_code) == ("failed", 0)
    assert job.error == "the job printed no JSON result"


def test_a_job_ending_within_pebbles_okay_delay_is_started_without_error(
    own_runner: JobRunner, real_container: ops.Container
):
    # Pebble fails the start of a service that exits within 1 s; start() must not.
    with pytest.raises(pebble.ChangeError):
        real_container.add_layer("probe", layer_exiting_at_once(), combine=True)
        real_container.start("probe")

    job = own_runner.start(SUCCEEDS)

    assert finished(own_runner, job).state == "succeeded"


def layer_exiting_at_once() -> pebble.LayerDict:
    service = {"override": "replace", "command": "true", "startup": "disabled"}
    service.update({"on-success": "ignore", "on-failure": "ignore"})
    return {"services": {"probe": service}}  # type: ignore[typeddict-item]


def test_a_job_killed_before_it_recorded_its_end_is_lost(runner: JobRunner, jobs_dir: Path):
    # The wrapper dies (a container restart, an OOM kill) before it writes `exit`: the whole
    # service's process group, the wrapper's included, is killed.
    job = runner.start(shell_job("kill -9 0"))

    lost = finished(runner, job)

    assert not (jobs_dir / job.id / "exit").exists()
    assert (lost.state, lost.exit_code) == ("failed", None)
    assert lost.error == "the job ended without recording a result"


def test_the_service_logs_the_jobs_start_its_log_and_its_end(
    runner: JobRunner, shared_daemon: PebbleDaemon, jobs_dir: Path
):
    # The service's output is what Pebble forwards to COS (mlops_charms.log_forwarding).
    job = run_to_end(runner, shell_job("""echo 'step 1 of 2' >&2; echo '{"rows": 3}'"""))

    def logged() -> list[str]:
        logs = subprocess.run(
            [pebble_binary(), "logs", "-n", "all", runner.service],
            env={"PEBBLE_SOCKET": shared_daemon.client.socket_path},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        # "<time> [<service>] <message>": the daemon's slot has run other tests' jobs too.
        messages = [line.split(" ", 2)[-1] for line in logs.splitlines()]
        return [m for m in messages if job.id in m or m == "step 1 of 2"]

    # Pebble reads the service's output as it comes: the last line may be a moment behind.
    messages = poll(lambda: (m := logged()) and "ended" in m[-1] and m, 10, "the end's line")
    assert messages == [
        f"job {job.id} (export): started",
        "step 1 of 2",
        f"job {job.id}: ended, exit code 0",
    ]
    assert (jobs_dir / job.id / "stderr").read_text() == "step 1 of 2\n"
    assert job.result == {"rows": 3}, "the result goes to its file only"


def test_the_end_of_a_job_is_a_notice_naming_it(
    runner: JobRunner, shared_daemon: PebbleDaemon, jobs_dir: Path
):
    job = run_to_end(runner, SUCCEEDS)

    [notice] = custom_notices(shared_daemon, NOTICE_KEY)
    assert notice.last_data == {"job": job.id}
    assert (jobs_dir / job.id / "exit").exists()


# --- one job at a time -----------------------------------------------------------------------


def test_a_job_running_past_the_okay_delay_holds_the_slot_until_it_ends(
    own_runner: JobRunner, pebble_daemon: PebbleDaemon, tmp_path: Path
):
    gate = tmp_path / "go"
    script = f"until [ -e {gate} ]; do sleep 0.05; done; echo '{{\"waited\": true}}'"
    first = own_runner.start(shell_job(script))  # returns after Pebble's 1 s okay delay
    assert running(pebble_daemon) == {f"{SLOT}-job"}

    with pytest.raises(JobBusyError) as busy:
        own_runner.start(SUCCEEDS)
    still = own_runner.wait(first.id, timeout=0.1, poll=0.05)
    gate.touch()
    waited = own_runner.wait(first.id, timeout=10, poll=0.05)

    assert busy.value.job.id == first.id
    assert str(busy.value).startswith(f"job {first.id} (export) is running")
    assert still is not None and still.state == "running"
    assert waited is not None
    assert (waited.state, waited.result) == ("succeeded", {"waited": True})


def test_the_slot_is_free_once_wait_says_the_job_ended(
    real_container: ops.Container,
    pebble_daemon: PebbleDaemon,
    jobs_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    # A notify that takes a while (a loaded node) keeps the wrapper past start()'s 1 s.
    slow_pebble = tmp_path / "slow-pebble"
    slow_pebble.write_text(f'#!/bin/sh\nsleep 3\nexec {pebble_binary()} "$@"\n')
    slow_pebble.chmod(0o755)
    socket = pebble_daemon.client.socket_path
    monkeypatch.setattr(
        workload, "JUJU_PEBBLE", workload.PebbleInContainer(str(slow_pebble), socket)
    )
    runner = JobRunner(real_container, str(jobs_dir), slot=SLOT)
    first = runner.start(SUCCEEDS)
    waited = runner.wait(first.id, timeout=5, poll=0.05)
    assert waited is not None and waited.ended

    second = runner.start(SUCCEEDS)

    assert runner.wait(second.id, timeout=5, poll=0.05) is not None


# --- reporting, listing, pruning -------------------------------------------------------------


def test_unreported_lists_ended_jobs_until_marked_reported(runner: JobRunner):
    first, second = run_to_end(runner, SUCCEEDS), run_to_end(runner, shell_job("exit 2"))

    assert [job.id for job in runner.unreported()] == [first.id, second.id]
    runner.mark_reported(first)
    assert [job.id for job in runner.unreported()] == [second.id]
    runner.mark_reported(first)  # twice: nothing to do
    assert [job.id for job in runner.unreported()] == [second.id]


def test_no_job_ever_started_means_nothing_unreported_listed_or_running(runner: JobRunner):
    assert runner.unreported() == []
    assert runner.list() == []
    assert runner.current() is None
    assert runner.wait("20250101000000-beef", timeout=1) is None


def test_list_gives_every_job_kept_oldest_first(runner: JobRunner, jobs_dir: Path):
    started = [run_to_end(runner, SUCCEEDS).id for _ in range(3)]
    (jobs_dir / "notes").mkdir()  # not a job folder

    assert [job.id for job in runner.list()] == started
    assert runner.get("notes") is None


def test_jobs_beyond_keep_are_pruned_once_reported(
    runner: JobRunner, jobs_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(jobs, "KEEP", 2)
    oldest, unreported, newer = (run_to_end(runner, SUCCEEDS) for _ in range(3))
    for job in (oldest, newer):
        runner.mark_reported(job)

    newest = run_to_end(runner, SUCCEEDS)

    # Beyond the newest 2: `oldest` goes; `unreported` stays until the charm has acted on it.
    assert [job.id for job in runner.list()] == [unreported.id, newer.id, newest.id]
    assert not (jobs_dir / oldest.id).exists()


def test_lost_jobs_beyond_keep_are_pruned_too(
    runner: JobRunner, jobs_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(jobs, "KEEP", 1)
    lost = run_to_end(runner, shell_job("kill -9 0"))  # the wrapper too: see above
    assert lost.error == "the job ended without recording a result"
    runner.mark_reported(lost)  # what the charm does once it has shown it
    run_to_end(runner, SUCCEEDS)

    run_to_end(runner, SUCCEEDS)

    assert not (jobs_dir / lost.id).exists()


def test_jobs_started_within_one_second_are_listed_in_start_order(
    runner: JobRunner, monkeypatch: pytest.MonkeyPatch
):
    moment = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)

    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):
            return moment

    monkeypatch.setattr(jobs, "datetime", Frozen)
    first, second = run_to_end(runner, SUCCEEDS), run_to_end(runner, SUCCEEDS)

    assert [job.id for job in runner.list()] == [first.id, second.id]


def test_summary_shows_the_job_without_its_result():
    job = Job(
        id="20260501120000-0001",
        kind="export",
        started="2026-05-01T12:00:00Z",
        state="failed",
        params={"dataset": "cats"},
        finished="2026-05-01T12:00:09Z",
        exit_code=3,
        error="bucket cats not found",
        result={"rows": 1},
    )

    assert job.summary() == {
        "id": "20260501120000-0001",
        "kind": "export",
        "state": "failed",
        "started": "2026-05-01T12:00:00Z",
        "params": {"dataset": "cats"},
        "finished": "2026-05-01T12:00:09Z",
        "error": "bucket cats not found",
    }


# --- actions ---------------------------------------------------------------------------------


@dataclass
class FakeActionEvent:
    """Records what an action handler tells Juju."""

    results: dict[str, Any] = field(default_factory=dict)
    failure: str | None = None
    logs: list[str] = field(default_factory=list)

    def set_results(self, results: dict[str, Any]) -> None:
        self.results.update(results)

    def fail(self, message: str = "") -> None:
        self.failure = message

    def log(self, message: str) -> None:
        self.logs.append(message)

    @property
    def event(self) -> ops.ActionEvent:
        return cast(ops.ActionEvent, self)


def test_action_waiting_for_a_job_that_ends_leaves_the_results_to_the_caller(runner: JobRunner):
    action = FakeActionEvent()

    job = jobs.start_for_action(action.event, runner, SUCCEEDS, wait=True, timeout=10)

    assert job is not None
    assert (job.state, job.result) == ("succeeded", {"rows": 3})
    assert action.logs == [f"job {job.id} started"]
    assert (action.results, action.failure) == ({}, None)


def test_action_without_pebble_fails_in_one_line(tmp_path: Path):
    unreachable = container_on(pebble.Client(socket_path=str(tmp_path / "gone.socket")))
    action = FakeActionEvent()

    job = jobs.start_for_action(
        action.event,
        JobRunner(unreachable, "/srv/jobs", slot=SLOT),
        SUCCEEDS,
        wait=False,
        timeout=0,
    )

    assert job is None
    assert action.failure is not None
    assert action.failure.startswith("cannot start the job: Could not connect to Pebble")
    assert "\n" not in action.failure


def test_list_action_without_pebble_fails_in_one_line(tmp_path: Path):
    unreachable = container_on(pebble.Client(socket_path=str(tmp_path / "gone.socket")))
    action = FakeActionEvent()

    jobs.list_for_action(action.event, JobRunner(unreachable, "/srv/jobs", slot=SLOT))

    assert action.failure is not None
    assert action.failure.startswith("cannot read the jobs: Could not connect to Pebble")
    assert action.results == {}


# In ops.testing a started job runs until the test says otherwise (nothing is executed).


@pytest.fixture
def fake_ctx() -> testing.Context[ops.CharmBase]:
    return testing.Context(ops.CharmBase, meta={"name": "demo", "containers": {"app": {}}})


def in_hook(fake_ctx: testing.Context[ops.CharmBase]):
    state = testing.State(containers={testing.Container("app", can_connect=True)})
    return fake_ctx(fake_ctx.on.update_status(), state)


def test_action_not_waiting_reports_the_running_job(fake_ctx):
    action = FakeActionEvent()

    with in_hook(fake_ctx) as manager:
        runner = JobRunner(manager.charm.unit.get_container("app"), "/srv/jobs", slot=SLOT)
        job = jobs.start_for_action(action.event, runner, SUCCEEDS, wait=False, timeout=0)

    assert job is not None
    assert action.results == {
        "job": job.id,
        "state": "running",
        "message": "still running: its end shows in list-jobs and in the unit's status",
    }
    assert action.failure is None


def test_wait_gives_up_at_its_timeout_with_the_job_still_running(fake_ctx):
    with in_hook(fake_ctx) as manager:
        runner = JobRunner(manager.charm.unit.get_container("app"), "/srv/jobs", slot=SLOT)
        job = runner.start(SUCCEEDS)

        waited = runner.wait(job.id, timeout=0.2, poll=0.05)

    assert waited is not None
    assert waited.state == "running"


def test_list_action_gives_every_job_newest_first_and_the_running_ones(fake_ctx):
    action = FakeActionEvent()

    with in_hook(fake_ctx) as manager:
        container = manager.charm.unit.get_container("app")
        runner = JobRunner(container, "/srv/jobs", slot=SLOT)
        done = runner.start(JobSpec(kind="export", command=["x"], params={"dataset": "cats"}))
        container.push(f"/srv/jobs/{done.id}/exit", "0 2026-05-01T12:00:09Z\n")
        container.push(f"/srv/jobs/{done.id}/stdout", '{"rows": 3}\n')
        container.stop(f"{SLOT}-job")
        still = runner.start(JobSpec(kind="import", command=["y"]))
        jobs.list_for_action(action.event, runner)

    assert action.failure is None
    assert (action.results["count"], action.results["running"]) == (2, still.id)
    listed = json.loads(action.results["jobs"])
    assert [(entry["id"], entry["state"]) for entry in listed] == [
        (still.id, "running"),
        (done.id, "succeeded"),
    ]
    assert listed[1]["params"] == {"dataset": "cats"}
    assert listed[1]["finished"] == "2026-05-01T12:00:09Z"


def test_the_running_job_is_current(fake_ctx):
    with in_hook(fake_ctx) as manager:
        runner = JobRunner(manager.charm.unit.get_container("app"), "/srv/jobs", slot=SLOT)
        job = runner.start(SUCCEEDS)
        current = runner.current()

    assert current is not None
    assert (current.id, current.state) == (job.id, "running")


def test_action_on_a_busy_slot_fails_naming_the_running_job(fake_ctx):
    action = FakeActionEvent()

    with in_hook(fake_ctx) as manager:
        runner = JobRunner(manager.charm.unit.get_container("app"), "/srv/jobs", slot=SLOT)
        first = runner.start(SUCCEEDS)
        job = jobs.start_for_action(action.event, runner, SUCCEEDS, wait=False, timeout=0)

    assert job is None
    assert action.failure is not None
    assert action.failure.startswith(f"job {first.id} (export) is running")
    assert action.results == {}


def test_a_running_job_beyond_keep_is_not_pruned(fake_ctx, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(jobs, "KEEP", 0)

    with in_hook(fake_ctx) as manager:
        container = manager.charm.unit.get_container("app")
        long_running = JobRunner(container, "/srv/jobs", slot="import").start(SUCCEEDS)
        JobRunner(container, "/srv/jobs", slot=SLOT).start(SUCCEEDS)
        kept = container.exists(f"/srv/jobs/{long_running.id}/job.json")

    assert kept


# --- job folders written by something else than a Pebble slot (a Kubernetes Job's watcher) ---


@pytest.fixture
def records(shared_daemon: PebbleDaemon, jobs_dir: Path) -> jobs.JobRecords:
    return jobs.JobRecords(container_on(shared_daemon.client), str(jobs_dir))


def test_a_recorded_job_runs_until_its_end_is_written(records: jobs.JobRecords, jobs_dir: Path):
    job = records.create("train", {"spec": "s"})
    assert jobs.is_job_id(job.id)
    assert records.get(job.id) == job  # no exit yet: running, whatever runs it
    (jobs_dir / job.id / "stdout").write_text('{"run_id": "r"}\n')
    (jobs_dir / "unreported" / job.id).touch()
    (jobs_dir / job.id / "exit").write_text("0 2026-01-01T00:00:00Z\n")
    ended = records.get(job.id)
    assert ended is not None and ended.state == "succeeded" and ended.result == {"run_id": "r"}
    assert [j.id for j in records.unreported()] == [job.id]


def test_record_end_writes_a_failure_once(records: jobs.JobRecords):
    job = records.create("train", {})
    records.record_end(job.id, 1, stderr="cancelled\n")
    records.record_end(job.id, 0, stdout='{"late": true}')  # too late: the end is recorded
    ended = records.get(job.id)
    assert ended is not None and (ended.state, ended.error) == ("failed", "cancelled")
    assert [j.id for j in records.unreported()] == [job.id]


def test_pruning_keeps_jobs_that_still_run(records: jobs.JobRecords, monkeypatch):
    monkeypatch.setattr(jobs, "KEEP", 1)
    ended = records.create("train", {})
    records.record_end(ended.id, 1)
    records.mark_reported(ended)
    running = records.create("train", {})
    records.create("train", {})  # the oldest, ended and reported, goes
    assert records.get(ended.id) is None
    records.create("train", {})  # the oldest now runs: it stays
    assert records.get(running.id) is not None


def test_action_results_are_hyphenated_with_lists_as_json():
    results = jobs.action_results({"run_id": "r", "per_class": {"a_b": 1}, "items": [1, 2]})
    assert results == {
        "run-id": "r",
        "per-class": {"a-b": "1"},
        "items": "[1, 2]",
        "items-count": "2",
    }
