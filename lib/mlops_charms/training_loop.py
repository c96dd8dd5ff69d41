"""The approach's loop in the training charms: what the leader starts by itself, and why.

With ``mlops-approach`` related, training follows the stack's mode (``approach``):

- **data-centric**: the model spec is frozen and the data moves. The version the registry says
  to use (pinned, else latest) that the loop has not handled under the policy revision in force
  is trained on (``train_on_new_version``). When the policy augments, such a version is first
  augmented, and the version the augmentation makes is trained on once the registry publishes
  it; a version the loop made by augmentation is never augmented again. A train that succeeded
  is followed by an error analysis (``relabel_top_k`` > 0), whose end offers its relabel batch
  to labelling (``training.act_on_ended``).
- **model-centric**: the data is pinned and the model moves. New versions are ignored; each
  policy revision with a sweep runs it once, on the policy's ``dataset_version``, else the
  version the registry pinned.

A version is handled once per policy revision: a failed run is reported (list-jobs, the unit's
status) and tried again only on a new version or revision. At most one loop run is in flight
per version. The loop is level-triggered: every reconcile reads its runs' jobs from the job
records and decides from what they say, so hooks in any order, a restarted container or
``update-status`` never start anything twice. A run that could not even be recorded (no free
GPU, no access to the cluster) is tried again at the next hook.

The loop's state is ``loop.json`` in the jobs folder on the unit's storage, beside the job
records and through the same file API (Pebble's, or ``host_files.HostFiles``), written whole
(both write a temporary file and rename it over the old one)::

    {"applied_revision": 4,             the revision whose policy the loop follows
     "runs": [{"kind": "train", "version": "v3", "revision": 4,
               "job": "20261130160000-0001", "state": "succeeded",
               "error": null, "produced": null, "unchanged": false}],
     "augmented": ["v4"],                 versions the loop made by augmentation
     "waiting": null}                     why the last start could not happen (tried again)

The charm observes the events and gives ``reconcile`` the way it starts a run on its substrate
(``StartRun``); ``status`` is what the loop adds to the unit's status. The leader's storage
holds the state: a new leader starts from its own (empty) one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import ops
import pydantic

from mlops_charms import approach, databags, jobs, training
from mlops_charms.approach import APPROACH_ENDPOINT, Approach
from mlops_charms.dataset import VERSION_PATTERN
from mlops_charms.training import (
    AugmentParams,
    ErrorAnalysisParams,
    RunAccess,
    RunError,
    RunParams,
    SweepParams,
    TrainParams,
)

logger = logging.getLogger(__name__)

STATE_FILE = "loop.json"
SERVICE = "training"
STARTED_BY = "started_by"  # the job parameter that shows in list-jobs on the loop's runs
PROMOTED_ALIAS = "champion"
KEEP_RUNS = 100  # the loop only ever looks at the version in use: older runs can go
WAITING_FOR_PIN = "waiting for the registry to pin a version"

RunState = Literal["running", "succeeded", "failed"]
# What the charm does to start a run: (kind, params, access, job parameters to show) -> the job.
# It raises ``training.RunError``: with its job when recorded (failed), without to try later.
StartRun = Callable[[str, RunParams, RunAccess, Mapping[str, str]], jobs.Job]


class LoopRun(pydantic.BaseModel):
    """A run the loop started: for which version, under which policy revision, how it went."""

    kind: str
    version: str
    revision: int
    job: str | None = None
    state: RunState = "running"
    error: str | None = None
    produced: str | None = None  # augment: the version it made
    unchanged: bool = False  # augment: every item had its copies already (no new version)
    skipped: bool = False  # train: the version has no labels yet (raw data), nothing trained


class LoopState(pydantic.BaseModel):
    """What the loop remembers between hooks (``loop.json``)."""

    applied_revision: int | None = None
    runs: list[LoopRun] = pydantic.Field(default_factory=list)
    augmented: list[str] = pydantic.Field(default_factory=list)
    waiting: str | None = None


@dataclass(frozen=True)
class Relations:
    """What the loop needs to know of the registry and tracking (one-line problems)."""

    registry_problem: str | None = None
    version: str | None = None  # the version to use: pinned, else latest
    pinned: str | None = None
    write: bool = False
    tracking_problem: str | None = None


@dataclass(frozen=True)
class Start:
    """A run to start now."""

    kind: str
    version: str
    params: RunParams


@dataclass(frozen=True)
class Decision:
    """What the loop does under the approach in force.

    ``applied_revision``: the revision whose policy the loop follows (the previous one when it
    cannot follow the current: ``reason`` says why, ``waiting`` when it resolves by itself).
    """

    applied_revision: int | None
    reason: str | None = None
    waiting: bool = False
    starts: tuple[Start, ...] = ()


@dataclass(frozen=True)
class LoopTrainParams(TrainParams):
    """The loop's training: a version without any labels (raw data) is skipped, not failed.

    Every new version reaches the loop, the raw one a labelling project imports included.
    """

    def arguments(self, version: str) -> list[str]:
        return [*super().arguments(version), "--skip-unlabelled"]


@dataclass(frozen=True)
class LoopAugmentParams(AugmentParams):
    """The loop's augmentation: a version whose items all have their copies is not an error.

    Such a version (a re-labelled export of an augmented one) is augmented already: the
    workload then says ``unchanged`` and the loop trains on it.
    """

    def arguments(self, version: str) -> list[str]:
        return [*super().arguments(version), "--allow-unchanged"]


# --- the decision: pure -------------------------------------------------------------------------


def decide(state: LoopState, in_force: Approach, relations: Relations) -> Decision:
    """What to start under ``in_force``, given what the loop ran (``state``) and the relations."""
    if in_force.data_centric:
        return _data_centric(state, in_force, relations)
    return _model_centric(state, in_force, relations)


def _not_applied(state: LoopState, reason: str, *, waiting: bool = False) -> Decision:
    return Decision(state.applied_revision, reason, waiting)


def _params_json(params: Mapping[str, Any]) -> str:
    return json.dumps(dict(params), sort_keys=True)


@dataclass(frozen=True)
class _FrozenModel:
    """The data-centric policy, checked: the runs it makes for a version."""

    spec: str
    params: str
    top_k: int
    transforms: str | None  # None: no augmentation
    seed: int
    revision: int

    def train(self, version: str) -> Start:
        params = LoopTrainParams(spec=self.spec, version=version, params=self.params)
        return Start("train", version, params)

    def error_analysis(self, version: str) -> Start:
        params = ErrorAnalysisParams(
            spec=self.spec, version=version, params=self.params, top_k=self.top_k
        )
        return Start("error-analysis", version, params)

    def augment(self, version: str) -> Start:
        assert self.transforms is not None
        message = f"data-centric loop: augmentation of {version} (revision {self.revision})"
        params = LoopAugmentParams(
            transforms=self.transforms, seed=self.seed, version=version, message=message
        )
        return Start("augment", version, params)


def _frozen_model(in_force: Approach) -> _FrozenModel:
    """The policy's runs; ValueError: the policy cannot make them (one line)."""
    policy = in_force.policy
    if policy.model_spec is None:
        raise ValueError("the policy has no model_spec")
    spec, params = policy.model_spec.spec, _params_json(policy.model_spec.params)
    TrainParams(spec=spec, params=params)  # raises on a spec or params the runs refuse
    transforms, seed = None, 0
    if policy.augmentation is not None:
        transforms = _params_json({k: v for k, v in policy.augmentation.items() if k != "seed"})
        seed = policy.augmentation.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError("augmentation: seed must be an integer")
        LoopAugmentParams(transforms=transforms, seed=seed)  # raises on bad transforms
    top_k = policy.relabel_top_k or 0
    return _FrozenModel(spec, params, top_k, transforms, seed, in_force.revision)


