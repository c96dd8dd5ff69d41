"""Helpers for data-versioning-k8s's unit tests: the workload's fakes and the relation builders.

The fakes answer as the real things do (tests/workload/registry runs those):

- ``mlops-workload dataset ...`` prints one JSON document, or ``error: why`` on one line of
  stderr and exits 1 (workload/src/mlops_workload/cli.py);
- the bootstrap (``/bin/sh <storage>/conf/bootstrap.sh``) prints the commit it leaves;
- a job ends as the wrapper of ``JobRunner._layer`` (lib/mlops_charms/jobs.py) ends it: its
  command's stdout and stderr in the job's folder, then ``exit`` ("<code> <time>"), then the
  ``unreported/<id>`` marker and the Pebble notice; Pebble then shows the one-shot service
  inactive (``on-success: ignore``);
- git's tags and s3-integrator's databags are tests/registry_relations.py's (shared with the
  machine charm's tests);
- the approach charm's databag is written with the interface's own model and writer
  (lib/mlops_charms/approach.py, databags.write_databag), as charms/mlops-approach does.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import ops
from ops import pebble, testing

import charm
from mlops_charms import jobs, registry, registry_server
from tests.registry_relations import CA_CERT as CA_CERT
from tests.registry_relations import COMMIT as COMMIT
from tests.registry_relations import ENDPOINT as ENDPOINT
from tests.registry_relations import S3_KEYS as S3_KEYS
from tests.registry_relations import consumer_relation as consumer_relation
from tests.registry_relations import integrator_1 as integrator_1
from tests.registry_relations import integrator_2 as integrator_2
from tests.registry_relations import peer_data as peer_data
from tests.registry_relations import provided as provided
from tests.registry_relations import push_tags as push_tags
from tests.registry_relations import repository as repository
from tests.registry_relations import s3_relation as s3_relation

MODEL = "mlops"
APP = "data-versioning-k8s"
STATE_DIR = "/var/lib/registry"
HOST = f"{APP}.{MODEL}.svc.cluster.local"
WORKLOAD = "/bin/mlops-workload"
BOOTSTRAP_COMMAND = ("/bin/sh", f"{STATE_DIR}/conf/bootstrap.sh")
JOB_SERVICE = f"{registry_server.JOB_SLOT}-job"
SERVICES = {
    registry.GIT_SERVICE,
    registry.S3_SERVICE,
    registry.S3_READ_ONLY_SERVICE,
    registry.METRICS_SERVICE,
}
WRITER_PASSWORD = "writer-password-0123456789abcdef"
WRITER_KEYS = {"access-key": "mlopsWriterKey0123", "secret-key": "writer-secret-key-0123456789"}


# --- the registry container's commands ------------------------------------------------------


def bootstrap_exec(*, fail: str = "") -> testing.Exec:
    """The bootstrap script: prints the commit it leaves, or fails as ``set -e`` makes it."""
    if fail:
        return testing.Exec(BOOTSTRAP_COMMAND, return_code=128, stderr=f"{fail}\n")
    return testing.Exec(BOOTSTRAP_COMMAND, stdout=f"{COMMIT}\n")


def dataset_exec(command: str, result: dict | None = None, *, fail: str = "") -> testing.Exec:
    """``mlops-workload dataset <command>``: JSON on stdout, or ``error: why`` and exit 1."""
    if fail:
        return testing.Exec(
            [WORKLOAD, "dataset", command], return_code=1, stderr=f"error: {fail}\n"
        )
    return testing.Exec([WORKLOAD, "dataset", command], stdout=json.dumps(result or {}) + "\n")


def listed_version(name: str, **fields: Any) -> dict[str, Any]:
    """One version as ``mlops-workload dataset list-versions`` lists it."""
    number = int(name[1:])
    return {
        "version": name,
        "number": number,
        "commit": COMMIT,
        "created": "2025-05-01T10:00:00+00:00",
        "annotated": True,
        "managed": True,
        "parent": f"v{number - 1}" if number > 1 else None,
        "source": "upload",
        "files": 3,
        "bytes": 42,
        "approach": None,
        "message": "",
        **fields,
    }


def workload_calls(ctx: testing.Context, command: str) -> list[list[str]]:
    """The ``mlops-workload dataset <command>`` commands the charm ran, arguments included."""
    history = ctx.exec_history.get(charm.CONTAINER, [])
    return [e.command for e in history if e.command[:3] == [WORKLOAD, "dataset", command]]


def bootstrap_runs(ctx: testing.Context) -> list[testing.ExecArgs]:
    return [e for e in ctx.exec_history.get(charm.CONTAINER, []) if e.command[0] == "/bin/sh"]


# --- the repository on the storage ----------------------------------------------------------


def pack_tags(data_dir: Path) -> None:
    """``git pack-refs --all``: loose tags move to packed-refs, annotated ones with a peel."""
    repo = repository(data_dir)
    tags = repo / "refs" / "tags"
    lines = ["# pack-refs with: peeled fully-peeled sorted"]
    for ref in sorted(tags.iterdir()) if tags.exists() else []:
        lines += [f"{ref.read_text().strip()} refs/tags/{ref.name}", f"^{COMMIT[::-1]}"]
        ref.unlink()
    (repo / "packed-refs").write_text("\n".join(lines) + "\n")


def delete_tags(data_dir: Path, *names: str) -> None:
    """The storage restored from a backup older than these tags."""
    for name in names:
        (repository(data_dir) / "refs" / "tags" / name).unlink()


def delete_repository(data_dir: Path) -> None:
    """The storage replaced by an empty one (a new volume): no repository, no tags."""
    for path in sorted(repository(data_dir).rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()


# --- jobs ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class JobOutcome:
    """How a job's command ends: exit code, output, tags it pushed, seconds it ran."""

    code: int = 0
    stdout: str = ""
    stderr: str = ""
    tags: tuple[str, ...] = ()
    seconds: float = 2.0


