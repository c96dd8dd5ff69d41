"""Training's core, shared by training-k8s and the training machine charm: no substrate here.

An action's parameters, validated (``TrainParams``...), become the arguments of
``mlops-workload training <command>`` (the CLI of the stack's workload package,
``mlops_workload.training.cli``); the registry's and tracking's access, read from the
``mlops-dataset`` and ``mlops-tracking`` relations and their Juju secrets, become the run's
environment, split into plain settings and the credentials each substrate keeps private (a
Kubernetes Secret, a 0600 systemd ``EnvironmentFile``); a provider's CA, when it serves HTTPS,
becomes a file beside the run's others and the settings naming it (``run_ca``). An error
analysis's result becomes a relabel batch, offered on ``mlops-relabel`` until labelling
acknowledges it. With the
``mlops-approach`` relation, a run's settings carry the mode and the policy revision (its MLflow
tags) and group it in MLflow per model spec (data-centric) or per dataset version
(model-centric); what the approach's loop starts by itself is ``training_loop``.

What differs per substrate (where the program lives, how a run starts and ends) stays in each
charm: ``kubernetes_jobs`` in training-k8s, ``systemd_jobs`` in training.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import ops
import pydantic

from mlops_charms import approach, client_ca, databags, jobs
from mlops_charms.approach import Approach
from mlops_charms.dataset import VERSION_PATTERN, DatasetProviderData
from mlops_charms.relabel import RelabelBatch, RelabelProviderData, RelabelRequirerData
from mlops_charms.tracking import TrackingProviderData

logger = logging.getLogger(__name__)

DATASET_ENDPOINT = "mlops-dataset"
TRACKING_ENDPOINT = "mlops-tracking"
RELABEL_ENDPOINT = "mlops-relabel"
APPROACHES = ("model-centric", "data-centric")
METRICS = ("accuracy", "balanced_accuracy", "f1_macro", "f1_weighted")
SPEC_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
ALIAS_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
MAX_JSON = 10_000
MAX_BATCH_ITEMS = 10_000  # mlops_relabel's limit per batch
MAX_LOG_LINES = 500  # job-logs at most; what a job's folder keeps of a log
# Relabel batches offered at once; the oldest unacknowledged ones go first.
MAX_OFFERED_BATCHES = 20
# How long an action with wait=true waits for its job before returning the job's id.
ACTION_WAIT = 300.0
STILL_RUNNING = "its end shows in list-jobs and in the unit's status; job-logs shows its log"


@dataclass(frozen=True)
class RegistryAccess:
    """The data registry as the trainer uses it (from ``mlops_dataset``)."""

    git_url: str
    username: str
    password: str = field(repr=False)
    access_key: str = ""
    secret_key: str = field(default="", repr=False)
    dvc_endpoint: str | None = None
    write: bool = False
    ca: str | None = field(default=None, repr=False)  # PEM, when the registry serves HTTPS


@dataclass(frozen=True)
class TrackingAccess:
    """The tracking server as the trainer uses it (from ``mlops_tracking``)."""

    uri: str
    username: str
    password: str = field(repr=False)
    experiment: str | None = None
    ca: str | None = field(default=None, repr=False)  # PEM, when the server serves HTTPS


def environment(
    registry: RegistryAccess, tracking: TrackingAccess | None, *, workdir: str
) -> tuple[dict[str, str], dict[str, str]]:
    """The trainer's environment: ``(settings, credentials)``; only settings are plain."""
    settings = {
        "MLOPS_REGISTRY_URL": registry.git_url,
        "MLOPS_TRAINING_WORKDIR": workdir,
        "PYTHONUNBUFFERED": "1",
    }
    credentials = {
        "MLOPS_REGISTRY_USERNAME": registry.username,
        "MLOPS_REGISTRY_PASSWORD": registry.password,
        "AWS_ACCESS_KEY_ID": registry.access_key,
        "AWS_SECRET_ACCESS_KEY": registry.secret_key,
    }
    if registry.dvc_endpoint:
        settings["MLOPS_DVC_ENDPOINT_URL"] = registry.dvc_endpoint
    if tracking is not None:
        settings["MLFLOW_TRACKING_URI"] = tracking.uri
        if tracking.experiment:
            settings["MLFLOW_EXPERIMENT_NAME"] = tracking.experiment
        credentials["MLFLOW_TRACKING_USERNAME"] = tracking.username
        credentials["MLFLOW_TRACKING_PASSWORD"] = tracking.password
    return settings, credentials


