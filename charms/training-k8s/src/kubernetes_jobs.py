"""Training runs as Kubernetes objects: their manifests and the few API calls the charm makes.

Nothing here knows about Juju. From a ``TrainingRun`` (what to run, where, with which
limits) it builds a ``batch/v1`` Job, or a Kubeflow Trainer ``TrainJob`` for a multi-node
run, and the Secret the run's credentials come from: the pod spec names the Secret's keys
(``secretKeyRef``), never their values; the providers' CAs are files of that Secret, mounted
read-only (a Job only: a TrainJob has no field to mount them with). ``Cluster`` is the
charm's lightkube client: create, list by label, delete (background propagation: a bare delete
can orphan a Job's pods), read a pod's log, detect the TrainJob CRD. Every API failure becomes
a ``KubernetesError`` whose message is one line; a 403 says that the application needs
``juju trust``.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from lightkube import ApiError, Client, ConfigError
from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.batch_v1 import (
    JobSpec,
    PodFailurePolicy,
    PodFailurePolicyOnExitCodesRequirement,
    PodFailurePolicyOnPodConditionsPattern,
    PodFailurePolicyRule,
)
from lightkube.models.core_v1 import (
    Container,
    EmptyDirVolumeSource,
    EnvVar,
    EnvVarSource,
    KeyToPath,
    LocalObjectReference,
    PodSpec,
    PodTemplateSpec,
    ResourceRequirements,
    SecretKeySelector,
    SecretVolumeSource,
    SecurityContext,
    Toleration,
    Volume,
    VolumeMount,
)
from lightkube.models.meta_v1 import ObjectMeta, OwnerReference
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.apps_v1 import StatefulSet
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import Pod, Secret
from lightkube.types import CascadeType

from job_watcher import JOB_ID_LABEL, JOBS, TRAINER_CONTAINERS, TRAINJOBS, outcome
from mlops_charms.client_ca import ClientCA

APP_LABEL = "mlops-stack.dev/app"
KIND_LABEL = "mlops-stack.dev/job-kind"
PART_OF = {"app.kubernetes.io/part-of": "mlops-stack", "app.kubernetes.io/component": "training"}
TRAINER_CONTAINER = TRAINER_CONTAINERS[0]  # the Job's container
GPU_RESOURCE = "nvidia.com/gpu"
TRAINJOB_CRD = "trainjobs.trainer.kubeflow.org"
TRAINER_API_GROUP = "trainer.kubeflow.org"
TrainJob = create_namespaced_resource(TRAINER_API_GROUP, "v1alpha1", "TrainJob", "trainjobs")
# The trainer's own failures (error: ..., exit 1; bad usage, exit 2): another try cannot help.
FAIL_AT_ONCE_EXIT_CODES = (1, 2)
_DNS_LABEL = re.compile(r"[^a-z0-9-]+")
_DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
MAX_LOG_LINES = 500  # job_watcher.LOG_LINES: what a job's folder keeps


class KubernetesError(Exception):
    """An API call failed; the message is one line. ``forbidden``: the app lacks trust."""

    def __init__(self, message: str, *, forbidden: bool = False, not_found: bool = False):
        super().__init__(message)
        self.forbidden = forbidden
        self.not_found = not_found


@dataclass(frozen=True)
class Placement:
    """Where the run's pods go: GPUs per pod, node selector, tolerations."""

    gpus: int = 0
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: Sequence[Mapping[str, Any]] = ()


@dataclass(frozen=True)
class Limits:
    """How long a run may take, how often its pods are retried, how long it is kept."""

    active_deadline_seconds: int = 86400
    ttl_seconds_after_finished: int = 86400
    backoff_limit: int = 1


@dataclass(frozen=True)
class Credentials:
    """The Secret a run's credentials come from: its name and the variables it holds.

    ``files``: the providers' CAs (file name -> PEM), in the same Secret (one object for the
    runs; the API applies it whole), mounted as files rather than read as variables.
    """

    name: str
    values: Mapping[str, str] = field(repr=False)
    files: Mapping[str, str] = field(default_factory=dict, repr=False)

    def secret(self, labels: Mapping[str, str], owner: OwnerReference | None) -> Secret:
        return Secret(
            metadata=ObjectMeta(
                name=self.name, labels=dict(labels), ownerReferences=[owner] if owner else None
            ),
            type="Opaque",
            stringData={**self.values, **self.files},
        )

    def files_volume(self, volume: str) -> Volume:
        """The Secret's files only (not its credentials) as a volume."""
        items = [KeyToPath(key=name, path=name) for name in sorted(self.files)]
        return Volume(name=volume, secret=SecretVolumeSource(secretName=self.name, items=items))

    def environment(self) -> list[EnvVar]:
        """One variable per key, each read from the Secret: no value in the pod spec."""
        return [
            EnvVar(
                name=name,
                valueFrom=EnvVarSource(secretKeyRef=SecretKeySelector(name=self.name, key=name)),
            )
            for name in sorted(self.values)
        ]