def failed(reason: str, code: int = 1) -> JobOutcome:
    """A job whose command failed the way ``mlops-workload`` fails: one ``error:`` line."""
    return JobOutcome(code=code, stderr=f"error: {reason}\n")


def succeeded(result: dict[str, Any], *tags: str) -> JobOutcome:
    return JobOutcome(stdout=json.dumps(result) + "\n", tags=tags)


def _options(words: list[str]) -> dict[str, str]:
    return {
        word.removeprefix("--"): value
        for word, value in zip(words, [*words[1:], ""], strict=True)
        if word.startswith("--")
    }


class JobWorkload:
    """The registry container's job processes, run as the job wrapper runs them.

    A job started in a hook runs until the test ends it (``end``). A job an action waits for
    runs ``seconds`` of the action's clock (this object stands in for ``jobs.time``), then
    ends the same way. Unless ``outcomes`` names one for the job's kind, a job succeeds as the
    real command would: a new version is the next number (its tag pushed), a pushed version
    is valid, a move of the remote prints its target.
    """

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.outcomes: dict[str, JobOutcome | Callable[[dict, list[str]], JobOutcome]] = {}
        self.now = 1000.0
        self.slept = 0.0
        self.min_sleep = 0.0
        self.wall = datetime(2025, 5, 1, 10, 0, tzinfo=UTC)
        self.frozen = False
        self._waited: list[tuple[ops.Container, str, JobOutcome, float]] = []
        self.plans_at_start: dict[str, pebble.Plan] = {}  # by job id: what ran beside it

    # The clocks of jobs: time passes only while the charm sleeps, and a second per job start.
    def monotonic(self) -> float:
        return self.now

    def wall_clock(self, tz=None) -> datetime:
        """``datetime.now`` for job ids and times, one second later on each call.

        A hook takes at least that long; ``frozen`` keeps every call in one second.
        """
        if not self.frozen:
            self.wall += timedelta(seconds=1)
        return self.wall.astimezone(tz)

    def sleep(self, seconds: float) -> None:
        # A sleep may last longer than asked: ``min_sleep`` spares long waits their polls.
        seconds = max(seconds, self.min_sleep)
        self.now += seconds
        self.slept += seconds
        for waited in list(self._waited):
            container, job_id, outcome, ends = waited
            if self.now >= ends:
                self._waited.remove(waited)
                self._finish(job_id, outcome)
                # Pebble sees the one-shot wrapper exit 0: the service is inactive.
                container.pebble.stop_services([JOB_SERVICE])

    def started(self, container: ops.Container, job_id: str) -> None:
        """Called as the charm starts a job (a spy on ``JobRunner.start``)."""
        plan = container.get_plan()
        self.plans_at_start[job_id] = plan
        outcome = self._outcome(job_id, self._command(plan))
        self._waited.append((container, job_id, outcome, self.now + outcome.seconds))

    # --- ending a job between hooks -----------------------------------------------------

    def end(
        self, state: testing.State, outcome: JobOutcome | None = None
    ) -> tuple[testing.State, testing.Notice]:
        """End the job the state's container runs; the state after, and the job's notice."""
        container = state.get_container(charm.CONTAINER)
        assert container.service_statuses.get(JOB_SERVICE) == pebble.ServiceStatus.ACTIVE, (
            "no job is running"
        )
        job_id = running_job_id(container)
        self._waited = [waited for waited in self._waited if waited[1] != job_id]
        self._finish(job_id, outcome or self._outcome(job_id, self._command(container.plan)))
        notice = testing.Notice(jobs.NOTICE_KEY, last_data={"job": job_id})
        container = dataclasses.replace(
            container,
            service_statuses={
                **container.service_statuses,
                JOB_SERVICE: pebble.ServiceStatus.INACTIVE,
            },
            notices=[*container.notices, notice],
        )
        return dataclasses.replace(state, containers={container}), notice

    def _finish(self, job_id: str, outcome: JobOutcome) -> None:
        folder = self.data_dir / "jobs" / job_id
        (folder / "stdout").write_text(outcome.stdout)
        (folder / "stderr").write_text(outcome.stderr)
        finished = f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}"
        (folder / "exit.new").write_text(f"{outcome.code} {finished}\n")
        (folder / "exit.new").rename(folder / "exit")
        (self.data_dir / "jobs" / jobs.UNREPORTED / job_id).write_text("")
        push_tags(self.data_dir, *outcome.tags)

    @staticmethod
    def _command(plan: pebble.Plan) -> list[str]:
        # /bin/sh -c WRAPPER job FOLDER COMMAND...
        return shlex.split(plan.services[JOB_SERVICE].command)[5:]

    def _outcome(self, job_id: str, command: list[str]) -> JobOutcome:
        record = json.loads((self.data_dir / "jobs" / job_id / "job.json").read_text())
        chosen = self.outcomes.get(record["kind"])
        if isinstance(chosen, JobOutcome):
            return chosen
        if chosen is not None:
            return chosen(record, command)
        return self._default(record, command)

    def _default(self, record: dict, command: list[str]) -> JobOutcome:
        kind = record["kind"]
        if kind == "validate-version":
            name = record["params"]["version"]
            return succeeded(validation(name))
        if kind == "move-remote":
            # sh -c "rclone copy ... && rclone check ... && echo RESULT": both succeed.
            return JobOutcome(stdout=shlex.split(command[2])[-1] + "\n")
        tags = repository(self.data_dir) / "refs" / "tags"
        numbers = [int(p.name[1:]) for p in tags.iterdir()] if tags.exists() else []
        name, parent = f"v{max(numbers, default=0) + 1}", max(numbers, default=0)
        options = _options(command[3:])
        result = {
            "version": name,
            "parent": f"v{parent}" if parent else None,
            "source": options.get("source-kind", "rollback"),
            "source_uri": options.get("source") or options.get("to"),
            "files": 3,
            "bytes": 42,
            "approach": options.get("approach"),
            "message": options.get("message", ""),
            "commit": COMMIT,
        }
        return succeeded(result, name)


