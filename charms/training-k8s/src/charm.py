#!/usr/bin/env python3
"""Juju glue for training: observe, reconcile, collect status, actions.

The training itself runs in Kubernetes Jobs (``kubernetes_jobs``) that run the stack's
``mlops-workload training`` commands (``training_workload``). An action creates the Job and
returns its id at once; the job watcher in the workload container records the Job's end in
the job's folder on the unit's storage (``mlops_charms.jobs`` format) and raises the Pebble
notice this charm reconciles on: results are reported once, relabel batches offered. With
``mlops-approach`` related, the leader also follows the stack's approach: the loop
(``mlops_charms.training_loop``) decides what to run, this charm starts it as it starts an
action's run.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import ops
import yaml

import kubernetes_jobs
import training_workload
from kubernetes_jobs import Cluster, Credentials, KubernetesError, Limits, Placement, TrainingRun
from mlops_charms import charm_tracing, databags, jobs, pebble, sidecar, training, training_loop
from mlops_charms.dataset import DatasetRequirerData
from mlops_charms.jobs import Job, JobRecords
from mlops_charms.log_forwarding import LogForwarding
from mlops_charms.tracking import TrackingRequirerData
from mlops_charms.training import (
    DATASET_ENDPOINT,
    TRACKING_ENDPOINT,
    JobLogsParams,
    JobParams,
    RunAccess,
    RunError,
    RunParams,
)

logger = logging.getLogger(__name__)

CONTAINER = "training"
STORAGE = "training-data"
IMAGE_RESOURCE = "training-image"
LAYER = "training"
# A running job whose Kubernetes object is gone for longer than this was lost (seconds).
LOST_AFTER = 120.0
DEFAULT_TOLERATIONS = '[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]'
_TOLERATION_KEYS = {"key", "operator", "value", "effect", "tolerationSeconds"}
_EFFECTS = ("", "NoSchedule", "PreferNoSchedule", "NoExecute")


@dataclass(frozen=True)
class TrainingConfig:
    """The charm's config options, validated."""

    gpus: int = 0
    node_selector: str = ""
    tolerations: str = DEFAULT_TOLERATIONS
    job_deadline: int = 86400
    job_ttl: int = 86400
    job_backoff_limit: int = 1
    num_nodes: int = 1
    training_runtime: str = "torch-distributed"
    trainer_image: str = ""
    experiment: str = ""
    parsed_node_selector: dict[str, str] = field(init=False, repr=False)
    parsed_tolerations: list[dict[str, Any]] = field(init=False, repr=False)

    def __post_init__(self):
        if not isinstance(self.gpus, int) or self.gpus < 0:
            raise ValueError("gpus: must be an integer, 0 or more")
        if self.job_deadline < 1:
            raise ValueError("job-deadline: must be at least 1 second")
        if self.job_ttl < 0:
            raise ValueError("job-ttl: must be 0 or more seconds")
        if not 0 <= self.job_backoff_limit <= 100:
            raise ValueError("job-backoff-limit: must be between 0 and 100")
        if not 1 <= self.num_nodes <= 1000:
            raise ValueError("num-nodes: must be between 1 and 1000")
        if not kubernetes_jobs.is_dns_name(self.training_runtime):
            raise ValueError("training-runtime: must be a Kubernetes object name")
        if self.trainer_image != self.trainer_image.strip() or " " in self.trainer_image:
            raise ValueError("trainer-image: must be an image reference without spaces")
        if self.experiment and (len(self.experiment) > 256 or "\n" in self.experiment):
            raise ValueError("experiment: must be one line of at most 256 characters")
        object.__setattr__(self, "parsed_node_selector", _node_selector(self.node_selector))
        object.__setattr__(self, "parsed_tolerations", _tolerations(self.tolerations))

    @property
    def placement(self) -> Placement:
        return Placement(self.gpus, self.parsed_node_selector, tuple(self.parsed_tolerations))

    @property
    def limits(self) -> Limits:
        return Limits(self.job_deadline, self.job_ttl, self.job_backoff_limit)

    @property
    def backend(self) -> str:
        return "TrainJob" if self.num_nodes > 1 else "Job"


def _yaml(text: str, option: str) -> Any:
    try:
        return yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as error:
        problem = str(getattr(error, "problem", "") or "not YAML or JSON")
        raise ValueError(f"{option}: {problem}") from None