@dataclass(frozen=True)
class TrainingRun:
    """One run to create: a Job, or a TrainJob when ``num_nodes`` > 1."""

    app: str
    job_id: str
    kind: str
    image: str
    command: Sequence[str]
    environment: Mapping[str, str]  # plain settings only: URLs, names, paths
    credentials: Credentials
    placement: Placement = Placement()
    limits: Limits = Limits()
    num_nodes: int = 1
    runtime: str = "torch-distributed"
    owner: OwnerReference | None = None
    image_pull_secret: str | None = None
    workdir: str = "/var/lib/mlops-training"  # a scratch volume: the registry clone, the data
    ca_dir: str = "/etc/mlops-training/ca"  # the credentials' files (CAs), read-only

    @property
    def name(self) -> str:
        return job_name(self.app, self.job_id)

    @property
    def labels(self) -> dict[str, str]:
        return {**app_labels(self.app), JOB_ID_LABEL: self.job_id, KIND_LABEL: self.kind}

    def env(self) -> list[EnvVar]:
        plain = [
            EnvVar(name=name, value=value) for name, value in sorted(self.environment.items())
        ]
        return plain + self.credentials.environment()


def app_labels(app: str) -> dict[str, str]:
    """The labels every object of the application carries (its watcher's selector)."""
    return {**PART_OF, APP_LABEL: app}


def selector(app: str) -> str:
    """The label selector of the application's runs."""
    return f"{APP_LABEL}={app}"


def job_name(app: str, job_id: str) -> str:
    """A DNS label (at most 63 characters) naming the run: ``<app>-<job id>``."""
    prefix = _dns_label(app)[: 62 - len(job_id)].rstrip("-")
    return f"{prefix}-{job_id}"


def credentials_name(app: str) -> str:
    """The application's credentials Secret: ``<app>-training-credentials``."""
    return f"{_dns_label(app)[:40].rstrip('-')}-training-credentials"


def image_pull_secret_name(app: str) -> str:
    """The application's registry credential for its trainer image."""
    return f"{_dns_label(app)[:40].rstrip('-')}-trainer-image-pull"


def is_dns_name(name: str) -> bool:
    """Whether ``name`` can name a Kubernetes object (a DNS subdomain)."""
    return bool(_DNS_NAME.match(name))


def _dns_label(text: str) -> str:
    return _DNS_LABEL.sub("-", text.lower()).strip("-")


def image_pull_secret(
    name: str,
    image: str,
    username: str,
    password: str,
    *,
    labels: Mapping[str, str],
    owner: OwnerReference | None,
) -> Secret:
    """A registry credential for ``image`` (a Charmhub-hosted resource needs one)."""
    registry = image.split("/", 1)[0]
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    config = {"auths": {registry: {"username": username, "password": password, "auth": auth}}}
    return Secret(
        metadata=ObjectMeta(
            name=name, labels=dict(labels), ownerReferences=[owner] if owner else None
        ),
        type="kubernetes.io/dockerconfigjson",
        stringData={".dockerconfigjson": json.dumps(config)},
    )


# --- manifests ---------------------------------------------------------------------------------