def _data_centric(state: LoopState, in_force: Approach, relations: Relations) -> Decision:
    try:
        model = _frozen_model(in_force)
    except ValueError as error:
        return _not_applied(state, f"invalid policy: {str(error).splitlines()[0]}")
    if relations.registry_problem:
        return _not_applied(state, f"no data registry: {relations.registry_problem}", waiting=True)
    if relations.tracking_problem:
        return _not_applied(
            state, f"no tracking server: {relations.tracking_problem}", waiting=True
        )
    if model.transforms is not None and not relations.write:
        return _not_applied(state, "augmentation needs write access: the registry granted read")
    current = [run for run in state.runs if run.revision == in_force.revision]
    busy = {run.version for run in state.runs if run.state == "running"}
    starts = _follow_ups(model, current, busy)
    busy |= {start.version for start in starts}
    version = relations.version
    augmenting = any(run.kind == "augment" and run.state == "running" for run in state.runs)
    if (
        in_force.policy.train_on_new_version
        and version is not None
        and version not in busy
        and not any(run.version == version for run in current)
        # A version an augmentation in flight may have made waits to be known as such.
        and not (augmenting and version not in state.augmented)
    ):
        fresh = model.transforms is not None and version not in state.augmented
        starts.append(model.augment(version) if fresh else model.train(version))
    return Decision(in_force.revision, starts=tuple(starts))


