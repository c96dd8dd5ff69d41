"""What training-k8s's unit tests share: the model, relations as providers write them, schemas.

The Kubernetes API is ``tests/fake_kubernetes.py`` (real HTTP, lightkube unchanged). What it
accepts is checked two ways:

- Jobs, Secrets and everything inside them against lightkube's own models (the Kubernetes
  1.37 OpenAPI schema): a field the model does not know is reported, as the API server's
  strict field validation does;
- TrainJobs against ``TrainJobSchema`` below, written from the field list in the project's
  shared FACTS (Kubeflow Trainer v2, ``trainer.kubeflow.org/v1alpha1``): ``runtimeRef``
  (name, apiGroup, kind) and ``trainer`` (image, command, args, env, numNodes,
  resourcesPerNode), plus the other top-level fields 2.1 and 2.2 share (``suspend``,
  ``managedBy``). The fields that differ between them (2.1's ``podTemplateOverrides``,
  2.2's ``runtimePatches``) are left out on purpose, so using either fails here.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import pydantic
from lightkube.models.core_v1 import EnvVar, ResourceRequirements
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import Secret
from ops import testing

from tests.fake_kubernetes import FakeKubernetes

MODEL = "mlops"
APP = "training-k8s"
DATA_DIR = "/var/lib/training"
JOBS_DIR = f"{DATA_DIR}/jobs"
GIT_PASSWORD = "git-s3cr3t-password"
S3_SECRET = "s3-s3cr3t-key"
MLFLOW_PASSWORD = "mlflow-s3cr3t-password"
SECRETS = (GIT_PASSWORD, S3_SECRET, MLFLOW_PASSWORD)
IMAGE = "localhost:32000/training:0.1.0"
# What a provider serving HTTPS publishes as ``ca`` (the databag checks the PEM's shape only).
REGISTRY_CA = "-----BEGIN CERTIFICATE-----\nUmVnaXN0cnkgQ0E=\n-----END CERTIFICATE-----\n"
TRACKING_CA = "-----BEGIN CERTIFICATE-----\nVHJhY2tpbmcgQ0E=\n-----END CERTIFICATE-----\n"


def unknown_fields(model: Any, body: dict[str, Any]) -> list[str]:
    """The fields of ``body`` that lightkube's ``model`` drops: unknown to Kubernetes."""
    try:
        kept = model.from_dict(body, lazy=False).to_dict()
    except (TypeError, AttributeError, ValueError) as error:
        return [f"not a {model.__name__}: {error}"]
    return _dropped(json.loads(json.dumps(body)), kept, "")


def _dropped(given: Any, kept: Any, path: str) -> list[str]:
    if isinstance(given, dict) and isinstance(kept, dict):
        problems = []
        for key, value in given.items():
            if key not in kept and value is not None:
                problems.append(f"unknown field {path}{key}")
            elif key in kept:
                problems += _dropped(value, kept[key], f"{path}{key}.")
        return problems
    if isinstance(given, list) and isinstance(kept, list):
        return [
            p
            for i, (g, k) in enumerate(zip(given, kept, strict=False))
            for p in _dropped(g, k, f"{path}{i}.")
        ]
    return []


class _Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", strict=True)


class RuntimeRef(_Strict):
    name: str
    apiGroup: str | None = None  # noqa: N815 - the CRD's field names
    kind: Literal["ClusterTrainingRuntime", "TrainingRuntime"] | None = None