def job_manifest(run: TrainingRun) -> Job:
    """The ``batch/v1`` Job of a single-node run."""
    limits = {GPU_RESOURCE: str(run.placement.gpus)} if run.placement.gpus else None
    mounts = [VolumeMount(name="work", mountPath=run.workdir)]
    volumes = [Volume(name="work", emptyDir=EmptyDirVolumeSource())]
    if run.credentials.files:
        mounts.append(VolumeMount(name="ca", mountPath=run.ca_dir, readOnly=True))
        volumes.append(run.credentials.files_volume("ca"))
    container = Container(
        name=TRAINER_CONTAINER,
        image=run.image,
        command=list(run.command),
        env=run.env(),
        resources=ResourceRequirements(limits=limits) if limits else None,
        volumeMounts=mounts,
        securityContext=SecurityContext(allowPrivilegeEscalation=False),
    )
    pod = PodSpec(
        containers=[container],
        restartPolicy="Never",  # podFailurePolicy needs it; retries are new pods
        nodeSelector=dict(run.placement.node_selector) or None,
        tolerations=[Toleration(**toleration) for toleration in run.placement.tolerations] or None,
        volumes=volumes,
        imagePullSecrets=[LocalObjectReference(name=run.image_pull_secret)]
        if run.image_pull_secret
        else None,
        automountServiceAccountToken=False,  # the trainer never calls the Kubernetes API
    )
    failure_policy = PodFailurePolicy(
        rules=[
            PodFailurePolicyRule(
                action="FailJob",
                onExitCodes=PodFailurePolicyOnExitCodesRequirement(
                    containerName=TRAINER_CONTAINER,
                    operator="In",
                    values=list(FAIL_AT_ONCE_EXIT_CODES),
                ),
            ),
            # Evicted or preempted (a node drained): not the run's fault, not a retry spent.
            PodFailurePolicyRule(
                action="Ignore",
                onPodConditions=[
                    PodFailurePolicyOnPodConditionsPattern(type="DisruptionTarget", status="True")
                ],
            ),
        ]
    )
    return Job(
        metadata=ObjectMeta(
            name=run.name,
            labels=run.labels,
            ownerReferences=[run.owner] if run.owner else None,
        ),
        spec=JobSpec(
            template=PodTemplateSpec(metadata=ObjectMeta(labels=run.labels), spec=pod),
            backoffLimit=run.limits.backoff_limit,
            activeDeadlineSeconds=run.limits.active_deadline_seconds,
            ttlSecondsAfterFinished=run.limits.ttl_seconds_after_finished,
            podFailurePolicy=failure_policy,
        ),
    )


def trainjob_manifest(run: TrainingRun) -> Any:
    """The Kubeflow Trainer ``TrainJob`` of a multi-node run, on a torch runtime.

    Only the fields Trainer 2.1 and 2.2+ share: ``runtimeRef``, ``trainer`` (image,
    command, env, numNodes, resourcesPerNode); the labels are the object's. Node selectors and
    tolerations live in the ClusterTrainingRuntime (2.1 overrides them with
    ``podTemplateOverrides``, 2.2 with ``runtimePatches``: no field works in both).
    """
    env = run.env()
    if run.credentials.files:
        # Mounting a file needs podTemplateOverrides (2.1) or runtimePatches (2.2): no common
        # field. The CAs come as variables from the run's Secret instead, and mlops-workload
        # writes them to ``run.ca_dir`` (where the path variables point) before it runs.
        settings, variables = ClientCA(run.ca_dir, dict(run.credentials.files)).inline()
        env += [EnvVar(name=name, value=value) for name, value in settings.items()]
        env += [
            EnvVar(
                name=variable,
                valueFrom=EnvVarSource(
                    secretKeyRef=SecretKeySelector(name=run.credentials.name, key=file)
                ),
            )
            for variable, file in variables.items()
        ]
    trainer: dict[str, Any] = {
        "image": run.image,
        "command": list(run.command),
        "env": [variable.to_dict() for variable in env],
        "numNodes": run.num_nodes,
    }
    if run.placement.gpus:
        trainer["resourcesPerNode"] = {"limits": {GPU_RESOURCE: str(run.placement.gpus)}}
    metadata = ObjectMeta(
        name=run.name, labels=run.labels, ownerReferences=[run.owner] if run.owner else None
    )
    return TrainJob(
        apiVersion=f"{TRAINER_API_GROUP}/v1alpha1",  # the API server needs both in the body
        kind="TrainJob",
        metadata=metadata,
        spec={
            "runtimeRef": {
                "name": run.runtime,
                "apiGroup": TRAINER_API_GROUP,
                "kind": "ClusterTrainingRuntime",
            },
            "trainer": trainer,
        },
    )


# --- the API -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunObject:
    """A run as the API shows it: a Job or a TrainJob of the application."""

    name: str
    job_id: str
    kind: str
    backend: str  # "Job" or "TrainJob"
    state: str  # "running", "succeeded" or "failed"
    reason: str = ""