def run_ca(
    registry: RegistryAccess, tracking: TrackingAccess | None, *, folder: str
) -> client_ca.ClientCA:
    """The run's CA files under ``folder`` and the settings pointing git, DVC, MLflow at them."""
    return client_ca.client_ca(
        folder, registry=registry.ca, tracking=tracking.ca if tracking else None
    )


def experiment_name(in_force: Approach, base: str | None, spec: str, version: str) -> str:
    """The MLflow experiment of a run under the approach ``in_force``: per spec, or per version.

    Data-centric: the spec is frozen and the data moves, so one experiment per spec holds its
    runs on every version; model-centric: the data is pinned, so one per version holds its
    configurations. ``base`` (the experiment this application asked tracking for) comes first:
    two training applications never share an experiment that only one of them may edit.
    """
    group = spec if in_force.data_centric else f"dataset-{version}"
    return f"{base}-{group}" if base else group


def run_environment(
    access: RunAccess, params: RunParams, *, workdir: str
) -> tuple[dict[str, str], dict[str, str]]:
    """A run's environment: ``environment``, with the approach in force when related."""
    settings, credentials = environment(access.registry, access.tracking, workdir=workdir)
    if access.approach is not None:
        settings["MLOPS_APPROACH"] = access.approach.mode
        settings["MLOPS_APPROACH_REVISION"] = str(access.approach.revision)
        if access.tracking is not None and isinstance(params, ModelParams):
            settings["MLFLOW_EXPERIMENT_NAME"] = experiment_name(
                access.approach, access.tracking.experiment, params.spec, access.version
            )
    return settings, credentials


def command(program: str, name: str, arguments: list[str]) -> list[str]:
    """The trainer's command line: ``<program> training <name> ...``."""
    return [program, "training", name, *arguments]


# --- the actions' parameters, as the trainer's options ------------------------------------------


def _json(text: str, option: str) -> Any:
    if len(text) > MAX_JSON:
        raise ValueError(f"{option} is longer than {MAX_JSON} characters")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{option} is not JSON: {error.msg} at {error.pos}") from None


def _json_object(text: str, option: str) -> dict[str, Any]:
    value = _json(text, option)
    if not isinstance(value, dict):
        raise ValueError(f"{option} must be a JSON object")
    return value


def _is_grid(value: Any) -> bool:
    """A grid: a JSON object of param -> a non-empty list of values (``{}``: the base params)."""
    return isinstance(value, dict) and all(isinstance(v, list) and v for v in value.values())


def _check_common(version: str | None, project: str | None, approach: str | None) -> None:
    if version is not None and not VERSION_PATTERN.match(version):
        raise ValueError(f"version must be a version name such as v3, not {version!r}")
    if project is not None and not (0 < len(project) <= 100 and "\n" not in project):
        raise ValueError("project must be 1-100 characters without line breaks")
    if approach is not None and approach not in APPROACHES:
        raise ValueError(f"approach must be one of {', '.join(APPROACHES)}")


@dataclass(frozen=True)
class ModelParams:
    """What train, error-analysis and sweep share: a spec on a version."""

    spec: str
    version: str | None = None
    params: str = "{}"
    folds: int = 5
    seed: int = 0
    project: str | None = None
    approach: str | None = None
    wait: bool = False

    def __post_init__(self):
        _check_common(self.version, self.project, self.approach)
        if not SPEC_PATTERN.match(self.spec):
            raise ValueError("spec must be a model spec name such as text-tfidf-logreg")
        _json_object(self.params, "params")
        if not 2 <= self.folds <= 50:
            raise ValueError("folds must be between 2 and 50")
        if not 0 <= self.seed < 2**31:
            raise ValueError("seed must be between 0 and 2147483647")

    def arguments(self, version: str) -> list[str]:
        words = ["--version", version, "--spec", self.spec, "--params", self.params]
        words += ["--folds", str(self.folds), "--seed", str(self.seed)]
        words += ["--project", self.project] if self.project else []
        words += ["--approach", self.approach] if self.approach else []
        return words

    def shown(self, version: str) -> dict[str, str]:
        """What list-jobs shows of the job (no credentials are ever among them)."""
        return {"version": version, "spec": self.spec}


@dataclass(frozen=True)
class TrainParams(ModelParams):
    """Parameters of the train action."""


@dataclass(frozen=True)
class ErrorAnalysisParams(ModelParams):
    """Parameters of the error-analysis action."""

    top_k: int = 50

    def __post_init__(self):
        super().__post_init__()
        if not 1 <= self.top_k <= MAX_BATCH_ITEMS:
            raise ValueError(f"top-k must be between 1 and {MAX_BATCH_ITEMS}")

    def arguments(self, version: str) -> list[str]:
        return [*super().arguments(version), "--top-k", str(self.top_k)]