class Trainer(_Strict):
    image: str | None = None
    command: list[str] | None = None
    args: list[str] | None = None
    env: list[dict[str, Any]] | None = None
    numNodes: int | None = pydantic.Field(default=None, ge=1)  # noqa: N815
    resourcesPerNode: dict[str, Any] | None = None  # noqa: N815
    numProcPerNode: int | str | None = None  # noqa: N815

    @pydantic.field_validator("env")
    @classmethod
    def _env_vars(cls, value: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        for variable in value or []:
            problems = unknown_fields(EnvVar, variable)
            if problems:
                raise ValueError("; ".join(problems))
        return value

    @pydantic.field_validator("resourcesPerNode")
    @classmethod
    def _resources(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        problems = unknown_fields(ResourceRequirements, value) if value else []
        if problems:
            raise ValueError("; ".join(problems))
        return value


class TrainJobSpec(_Strict):
    runtimeRef: RuntimeRef  # noqa: N815
    trainer: Trainer | None = None
    suspend: bool | None = None
    managedBy: str | None = None  # noqa: N815


class TrainJobSchema(_Strict):
    apiVersion: Literal["trainer.kubeflow.org/v1alpha1"]  # noqa: N815
    kind: Literal["TrainJob"]
    metadata: dict[str, Any]
    spec: TrainJobSpec

    @pydantic.field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, Any]) -> dict[str, Any]:
        problems = unknown_fields(ObjectMeta, value)
        if problems:
            raise ValueError("; ".join(problems))
        return value


def trainjob_problems(body: dict[str, Any]) -> list[str]:
    try:
        TrainJobSchema.model_validate(body)
    except pydantic.ValidationError as error:
        return [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()]
    return []


def fake_cluster() -> FakeKubernetes:
    """An API server that validates what the charm creates, with the app's StatefulSet."""
    fake = FakeKubernetes(
        validators={
            "jobs": lambda body: unknown_fields(Job, body),
            "secrets": lambda body: unknown_fields(Secret, body),
            "trainjobs": trainjob_problems,
        }
    )
    fake.add("apis/apps/v1", MODEL, "statefulsets", {"metadata": {"name": APP}, "spec": {}})
    return fake


# --- relations as the providers write them ------------------------------------------------------


def dataset_relation(
    *,
    access: str = "write",
    latest: str | None = "v2",
    pinned: str | None = None,
    ca: str | None = None,
) -> tuple[testing.Relation, testing.Secret]:
    secret = testing.Secret(
        tracked_content={
            "username": "training-k8s",
            "password": GIT_PASSWORD,
            "access-key": "mlopsAKIA",
            "secret-key": S3_SECRET,
        }
    )
    data = {
        "registry_url": "http://data-versioning-k8s.mlops.svc.cluster.local:8080/registry.git",
        "remote_url": "s3://dvc",
        "remote_endpoint": "http://data-versioning-k8s.mlops.svc.cluster.local:9000",
        "access": access,
        "credentials_secret_id": secret.id,
    }
    if latest:
        data["latest_version"] = latest
    if pinned:
        data["pinned_version"] = pinned
    if ca:
        data["ca"] = ca
    relation = testing.Relation(
        "mlops-dataset",
        remote_app_name="data-versioning-k8s",
        remote_app_data={key: json.dumps(value) for key, value in data.items()},
    )
    return relation, secret


def tracking_relation(*, ca: str | None = None) -> tuple[testing.Relation, testing.Secret]:
    secret = testing.Secret(
        tracked_content={"username": "training-k8s", "password": MLFLOW_PASSWORD}
    )
    data = {
        "tracking_uri": "http://tracking-k8s.mlops.svc.cluster.local:5000",
        "credentials_secret_id": secret.id,
        "default_experiment": APP,
    }
    if ca:
        data["ca"] = ca
    relation = testing.Relation(
        "mlops-tracking",
        remote_app_name="tracking-k8s",
        remote_app_data={key: json.dumps(value) for key, value in data.items()},
    )
    return relation, secret


def relabel_relation(**acknowledged: list[str]) -> testing.Relation:
    return testing.Relation(
        "mlops-relabel",
        remote_app_name="labelling-k8s",
        remote_app_data={key: json.dumps(value) for key, value in acknowledged.items()},
    )


def app_data(state: testing.State, relation: testing.Relation) -> dict[str, Any]:
    databag = state.get_relation(relation.id).local_app_data
    return {key: json.loads(value) for key, value in databag.items()}
