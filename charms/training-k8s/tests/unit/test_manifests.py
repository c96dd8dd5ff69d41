"""The Job, TrainJob and Secret manifests: valid for Kubernetes, secrets only by reference."""

from __future__ import annotations

import json

import pytest
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import Secret
from training_testing import SECRETS, trainjob_problems, unknown_fields

import kubernetes_jobs
from kubernetes_jobs import Credentials, Limits, Placement, TrainingRun

CREDENTIALS = Credentials(
    "training-k8s-training-credentials",
    {"MLOPS_REGISTRY_PASSWORD": SECRETS[0], "AWS_SECRET_ACCESS_KEY": SECRETS[1]},
)


def _run(**changes) -> TrainingRun:
    run = {
        "app": "training-k8s",
        "job_id": "20260101120000-0001",
        "kind": "train",
        "image": "localhost:32000/training:0.1.0",
        "command": ["/opt/mlops/bin/mlops-workload", "training", "train", "--spec", "s"],
        "environment": {"MLOPS_REGISTRY_URL": "http://registry/registry.git"},
        "credentials": CREDENTIALS,
    }
    return TrainingRun(**{**run, **changes})


def _job(**changes) -> dict:
    return kubernetes_jobs.job_manifest(_run(**changes)).to_dict()


def _pod(job: dict) -> dict:
    return job["spec"]["template"]["spec"]


def test_the_job_is_a_valid_batch_v1_job_with_every_field_known():
    job = _job(placement=Placement(2, {"gpu": "a100"}, ({"key": "k", "operator": "Exists"},)))
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    assert unknown_fields(Job, job) == []


def test_credentials_reach_the_pod_only_as_secret_references():
    job = _job()
    text = json.dumps(job)
    assert not any(secret in text for secret in SECRETS)
    env = {item["name"]: item for item in _pod(job)["containers"][0]["env"]}
    assert env["MLOPS_REGISTRY_PASSWORD"] == {
        "name": "MLOPS_REGISTRY_PASSWORD",
        "valueFrom": {
            "secretKeyRef": {
                "name": "training-k8s-training-credentials",
                "key": "MLOPS_REGISTRY_PASSWORD",
            }
        },
    }
    assert env["MLOPS_REGISTRY_URL"]["value"] == "http://registry/registry.git"


def test_the_secret_holds_the_values_under_the_referenced_keys():
    secret = CREDENTIALS.secret({"a": "b"}, None).to_dict()
    assert unknown_fields(Secret, secret) == []
    assert secret["stringData"]["AWS_SECRET_ACCESS_KEY"] == SECRETS[1]
    assert secret["metadata"] == {
        "name": "training-k8s-training-credentials",
        "labels": {"a": "b"},
    }


def test_gpus_become_the_nvidia_limit_and_none_asks_for_no_gpu():
    with_gpus = _pod(_job(placement=Placement(gpus=2)))["containers"][0]
    assert with_gpus["resources"] == {"limits": {"nvidia.com/gpu": "2"}}
    assert "resources" not in _pod(_job())["containers"][0]


def test_node_selector_and_tolerations_are_the_pods():
    toleration = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    pod = _pod(_job(placement=Placement(1, {"nvidia.com/gpu.present": "true"}, (toleration,))))
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"] == [toleration]


def test_limits_and_the_failure_policy_never_retry_the_trainers_own_failure():
    job = _job(limits=Limits(3600, 600, 2))
    spec = job["spec"]
    assert (spec["activeDeadlineSeconds"], spec["ttlSecondsAfterFinished"]) == (3600, 600)
    assert spec["backoffLimit"] == 2
    assert _pod(job)["restartPolicy"] == "Never"  # podFailurePolicy requires it
    fail, ignore = spec["podFailurePolicy"]["rules"]
    assert fail["action"] == "FailJob"
    assert fail["onExitCodes"] == {"containerName": "trainer", "operator": "In", "values": [1, 2]}
    assert ignore == {
        "action": "Ignore",
        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
    }


def test_labels_name_the_app_the_job_and_its_kind_on_job_and_pods():
    job = _job()
    labels = job["metadata"]["labels"]
    assert labels["mlops-stack.dev/app"] == "training-k8s"
    assert labels["mlops-stack.dev/job-id"] == "20260101120000-0001"
    assert labels["mlops-stack.dev/job-kind"] == "train"
    assert job["spec"]["template"]["metadata"]["labels"] == labels
    assert kubernetes_jobs.selector("training-k8s") == "mlops-stack.dev/app=training-k8s"


def test_the_owner_reference_ties_the_job_to_the_application():
    from lightkube.models.meta_v1 import OwnerReference

    owner = OwnerReference(apiVersion="apps/v1", kind="StatefulSet", name="training-k8s", uid="u")
    assert _job(owner=owner)["metadata"]["ownerReferences"] == [owner.to_dict()]


@pytest.mark.parametrize("app", ["training-k8s", "a" * 60, "Training_K8s.x"])
def test_names_are_dns_labels_of_at_most_63_characters(app: str):
    name = kubernetes_jobs.job_name(app, "20260101120000-0001")
    assert len(name) <= 63 and name.endswith("-20260101120000-0001")
    assert kubernetes_jobs.is_dns_name(name) and name[0].isalnum()
    assert kubernetes_jobs.is_dns_name(kubernetes_jobs.credentials_name(app))


def test_the_trainjob_uses_only_the_fields_trainer_21_and_22_share():
    run = _run(num_nodes=4, placement=Placement(gpus=1), runtime="torch-distributed")
    trainjob = kubernetes_jobs.trainjob_manifest(run).to_dict()
    assert trainjob_problems(trainjob) == []
    assert trainjob["spec"]["runtimeRef"] == {
        "name": "torch-distributed",
        "apiGroup": "trainer.kubeflow.org",
        "kind": "ClusterTrainingRuntime",
    }
    trainer = trainjob["spec"]["trainer"]
    assert trainer["numNodes"] == 4
    assert trainer["resourcesPerNode"] == {"limits": {"nvidia.com/gpu": "1"}}
    assert trainer["command"] == list(run.command)
    assert not any(secret in json.dumps(trainjob) for secret in SECRETS)


def test_the_trainer_schema_refuses_fields_of_one_version_only():
    trainjob = kubernetes_jobs.trainjob_manifest(_run(num_nodes=2)).to_dict()
    for field, value in (("podTemplateOverrides", []), ("runtimePatches", [])):
        problems = trainjob_problems({**trainjob, "spec": {**trainjob["spec"], field: value}})
        assert problems and field in problems[0]
    bad_env = {**trainjob["spec"]["trainer"], "env": [{"name": "X", "valueFrom": {"bogus": 1}}]}
    assert trainjob_problems({**trainjob, "spec": {**trainjob["spec"], "trainer": bad_env}})


def test_an_unknown_field_is_caught_by_the_job_check():
    job = _job()
    _pod(job)["containers"][0]["gpus"] = 1
    assert unknown_fields(Job, job) == ["unknown field spec.template.spec.containers.0.gpus"]