def _node_selector(text: str) -> dict[str, str]:
    value = _yaml(text, "node-selector") or {}
    if not isinstance(value, dict):
        raise ValueError("node-selector: must be a mapping of node label to value")
    for key, label in value.items():
        if not isinstance(key, str) or not isinstance(label, str):
            raise ValueError(f"node-selector: {key}: labels and values are strings (quote them)")
    return value


def _tolerations(text: str) -> list[dict[str, Any]]:
    value = _yaml(text, "tolerations") or []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ValueError("tolerations: must be a list of tolerations (mappings)")
    for item in value:
        unknown = set(item) - _TOLERATION_KEYS
        if unknown:
            raise ValueError(f"tolerations: unknown field {', '.join(sorted(unknown))}")
        operator = item.get("operator", "Equal")
        if operator not in ("Exists", "Equal"):
            raise ValueError("tolerations: operator must be Exists or Equal")
        if operator == "Exists" and item.get("value"):
            raise ValueError("tolerations: an Exists toleration has no value")
        if item.get("effect", "") not in _EFFECTS:
            raise ValueError(f"tolerations: effect must be one of {', '.join(_EFFECTS[1:])}")
        seconds = item.get("tolerationSeconds")
        if seconds is not None and (
            not isinstance(seconds, int) or item.get("effect") != "NoExecute"
        ):
            raise ValueError("tolerations: tolerationSeconds is an integer, with NoExecute only")
        if not isinstance(item.get("key", ""), str) or not isinstance(item.get("value", ""), str):
            raise ValueError("tolerations: key and value are strings")
    return value


def _provider_changed(event: ops.EventBase) -> bool:
    """Whether a provider may have changed what runs read: a secret, or its CA (its data)."""
    return isinstance(event, ops.SecretChangedEvent) or (
        isinstance(event, ops.RelationChangedEvent)
        and event.relation.name in (training.DATASET_ENDPOINT, training.TRACKING_ENDPOINT)
    )