def _follow_ups(model: _FrozenModel, current: list[LoopRun], busy: set[str]) -> list[Start]:
    """What follows the runs of the revision in force that succeeded, once each."""

    def handled(kind: str, version: str) -> bool:
        return any(run.kind == kind and run.version == version for run in current)

    starts: list[Start] = []
    for run in current:
        if run.state != "succeeded" or run.version in busy | {s.version for s in starts}:
            continue
        if run.kind == "augment" and run.unchanged and not handled("train", run.version):
            starts.append(model.train(run.version))
        elif (
            run.kind == "train"
            and not run.skipped
            and model.top_k
            and not handled("error-analysis", run.version)
        ):
            starts.append(model.error_analysis(run.version))
    return starts


def sweep_grid(spec: str, configurations: list[dict[str, Any]]) -> list[dict[str, list[Any]]]:
    """The sweep's configurations as the workload's list of grids: ``{"C": 1}`` -> ``{"C": [1]}``.

    A configuration may name its spec: it must be the policy's (a sweep trains one spec).
    """
    grids = []
    for number, configuration in enumerate(configurations, 1):
        named = configuration.get("spec", spec)
        if named != spec:
            raise ValueError(f"sweep configuration {number} names spec {named}: one sweep, {spec}")
        grids.append({key: [value] for key, value in configuration.items() if key != "spec"})
    return grids


def _model_centric(state: LoopState, in_force: Approach, relations: Relations) -> Decision:
    policy, revision = in_force.policy, in_force.revision
    if not policy.sweep:
        return Decision(revision)  # nothing to run: the pinned data is all it asks
    if policy.model_spec is None:
        return _not_applied(state, "the policy has no model_spec")
    spec = policy.model_spec.spec
    try:
        grid = json.dumps(sweep_grid(spec, policy.sweep), sort_keys=True)
        SweepParams(spec=spec, params=_params_json(policy.model_spec.params), grid=grid)
    except ValueError as error:
        return _not_applied(state, f"invalid policy: {str(error).splitlines()[0]}")
    if relations.registry_problem:
        return _not_applied(state, f"no data registry: {relations.registry_problem}", waiting=True)
    version = policy.dataset_version or relations.pinned
    if version is None:
        return _not_applied(state, WAITING_FOR_PIN, waiting=True)
    if relations.tracking_problem:
        return _not_applied(
            state, f"no tracking server: {relations.tracking_problem}", waiting=True
        )
    swept = any(run.kind == "sweep" and run.revision == revision for run in state.runs)
    running = any(run.version == version and run.state == "running" for run in state.runs)
    if swept or running:
        return Decision(revision)
    params = SweepParams(
        spec=spec,
        version=version,
        params=_params_json(policy.model_spec.params),
        grid=grid,
        metric=policy.selection_metric or "accuracy",
        promote=PROMOTED_ALIAS if policy.promote_best else None,
    )
    return Decision(revision, starts=(Start("sweep", version, params),))