@dataclass(frozen=True)
class SweepParams(ModelParams):
    """Parameters of the sweep action."""

    grid: str = ""
    metric: str = "accuracy"
    promote: str | None = None

    def __post_init__(self):
        super().__post_init__()
        grid = _json(self.grid, "grid")
        # One grid, or a list of grids (scikit-learn's ParameterGrid takes either).
        if not (
            (isinstance(grid, dict) and grid and _is_grid(grid))
            or (isinstance(grid, list) and grid and all(_is_grid(g) for g in grid))
        ):
            raise ValueError(
                'grid must map each param to a non-empty list: {"C": [1, 10]}, '
                'or be a list of such grids: [{"C": [1]}, {"C": [10]}]'
            )
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}")
        if self.promote is not None and (
            not ALIAS_PATTERN.match(self.promote)
            or self.promote.lower() == "latest"
            or re.fullmatch(r"v\d+", self.promote)
        ):
            raise ValueError("promote: an alias is letters, digits, '_' or '-', not latest or vN")

    def arguments(self, version: str) -> list[str]:
        words = [*super().arguments(version), "--grid", self.grid, "--metric", self.metric]
        return words + (["--promote", self.promote] if self.promote else [])


@dataclass(frozen=True)
class AugmentParams:
    """Parameters of the augment action: a new version from an old one."""

    transforms: str
    seed: int
    version: str | None = None
    message: str = ""
    project: str | None = None
    approach: str | None = None
    wait: bool = False

    def __post_init__(self):
        _check_common(self.version, self.project, self.approach)
        transforms = _json_object(self.transforms, "transforms")
        if not set(transforms) & {"image", "text"}:
            raise ValueError('transforms must name image or text steps: {"image": [...]}')
        if not 0 <= self.seed < 2**31:
            raise ValueError("seed must be between 0 and 2147483647")
        if "\n" in self.message or len(self.message) > 500:
            raise ValueError("message must be one line of at most 500 characters")

    def arguments(self, version: str) -> list[str]:
        words = ["--version", version, "--transforms", self.transforms, "--seed", str(self.seed)]
        words += ["--message", self.message] if self.message else []
        words += ["--project", self.project] if self.project else []
        return words + (["--approach", self.approach] if self.approach else [])

    def shown(self, version: str) -> dict[str, str]:
        return {"version": version, "seed": str(self.seed)}


@dataclass(frozen=True)
class JobParams:
    """Parameters of cancel-job."""

    job: str

    def __post_init__(self):
        if not jobs.is_job_id(self.job):
            raise ValueError(f"job must be a job id from list-jobs, not {self.job!r}")


@dataclass(frozen=True)
class JobLogsParams(JobParams):
    """Parameters of job-logs."""

    lines: int = 100

    def __post_init__(self):
        super().__post_init__()
        if not 1 <= self.lines <= MAX_LOG_LINES:
            raise ValueError(f"lines must be between 1 and {MAX_LOG_LINES}")


RunParams = ModelParams | AugmentParams
# The actions that start a run: their parameters, and whether they need tracking and write.
RUN_ACTIONS: dict[str, tuple[type[ModelParams] | type[AugmentParams], bool, bool]] = {
    "train": (TrainParams, True, False),
    "error-analysis": (ErrorAnalysisParams, True, False),
    "sweep": (SweepParams, True, False),
    "augment": (AugmentParams, False, True),
}


def load_run_action(event: ops.ActionEvent) -> tuple[str, ModelParams | AugmentParams]:
    """The run action's kind (``error-analysis``) and its validated parameters.

    A bad parameter fails the action (ops' ``errors="fail"``) and ends the hook.
    """
    kind = event.handle.kind.removesuffix("_action").replace("_", "-")
    return kind, event.load_params(RUN_ACTIONS[kind][0], errors="fail")


# --- the relations ------------------------------------------------------------------------------


class RegistryAnswer(NamedTuple):
    """The data registry's access for this app, the version to use, or why there is none.

    ``version``: the pinned version, else the latest; ``pinned``: the pinned one only.
    """

    access: RegistryAccess | None
    version: str | None
    problem: ops.StatusBase | None
    pinned: str | None = None


class TrackingAnswer(NamedTuple):
    """The tracking server's access for this app, or why there is none."""

    access: TrackingAccess | None
    problem: ops.StatusBase | None


def _secret_content(model: ops.Model, secret_id: str) -> dict[str, str] | None:
    try:
        return model.get_secret(id=secret_id).get_content(refresh=True)
    except (ops.SecretNotFoundError, ops.ModelError):
        return None