class TrainingCharm(ops.CharmBase):
    """Runs training work as Kubernetes Jobs and reports their ends."""

    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        self.tracing = charm_tracing.trace_charm(self)
        self.container = self.unit.get_container(CONTAINER)
        self.log_forwarding = LogForwarding(self, CONTAINER)
        self._kubernetes: Cluster | None = None
        for event in (
            *sidecar.workload_events(self, CONTAINER, STORAGE),
            *training.relation_events(self),
            self.on[CONTAINER].pebble_custom_notice,
        ):
            framework.observe(event, self._reconcile)
        framework.observe(self.on.collect_unit_status, self._on_collect_status)
        for kind in training.RUN_ACTIONS:
            framework.observe(self.on[kind].action, self._on_run_action)
        framework.observe(self.on.list_jobs_action, self._on_list_jobs)
        framework.observe(self.on.cancel_job_action, self._on_cancel_job)
        framework.observe(self.on.job_logs_action, self._on_job_logs)

    # --- goal state -------------------------------------------------------------------------

    @property
    def _data_dir(self) -> str:
        return sidecar.mount_location(self, CONTAINER, STORAGE)

    def _config(self) -> TrainingConfig:
        return self.load_config(TrainingConfig)

    def _config_problem(self) -> str | None:
        return sidecar.config_problem(self, TrainingConfig)

    def _records(self) -> JobRecords:
        return JobRecords(self.container, f"{self._data_dir}/jobs")

    def _cluster(self) -> Cluster:
        if self._kubernetes is None:  # one client per hook: it connects on first use
            self._kubernetes = Cluster(self.model.name, self.app.name)
        return self._kubernetes

    def _experiment(self) -> str:
        return self._config().experiment or self.app.name

    # --- reconcile --------------------------------------------------------------------------

    def _reconcile(self, event: ops.EventBase) -> None:
        """Bring the watcher, the relations and the reported jobs to the goal state."""
        if self.unit.is_leader():
            self._request_access()
        if self._config_problem() or not self.container.can_connect():
            return
        config = self._config()
        leader = self.unit.is_leader()
        layer = training_workload.watcher_layer(
            jobs_dir=f"{self._data_dir}/jobs",
            namespace=self.model.name,
            selector=kubernetes_jobs.selector(self.app.name),
            trainjobs=config.num_nodes > 1,
            enabled=leader,  # the leader starts the jobs, and watches them
        )
        pebble.apply_layer(self.container, LAYER, layer, restart=False)
        if not leader:
            return
        if _provider_changed(event):
            self._refresh_run_credentials()
        records = self._records()
        for job in records.unreported():
            self._act_on(job)
            records.mark_reported(job)
        self._offer_relabel_batches([])
        if isinstance(event, ops.UpdateStatusEvent):
            self._record_lost_jobs(records)
        training_loop.reconcile(self.model, records, self._start_for_loop(config))

    def _refresh_run_credentials(self) -> None:
        """A provider rotated a secret or changed its CA: the runs' Secret gets them.

        Pods started from now on (a Job's retry included) read them; a running pod keeps the
        values it started with (Kubernetes resolves secretKeyRef at container start).
        """
        registry_access = training.registry(self.model).access
        if registry_access is None:
            return
        tracking_access = training.tracking(self.model).access
        _settings, credentials = training.environment(
            registry_access, tracking_access, workdir=training_workload.WORKDIR
        )
        ca = training_workload.run_ca(registry_access, tracking_access)
        secret = Credentials(
            kubernetes_jobs.credentials_name(self.app.name), credentials, ca.files
        )
        labels = kubernetes_jobs.app_labels(self.app.name)
        try:
            cluster = self._cluster()
            cluster.apply_secret(secret.secret(labels, cluster.owner()))
        except KubernetesError as error:
            logger.warning("could not refresh the runs' credentials: %s", error)

    def _request_access(self) -> None:
        for relation in self.model.relations[DATASET_ENDPOINT]:
            # Write: augment makes new versions (the other jobs only read).
            databags.save_app_data(relation, self.app, DatasetRequirerData(access="write"))
        experiment = self._experiment() if not self._config_problem() else self.app.name
        for relation in self.model.relations[TRACKING_ENDPOINT]:
            databags.save_app_data(relation, self.app, TrackingRequirerData(experiment=experiment))

    def _act_on(self, job: Job) -> None:
        """Act once on an ended job: log a failure, offer a batch, delete a TrainJob."""
        training.act_on_ended(self.model, self.app, job)
        if job.params.get("backend") == "TrainJob":
            # A TrainJob has no TTL of its own: it goes once its end is recorded.
            try:
                self._cluster().delete(kubernetes_jobs.job_name(self.app.name, job.id), "TrainJob")
            except KubernetesError as error:
                logger.warning("cannot delete the TrainJob of job %s: %s", job.id, error)

    def _offer_relabel_batches(self, new: list[dict[str, Any]]) -> None:
        training.offer_relabel_batches(self.model, self.app, new)

    def _record_lost_jobs(self, records: JobRecords) -> None:
        """Record as failed the running jobs whose Kubernetes object is gone (update-status)."""
        running = [job for job in records.list() if not job.ended]
        if not running:
            return
        try:
            present = {run.job_id for run in self._cluster().runs(trainjobs=self._trainjobs())}
        except KubernetesError as error:
            logger.warning("cannot look for lost jobs: %s", error)
            return
        now = time.time()
        for job in running:
            if job.id not in present and now - jobs.started_at(job) > LOST_AFTER:
                records.record_end(
                    job.id, 1, stderr="its Kubernetes object is gone and its end was not seen\n"
                )

    def _trainjobs(self) -> bool:
        return self._config().num_nodes > 1

    # --- status -----------------------------------------------------------------------------

    def _on_collect_status(self, event: ops.CollectStatusEvent) -> None:
        config_problem = self._config_problem()
        if config_problem:
            event.add_status(ops.BlockedStatus(config_problem))
            return
        if not self.container.can_connect():
            event.add_status(ops.WaitingStatus("waiting for Pebble in the training container"))
            return
        if not self.unit.is_leader():
            event.add_status(ops.ActiveStatus("standby: the leader unit runs the jobs"))
            return
        for problem in (
            training.registry(self.model).problem,
            training.tracking(self.model).problem,
        ):
            if problem:
                event.add_status(problem)
        config = self._config()
        cluster = self._cluster()
        try:
            if config.num_nodes > 1 and not cluster.trainjobs_available():
                event.add_status(
                    ops.BlockedStatus(
                        "num-nodes > 1 needs Kubeflow Trainer: no TrainJob CRD in the cluster"
                    )
                )
            runs = cluster.runs(trainjobs=config.num_nodes > 1)
        except KubernetesError as error:
            if error.forbidden:
                event.add_status(
                    ops.BlockedStatus(
                        f"no access to the Kubernetes API: run `juju trust {self.app.name}"
                        " --scope=cluster`"
                    )
                )
            else:
                event.add_status(ops.WaitingStatus(str(error)))
            return
        watcher = self.container.get_services(training_workload.WATCHER_SERVICE)
        if not all(service.is_running() for service in watcher.values()):
            event.add_status(ops.WaitingStatus("waiting for the job watcher to start"))
        loop = training_loop.add_status(event, self.model, self._records())
        running = sum(1 for run in runs if run.state == "running")
        backend = (
            f"TrainJob on {config.training_runtime}, {config.num_nodes} nodes"
            if config.num_nodes > 1
            else "Job"
        )
        gpus = f", {config.gpus} GPU(s) each" if config.gpus else ""
        jobs_running = f"{running} job(s) running" if running else "no job running"
        event.add_status(ops.ActiveStatus(f"backend: {backend}{gpus}; {jobs_running}{loop}"))

    # --- actions ----------------------------------------------------------------------------

    def _on_run_action(self, event: ops.ActionEvent) -> None:
        """Create the run's Job (or TrainJob); report its id, or its result with wait."""
        kind, params = training.load_run_action(event)
        config = self._ready(event)
        if config is None:
            return
        access = training.access_for_run(event, self.model, kind, params)
        if access is None:
            return
        try:
            job, run = self._start_run(config, kind, params, access)
        except RunError as error:
            event.fail(error.reason)
            return
        event.log(f"job {job.id} started: {config.backend} {run.name}")
        shown = {"job": job.id, "name": run.name, "backend": config.backend}
        training.report_job(event, self._records(), job, shown, self._act_on, wait=params.wait)

    def _ready(self, event: ops.ActionEvent) -> TrainingConfig | None:
        """The config, when this unit can run jobs now; else None after failing ``event``."""
        if not self.unit.is_leader():
            event.fail("run it on the leader unit: it starts and watches the jobs")
            return None
        config_problem = self._config_problem()
        if config_problem:
            event.fail(f"cannot run while blocked: {config_problem}")
            return None
        if not self.container.can_connect():
            event.fail("the training container is not ready yet")
            return None
        return self._config()

    def _start_for_loop(self, config: TrainingConfig) -> training_loop.StartRun:
        """How the approach's loop starts a run: as an action does, from this hook."""

        def start(
            kind: str, params: RunParams, access: RunAccess, shown: Mapping[str, str]
        ) -> Job:
            return self._start_run(config, kind, params, access, shown)[0]

        return start

    def _start_run(
        self,
        config: TrainingConfig,
        kind: str,
        params: RunParams,
        access: RunAccess,
        shown: Mapping[str, str] | None = None,
    ) -> tuple[Job, TrainingRun]:
        """Record the run's job and create its Job (or TrainJob); ``RunError``: why not.

        ``shown``: more job parameters for list-jobs (who started it).
        """
        version = access.version
        settings, credentials = training_workload.environment(
            access, params, folder=training_workload.ca_dir(config.backend)
        )
        secret = Credentials(
            kubernetes_jobs.credentials_name(self.app.name),
            credentials,
            training_workload.run_ca(access.registry, access.tracking).files,
        )
        records = self._records()
        job: Job | None = None
        try:
            run = self._prepare_run(config, kind, settings, secret, params, version)
            job = records.create(
                kind, {**params.shown(version), "backend": config.backend, **(shown or {})}
            )
            run = dataclasses.replace(run, job_id=job.id)
            manifest = (
                kubernetes_jobs.trainjob_manifest(run)
                if config.backend == "TrainJob"
                else kubernetes_jobs.job_manifest(run)
            )
            self._cluster().create(manifest)
        except (KubernetesError, ops.ModelError, ValueError) as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            if job is not None:  # recorded, so list-jobs says why it never ran
                jobs.record_failure(records, job, reason)
            raise RunError(reason, job) from None
        except ops.pebble.Error as error:
            raise RunError(f"cannot record the job: {str(error).splitlines()[0]}") from None
        return job, run

    def _prepare_run(
        self,
        config: TrainingConfig,
        kind: str,
        settings: dict[str, str],
        secret: Credentials,
        params: RunParams,
        version: str,
    ) -> TrainingRun:
        """The run, without its job id yet: its Secrets are in place when this returns."""
        cluster = self._cluster()
        if config.backend == "TrainJob" and not cluster.trainjobs_available():
            raise ValueError("num-nodes > 1 needs Kubeflow Trainer: no TrainJob CRD")
        image, pull_credentials = self._trainer_image(config)
        owner = cluster.owner()
        labels = kubernetes_jobs.app_labels(self.app.name)
        cluster.apply_secret(secret.secret(labels, owner))
        pull_secret = None
        if pull_credentials is not None:
            pull_secret = kubernetes_jobs.image_pull_secret_name(self.app.name)
            cluster.apply_secret(
                kubernetes_jobs.image_pull_secret(
                    pull_secret, image, *pull_credentials, labels=labels, owner=owner
                )
            )
        return TrainingRun(
            app=self.app.name,
            job_id="",
            kind=kind,
            image=image,
            command=training_workload.command(kind, params.arguments(version)),
            environment=settings,
            credentials=secret,
            placement=config.placement,
            limits=config.limits,
            num_nodes=config.num_nodes,
            runtime=config.training_runtime,
            owner=owner,
            image_pull_secret=pull_secret,
            workdir=training_workload.WORKDIR,
            ca_dir=training_workload.ca_dir(config.backend),
        )

    def _trainer_image(self, config: TrainingConfig) -> tuple[str, tuple[str, str] | None]:
        """The runs' image and its registry credentials: the config's, or the resource's."""
        if config.trainer_image:
            return config.trainer_image, None
        try:
            path = self.model.resources.fetch(IMAGE_RESOURCE)
            details = yaml.safe_load(path.read_text()) or {}
        except (ops.ModelError, NameError, OSError, yaml.YAMLError) as error:
            raise ValueError(f"cannot read the {IMAGE_RESOURCE} resource: {error}") from None
        image = details.get("registrypath") if isinstance(details, dict) else None
        if not image:
            raise ValueError(f"the {IMAGE_RESOURCE} resource names no image: set trainer-image")
        username, password = details.get("username"), details.get("password")
        return str(image), (str(username), str(password)) if username and password else None

    def _on_list_jobs(self, event: ops.ActionEvent) -> None:
        if not self.container.can_connect():
            event.fail("the training container is not ready yet")
            return
        jobs.list_for_action(event, self._records())

    def _on_cancel_job(self, event: ops.ActionEvent) -> None:
        params = event.load_params(JobParams, errors="fail")
        if self._ready(event) is None:
            return
        records = self._records()
        job = jobs.find_running_for_action(event, records, params.job)
        if job is None:
            return
        backend = job.params.get("backend", "Job")
        jobs.record_cancelled(records, job)  # the watcher, seeing the deletion, adds nothing
        try:
            deleted = self._cluster().delete(
                kubernetes_jobs.job_name(self.app.name, job.id), backend
            )
        except KubernetesError as error:
            event.fail(f"recorded as cancelled, but its {backend} is not deleted: {error}")
            return
        event.set_results(
            {
                "job": job.id,
                "state": "cancelled",
                "deleted": "yes" if deleted else "no (gone already)",
            }
        )

    def _on_job_logs(self, event: ops.ActionEvent) -> None:
        params = event.load_params(JobLogsParams, errors="fail")
        if not self.container.can_connect():
            event.fail("the training container is not ready yet")
            return
        records = self._records()
        job = jobs.find_for_action(event, records, params.job)
        if job is None:
            return
        if job.ended:
            text = records.read_file(job.id, "log") or ""
        else:
            name = kubernetes_jobs.job_name(self.app.name, job.id)
            try:
                text = self._cluster().log(name, job.params.get("backend", "Job"), params.lines)
            except KubernetesError as error:
                event.fail(str(error))
                return
        event.set_results(jobs.log_results(job, text, params.lines))


if __name__ == "__main__":  # pragma: nocover
    ops.main(TrainingCharm)