def refresh(state: LoopState, records: jobs.JobRecords) -> LoopState:
    """``state`` with the ends of its running runs, as the job records say."""
    runs, augmented = [], list(state.augmented)
    for run in state.runs:
        if run.state == "running" and run.job is not None:
            job = records.get(run.job)
            if job is None:
                run = run.model_copy(update={"state": "failed", "error": "its job is gone"})
            elif job.ended:
                run = _ended(run, job)
                if run.produced and run.produced not in augmented:
                    augmented.append(run.produced)
        runs.append(run)
    return state.model_copy(update={"runs": runs, "augmented": augmented})


def _ended(run: LoopRun, job: jobs.Job) -> LoopRun:
    if job.state != "succeeded":
        return run.model_copy(update={"state": "failed", "error": job.error})
    update: dict[str, Any] = {"state": "succeeded"}
    if run.kind == "train" and (job.result or {}).get("skipped"):
        update["skipped"] = True
    if run.kind == "augment":
        result = job.result or {}
        made = result.get("version")
        if isinstance(made, str) and VERSION_PATTERN.match(made):
            update["produced"] = made
        elif result.get("unchanged") is True:
            update["unchanged"] = True
        else:
            update.update(state="failed", error="the augmentation named no new version")
    return run.model_copy(update=update)


def summary(state: LoopState, in_force: Approach) -> str:
    """One short clause: what the loop did last under the revision in force."""
    runs = [run for run in state.runs if run.revision == in_force.revision]
    policy = in_force.policy
    if not runs and in_force.data_centric:
        return "waiting for a new version" if policy.train_on_new_version else "trains on demand"
    if not runs:
        return "sweep waits for a running job" if policy.sweep else "no sweep in the policy"
    last = runs[-1]
    version = last.version
    if last.state == "failed":
        return f"{last.kind} on {version} failed (list-jobs)"
    if last.state == "running":
        return {
            "augment": f"augmenting {version}",
            "train": f"training on {version}",
            "error-analysis": f"error analysis of {version} running",
        }.get(last.kind, f"{last.kind} on {version} running")
    if last.kind == "train" and last.skipped:
        return f"{version} has no labels yet"
    if last.kind == "augment" and last.produced:
        return f"augmented {version} into {last.produced}"
    if last.kind == "augment":
        return f"{version} is augmented already"
    return {
        "train": f"trained {version}",
        "error-analysis": f"error analysis of {version} done",
        "sweep": f"swept {version}",
    }.get(last.kind, f"{last.kind} on {version} done")


# --- the state file -----------------------------------------------------------------------------


def state_path(records: jobs.JobRecords) -> str:
    """Where the loop's state is: beside the job records."""
    return f"{records.jobs_dir}/{STATE_FILE}"


def load(records: jobs.JobRecords) -> LoopState | None:
    """The loop's state (empty before its first run); None when the file is unreadable."""
    try:
        text = records.container.pull(state_path(records)).read()
    except ops.pebble.PathError:
        return LoopState()
    try:
        return LoopState.model_validate_json(text)
    except pydantic.ValidationError as error:
        logger.error("%s is unreadable: %s", state_path(records), databags.one_line(error))
        return None


def save(records: jobs.JobRecords, state: LoopState, previous: LoopState) -> None:
    """Write ``state`` when it differs from ``previous`` (whole, atomically)."""
    state = state.model_copy(update={"runs": state.runs[-KEEP_RUNS:]})
    if state == previous:
        return
    records.container.push(
        state_path(records),
        state.model_dump_json(),
        make_dirs=True,
        permissions=0o644,
        user=records.user,
        group=records.group,
    )


# --- what the charms call -----------------------------------------------------------------------


def relations(model: ops.Model, *, outside_the_cluster: bool = False) -> Relations:
    """The registry and tracking as the loop sees them."""
    registry = training.registry(model)
    tracking = training.tracking(model, outside_the_cluster=outside_the_cluster)
    return Relations(
        registry_problem=registry.problem.message if registry.problem else None,
        version=registry.version,
        pinned=registry.pinned,
        write=registry.access is not None and registry.access.write,
        tracking_problem=tracking.problem.message if tracking.problem else None,
    )