def registry(model: ops.Model) -> RegistryAnswer:
    """The registry's access from ``mlops-dataset``, or the status saying why not."""
    relation = model.get_relation(DATASET_ENDPOINT)
    if relation is None:
        blocked = ops.BlockedStatus(f"relate {DATASET_ENDPOINT} to data-versioning-k8s")
        return RegistryAnswer(None, None, blocked)
    data, problem = databags.load_remote_app_data(relation, DatasetProviderData)
    if problem:
        return RegistryAnswer(None, None, ops.BlockedStatus(f"{DATASET_ENDPOINT}: {problem}"))
    if data is None or not data.registry_url or not data.credentials_secret_id:
        return RegistryAnswer(None, None, ops.WaitingStatus("waiting for the data registry"))
    content = _secret_content(model, data.credentials_secret_id)
    if content is None:
        blocked = ops.BlockedStatus(f"{DATASET_ENDPOINT}: credentials secret not readable")
        return RegistryAnswer(None, None, blocked)
    if not content.get("username") or not content.get("password"):
        blocked = ops.BlockedStatus(f"{DATASET_ENDPOINT}: credentials lack a git user")
        return RegistryAnswer(None, None, blocked)
    access = RegistryAccess(
        git_url=data.registry_url,
        username=content["username"],
        password=content["password"],
        access_key=content.get("access-key", ""),
        secret_key=content.get("secret-key", ""),
        dvc_endpoint=data.remote_endpoint,
        write=data.access == "write",
        ca=data.ca,
    )
    return RegistryAnswer(access, data.version_to_use, None, data.pinned_version)


def tracking(model: ops.Model, *, outside_the_cluster: bool = False) -> TrackingAnswer:
    """The tracking server's access from ``mlops-tracking``, or the status saying why not.

    ``outside_the_cluster``: the runs are not in the tracking server's cluster (the machine
    charm): its ingress URL, when it has one, rather than its in-cluster address.
    """
    relation = model.get_relation(TRACKING_ENDPOINT)
    if relation is None:
        return TrackingAnswer(
            None, ops.BlockedStatus(f"relate {TRACKING_ENDPOINT} to tracking-k8s")
        )
    data, problem = databags.load_remote_app_data(relation, TrackingProviderData)
    if problem:
        return TrackingAnswer(None, ops.BlockedStatus(f"{TRACKING_ENDPOINT}: {problem}"))
    if data is None or not data.tracking_uri or not data.credentials_secret_id:
        return TrackingAnswer(None, ops.WaitingStatus("waiting for the tracking server"))
    content = _secret_content(model, data.credentials_secret_id)
    if content is None:
        blocked = ops.BlockedStatus(f"{TRACKING_ENDPOINT}: credentials secret not readable")
        return TrackingAnswer(None, blocked)
    if not content.get("username") or not content.get("password"):
        blocked = ops.BlockedStatus(f"{TRACKING_ENDPOINT}: credentials lack a user")
        return TrackingAnswer(None, blocked)
    uri = data.tracking_uri
    if outside_the_cluster and data.external_tracking_uri:
        uri = data.external_tracking_uri
    access = TrackingAccess(
        uri=uri,
        username=content["username"],
        password=content["password"],
        experiment=data.default_experiment,
        ca=data.ca,
    )
    return TrackingAnswer(access, None)


def relabel_batch(result: Mapping[str, Any]) -> dict[str, Any] | None:
    """The relabel batch of an error-analysis result, if it has items."""
    batch = result.get("relabel_batch")
    if not isinstance(batch, dict) or not batch.get("items"):
        return None
    return batch


def offer_relabel_batches(
    model: ops.Model, app: ops.Application, new: list[dict[str, Any]]
) -> None:
    """Offer ``new`` batches; drop those labelling has queued or failed (it said so)."""
    relation = model.get_relation(RELABEL_ENDPOINT)
    if relation is None:
        if new:
            logger.info("no %s relation: relabel batch not offered", RELABEL_ENDPOINT)
        return
    own, _problem = databags.load_app_data(relation, app, RelabelProviderData)
    acknowledged, _problem = databags.load_remote_app_data(relation, RelabelRequirerData)
    previous = (own.batches if own else None) or []
    queued = (acknowledged.queued if acknowledged else None) or []
    failed = (acknowledged.failed if acknowledged else None) or []
    for batch in previous:
        if batch.batch_id in failed:
            logger.warning("labelling could not queue relabel batch %s", batch.batch_id)
    done = set(queued) | set(failed)
    offered = [batch for batch in previous if batch.batch_id not in done]
    for raw in new:
        try:
            batch = RelabelBatch.model_validate(raw)
        except pydantic.ValidationError as error:
            logger.warning("relabel batch not offered: %s", databags.one_line(error))
            continue
        if batch.batch_id and batch.batch_id not in done | {b.batch_id for b in offered}:
            offered.append(batch)
    databags.save_app_data(
        relation, app, RelabelProviderData(batches=offered[-MAX_OFFERED_BATCHES:] or None)
    )