class Cluster:
    """The charm's calls to the Kubernetes API, in the model's namespace (lightkube)."""

    def __init__(self, namespace: str, app: str):
        self.namespace = namespace
        self.app = app
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            with _one_line("load the Kubernetes config"):
                self._client = Client(namespace=self.namespace, field_manager=self.app)
        return self._client

    def trainjobs_available(self) -> bool:
        """Whether Kubeflow Trainer's TrainJob CRD is installed."""
        try:
            with _one_line("read the TrainJob CRD"):
                self.client.get(CustomResourceDefinition, TRAINJOB_CRD)
        except KubernetesError as error:
            if error.not_found:
                return False
            raise
        return True

    def owner(self) -> OwnerReference | None:
        """The application's StatefulSet: its runs go when the application is removed."""
        try:
            with _one_line("read the application's StatefulSet"):
                stateful_set = self.client.get(StatefulSet, self.app)
        except KubernetesError as error:
            if error.not_found:
                return None
            raise
        metadata = stateful_set.metadata
        if metadata is None or not metadata.uid:
            return None
        return OwnerReference(
            apiVersion="apps/v1",
            kind="StatefulSet",
            name=self.app,
            uid=metadata.uid,
            blockOwnerDeletion=False,
        )

    def apply_secret(self, secret: Secret) -> None:
        """Create or update ``secret`` (server-side apply: only our fields)."""
        assert secret.metadata is not None and secret.metadata.name
        with _one_line("write the credentials Secret"):
            self.client.apply(secret, force=True)

    def create(self, manifest: Any) -> None:
        with _one_line(f"create {type(manifest).__name__} {manifest.metadata.name}"):
            self.client.create(manifest)

    def runs(self, *, trainjobs: bool) -> list[RunObject]:
        """The application's Jobs (and TrainJobs), newest first."""
        found: list[RunObject] = []
        kinds: list[tuple[Any, str]] = [(Job, "Job")]
        if trainjobs:
            kinds.append((TrainJob, "TrainJob"))
        for resource, backend in kinds:
            with _one_line(f"list {backend}s"):
                for obj in self.client.list(resource, labels={APP_LABEL: self.app}):
                    found.append(_run_object(obj, backend))
        return found

    def delete(self, name: str, backend: str) -> bool:
        """Delete a run and, in the background, its pods; False when it is gone already."""
        resource = TrainJob if backend == "TrainJob" else Job
        try:
            with _one_line(f"delete {backend} {name}"):
                self.client.delete(resource, name, cascade=CascadeType.BACKGROUND)
        except KubernetesError as error:
            if error.not_found:
                return False
            raise
        return True

    def delete_secret(self, name: str) -> None:
        try:
            with _one_line(f"delete Secret {name}"):
                self.client.delete(Secret, name)
        except KubernetesError as error:
            if not error.not_found:
                raise

    def log(self, name: str, backend: str, lines: int) -> str:
        """The last ``lines`` of the trainer's log in the run's newest pod."""
        label = (TRAINJOBS if backend == "TrainJob" else JOBS).pod_label
        with _one_line(f"list the pods of {name}"):
            pods = list(self.client.list(Pod, labels={label: name}))
        if not pods:
            return ""
        newest = max(
            pods, key=lambda pod: str(pod.metadata.creationTimestamp if pod.metadata else "")
        )
        assert newest.metadata is not None and newest.metadata.name
        names = [c.name for c in (newest.spec.containers if newest.spec else [])]
        container = next((n for n in TRAINER_CONTAINERS if n in names), None)
        with _one_line(f"read the log of {newest.metadata.name}"):
            return "".join(
                self.client.log(newest.metadata.name, container=container, tail_lines=lines)
            )


def _run_object(obj: Any, backend: str) -> RunObject:
    as_dict = obj if isinstance(obj, dict) else obj.to_dict()
    metadata = as_dict.get("metadata") or {}
    labels = metadata.get("labels") or {}
    end = outcome(as_dict)
    return RunObject(
        name=str(metadata.get("name", "")),
        job_id=str(labels.get(JOB_ID_LABEL, "")),
        kind=str(labels.get(KIND_LABEL, "")),
        backend=backend,
        state=end[0] if end else "running",
        reason=end[1] if end else "",
    )


@contextmanager
def _one_line(what: str) -> Iterator[None]:
    """Turn lightkube's and httpx's failures into a one-line ``KubernetesError``."""
    try:
        yield
    except ApiError as error:
        code = error.status.code or 0
        message = " ".join(str(error.status.message or error).split())
        if code == 403:
            raise KubernetesError(
                f"cannot {what}: forbidden: the application needs `juju trust`",
                forbidden=True,
            ) from None
        raise KubernetesError(f"cannot {what}: {message}", not_found=code == 404) from None
    except ConfigError as error:
        raise KubernetesError(f"cannot {what}: {error}") from None
    except httpx.HTTPError as error:
        raise KubernetesError(f"cannot {what}: the API is not reachable ({error})") from None