def validation(name: str, *, missing: int = 0) -> dict[str, Any]:
    """What ``mlops-workload dataset validate-version`` prints."""
    return {
        "version": name,
        "commit": COMMIT,
        "valid": not missing,
        "reason": f"{missing} files are not in the DVC remote" if missing else "",
        "files": 3,
        "missing_count": missing,
        "missing": [f"data/file-{i}" for i in range(missing)],
    }


def running_job_id(container: testing.Container) -> str:
    """The id of the job whose folder the job service's command names."""
    return shlex.split(container.plan.services[JOB_SERVICE].command)[4].rsplit("/", 1)[-1]


def job_ids(data_dir: Path) -> list[str]:
    """Every job's id, oldest first (ids of jobs started within one second sort randomly)."""
    folder = data_dir / "jobs"
    if not folder.exists():
        return []
    folders = [p for p in folder.iterdir() if p.is_dir() and p.name[0].isdigit()]
    return [p.name for p in sorted(folders, key=lambda p: (p / "job.json").stat().st_mtime_ns)]


def job_record(data_dir: Path, job_id: str) -> dict[str, Any]:
    return json.loads((data_dir / "jobs" / job_id / "job.json").read_text())


def job_kinds(data_dir: Path) -> list[str]:
    """The kind of every job started on the storage, oldest first."""
    return [job_record(data_dir, job_id)["kind"] for job_id in job_ids(data_dir)]


def unreported(data_dir: Path) -> list[str]:
    folder = data_dir / "jobs" / jobs.UNREPORTED
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def job_running(state: testing.State) -> bool:
    statuses = state.get_container(charm.CONTAINER).service_statuses
    return statuses.get(JOB_SERVICE) == pebble.ServiceStatus.ACTIVE


# --- relations --------------------------------------------------------------------------------


def consumer_secret(state: testing.State, relation: testing.RelationBase) -> dict[str, str]:
    """The credentials the consumer of ``relation`` reads from the secret granted to it."""
    secret = state.get_secret(id=provided(state, relation)["credentials_secret_id"])
    return dict(secret.latest_content or {})


def with_relation(state: testing.State, relation: testing.RelationBase) -> testing.State:
    """``state`` with ``relation`` replacing the relation of the same id (or added)."""
    others = {r for r in state.relations if r.id != relation.id}
    return dataclasses.replace(state, relations={*others, relation})


def without_relation(state: testing.State, relation: testing.RelationBase) -> testing.State:
    return dataclasses.replace(
        state, relations={r for r in state.relations if r.id != relation.id}
    )


def with_secrets(state: testing.State, *secrets: testing.Secret) -> testing.State:
    ids = {s.id for s in secrets}
    return dataclasses.replace(
        state, secrets={*(s for s in state.secrets if s.id not in ids), *secrets}
    )


def with_container(state: testing.State, **changes: Any) -> testing.State:
    container = dataclasses.replace(state.get_container(charm.CONTAINER), **changes)
    return dataclasses.replace(state, containers={container})


def backend(data_dir: Path) -> dict[str, Any]:
    """The bucket the services serve (conf/backend.json); empty: the unit's storage."""
    path = data_dir / "conf" / "backend.json"
    text = path.read_text() if path.exists() else ""
    return json.loads(text) if text.strip() else {}