def reconcile(
    model: ops.Model,
    records: jobs.JobRecords,
    start: StartRun,
    *,
    outside_the_cluster: bool = False,
) -> None:
    """(leader) Follow the approach in force: start what it asks for, acknowledge its revision.

    Without the ``mlops-approach`` relation this does nothing: training runs on demand only.
    """
    if model.get_relation(APPROACH_ENDPOINT) is None or not model.unit.is_leader():
        return
    loaded = load(records)
    if loaded is None:
        approach.acknowledge(model, SERVICE, None, reason=f"{state_path(records)} is unreadable")
        return
    state = refresh(loaded, records)
    in_force, problem = approach.read(model)
    if in_force is None:  # nothing published yet, or bad data: keep what was applied
        save(records, state, loaded)
        approach.acknowledge(model, SERVICE, state.applied_revision, reason=problem)
        return
    decision = decide(state, in_force, relations(model, outside_the_cluster=outside_the_cluster))
    shown = {STARTED_BY: f"{in_force.mode} loop, policy revision {in_force.revision}"}
    runs, waiting = list(state.runs), None
    for item in decision.starts:
        run = LoopRun(kind=item.kind, version=item.version, revision=in_force.revision)
        access = training.run_access(
            model, item.kind, item.params, outside_the_cluster=outside_the_cluster
        )
        try:
            if isinstance(access, str):
                raise RunError(access)
            job = start(item.kind, item.params, access, shown)
        except RunError as error:
            if error.job is None:  # nothing recorded: tried again at the next hook
                waiting = f"cannot start {item.kind} on {item.version} yet: {error.reason}"
                logger.warning("approach loop: %s", waiting)
                continue
            run = run.model_copy(
                update={"job": error.job.id, "state": "failed", "error": error.reason}
            )
        else:
            run = run.model_copy(update={"job": job.id})
        logger.info("approach loop: %s on %s (%s)", item.kind, item.version, run.job)
        runs.append(run)
    state = state.model_copy(
        update={"runs": runs, "applied_revision": decision.applied_revision, "waiting": waiting}
    )
    save(records, state, loaded)
    approach.acknowledge(
        model,
        SERVICE,
        decision.applied_revision,
        reason=decision.reason,
        waiting=decision.waiting,
    )


def status(
    model: ops.Model, records: jobs.JobRecords, *, outside_the_cluster: bool = False
) -> tuple[ops.StatusBase | None, str | None]:
    """(leader) What the loop adds to the unit's status: a problem, or a clause for Active."""
    if model.get_relation(APPROACH_ENDPOINT) is None:
        return None, None
    in_force, problem = approach.read(model)
    if problem:
        return ops.BlockedStatus(problem), None
    loaded = load(records)
    if loaded is None:
        return ops.BlockedStatus(f"{state_path(records)} is unreadable: remove it"), None
    if in_force is None:
        return None, "waiting for the approach's policy"
    state = refresh(loaded, records)
    label = "data-centric loop" if in_force.data_centric else "model-centric"
    decision = decide(state, in_force, relations(model, outside_the_cluster=outside_the_cluster))
    if decision.reason:
        kind = ops.WaitingStatus if decision.waiting else ops.BlockedStatus
        return kind(f"{label}: {decision.reason}"), None
    if state.waiting:
        return ops.WaitingStatus(f"{label}: {state.waiting}"), None
    return None, f"{label}: {summary(state, in_force)}"


def add_status(
    event: ops.CollectStatusEvent,
    model: ops.Model,
    records: jobs.JobRecords,
    *,
    outside_the_cluster: bool = False,
) -> str:
    """(leader) Add the loop's problem to the unit's statuses; what Active adds (or "")."""
    problem, clause = status(model, records, outside_the_cluster=outside_the_cluster)
    if problem:
        event.add_status(problem)
    return f"; {clause}" if clause else ""