def act_on_ended(model: ops.Model, app: ops.Application, job: jobs.Job) -> None:
    """Act once on an ended job: log a failure, offer an error analysis's relabel batch."""
    if job.state == "failed":
        logger.warning("job %s (%s) failed: %s", job.id, job.kind, job.error)
    elif job.kind == "error-analysis" and job.result:
        batch = relabel_batch(job.result)
        if batch is not None:
            offer_relabel_batches(model, app, [batch])


class RunAccess(NamedTuple):
    """What a run needs from the relations: the registry, tracking when related, a version.

    ``approach``: the approach in force (``mlops-approach``), None without the relation.
    """

    registry: RegistryAccess
    tracking: TrackingAccess | None
    version: str
    approach: Approach | None = None


class RunError(Exception):
    """A run did not start; ``job`` is its record (listed as failed) when it got that far."""

    def __init__(self, reason: str, job: jobs.Job | None = None):
        super().__init__(reason)
        self.reason = reason
        self.job = job


def run_access(
    model: ops.Model, kind: str, params: RunParams, *, outside_the_cluster: bool = False
) -> RunAccess | str:
    """The relations' access for a run of ``kind``, or one line saying why there is none."""
    _params_type, needs_tracking, needs_write = RUN_ACTIONS[kind]
    registry_answer = registry(model)
    if registry_answer.access is None:
        assert registry_answer.problem is not None
        return f"no data registry: {registry_answer.problem.message}"
    if needs_write and not registry_answer.access.write:
        return f"{kind} needs write access to the registry: not granted yet"
    tracking_answer = tracking(model, outside_the_cluster=outside_the_cluster)
    if needs_tracking and tracking_answer.access is None:
        assert tracking_answer.problem is not None
        return f"no tracking server: {tracking_answer.problem.message}"
    version = params.version or registry_answer.version
    if version is None:
        return "the registry has no dataset version yet: give version"
    in_force, _problem = approach.read(model)
    return RunAccess(registry_answer.access, tracking_answer.access, version, in_force)


def access_for_run(
    event: ops.ActionEvent,
    model: ops.Model,
    kind: str,
    params: RunParams,
    *,
    outside_the_cluster: bool = False,
) -> RunAccess | None:
    """The relations' access for the run action ``kind``; None after failing ``event``: why not."""
    access = run_access(model, kind, params, outside_the_cluster=outside_the_cluster)
    if isinstance(access, str):
        event.fail(access)
        return None
    return access


def report_job(
    event: ops.ActionEvent,
    records: jobs.JobRecords,
    job: jobs.Job,
    shown: Mapping[str, str],
    act_on: Callable[[jobs.Job], None],
    *,
    wait: bool,
) -> None:
    """Report a run action's job: running, or (``wait``) its end, acted on once here.

    ``shown`` names the job in the results; ``act_on`` is what the charm does on a job's end.
    """
    ended = records.wait(job.id, ACTION_WAIT) if wait else None
    if ended is None or not ended.ended:
        event.set_results({**shown, "state": "running", "message": STILL_RUNNING})
        return
    act_on(ended)  # reported here, to the action
    records.mark_reported(ended)
    if ended.state == "failed":
        event.fail(f"{ended.kind} failed: {ended.error}")
        return
    event.set_results({**shown, "state": ended.state, **jobs.action_results(ended.result or {})})


def relation_events(charm: ops.CharmBase) -> tuple[ops.BoundEvent, ...]:
    """The relation and secret events after which a training charm reconciles.

    The registry's and tracking's data and secrets, labelling's acknowledgements of relabel
    batches (a departed labeller's batches are pruned on the next reconcile), and the approach
    in force (``training_loop``).
    """
    return (
        *approach.relation_events(charm),
        charm.on[DATASET_ENDPOINT].relation_created,
        charm.on[DATASET_ENDPOINT].relation_changed,
        charm.on[DATASET_ENDPOINT].relation_broken,
        charm.on[TRACKING_ENDPOINT].relation_created,
        charm.on[TRACKING_ENDPOINT].relation_changed,
        charm.on[TRACKING_ENDPOINT].relation_broken,
        charm.on[RELABEL_ENDPOINT].relation_created,
        charm.on[RELABEL_ENDPOINT].relation_changed,
        charm.on.secret_changed,
    )
