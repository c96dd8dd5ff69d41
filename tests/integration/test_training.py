"""training-k8s on MicroK8s: trained on a registry version, the run seen in MLflow.

The tests run in order and share one model (pytest-operator makes one per module).
data-versioning-k8s cuts ``v1`` (labelled text files written into its container);
tracking-k8s serves MLflow; training-k8s, trusted (it creates Jobs and Secrets), related to
both, trains a spec on ``v1`` in a Kubernetes Job; the run must be in MLflow with ``v1`` as
its dataset input. Then error analysis returns a relabel batch, and cancel-job stops a sweep.
No GPU is needed: ``gpus`` stays 0 (GPU runs: README, ``microk8s enable nvidia``).

Environment overrides:

- ``MLOPS_TRAINING_IMAGE``: the ``training-image`` resource (default: the rock pushed to the
  MicroK8s registry, ``localhost:32000/training:0.1.0``); the Jobs run it too;
- ``MLOPS_REGISTRY_IMAGE``, ``MLOPS_MLFLOW_IMAGE``: the other charms' images;
- ``MLOPS_CHARM_TRAINING_K8S`` (and the other charms'): packed charms to deploy.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import urllib.request
from typing import Any

import pytest
from pytest_operator.plugin import OpsTest

APP = "training-k8s"
UNIT = f"{APP}/0"
REGISTRY = "data-versioning-k8s"
TRACKING = "tracking-k8s"
TRAINING_IMAGE = os.environ.get("MLOPS_TRAINING_IMAGE", "localhost:32000/training:0.1.0")
REGISTRY_IMAGE = os.environ.get("MLOPS_REGISTRY_IMAGE", "localhost:32000/data-registry:0.1.0")
MLFLOW_IMAGE = os.environ.get("MLOPS_MLFLOW_IMAGE", "localhost:32000/mlflow:3.17.2")
INCOMING = "/var/lib/registry/incoming/reviews"
DEPLOY_TIMEOUT_S = 20 * 60
JOB_TIMEOUT_S = 15 * 60
SPEC = "text-tfidf-logreg"
WORDS = {"positive": "great lovely superb happy", "negative": "awful broken sad terrible"}


def _dataset() -> dict[str, str]:
    """20 labelled texts per class in the layout labelling exports."""
    files, records = {}, []
    for label, words in WORDS.items():
        for n in range(20):
            item = f"texts/{label}-{n:02d}.txt"
            files[item] = f"{words} item {n}"
            records.append(json.dumps({"item": item, "label": label}))
    files["labels/reviews.jsonl"] = "\n".join(records) + "\n"
    return files


def _mlflow(url: str, user: str, password: str, path: str) -> Any:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request = urllib.request.Request(f"{url}{path}", headers={"Authorization": f"Basic {token}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


async def _job_end(run_action, job_id: str) -> dict[str, Any]:
    """The job as list-jobs shows it once it has ended (image pulls can take minutes)."""
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while True:
        listed = await run_action(UNIT, "list-jobs")
        job = next(j for j in json.loads(listed.results["jobs"]) if j["id"] == job_id)
        if job["state"] != "running" or time.monotonic() > deadline:
            return job
        await asyncio.sleep(10)


@pytest.mark.abort_on_fail
async def test_build_and_deploy_with_registry_and_tracking(ops_test: OpsTest, charm_builder):
    """Deploy the three charms, training trusted; related, all reach active/idle."""
    assert ops_test.model is not None
    charms = {name: await charm_builder(name) for name in (APP, REGISTRY, TRACKING)}
    await ops_test.model.deploy(
        charms[APP], application_name=APP, resources={"training-image": TRAINING_IMAGE}, trust=True
    )
    await ops_test.model.deploy(
        charms[REGISTRY], application_name=REGISTRY, resources={"registry-image": REGISTRY_IMAGE}
    )
    await ops_test.model.deploy(
        charms[TRACKING], application_name=TRACKING, resources={"mlflow-image": MLFLOW_IMAGE}
    )
    await ops_test.model.integrate(f"{APP}:mlops-dataset", f"{REGISTRY}:mlops-dataset")
    await ops_test.model.integrate(f"{APP}:mlops-tracking", f"{TRACKING}:mlops-tracking")
    await ops_test.model.wait_for_idle(
        apps=[APP, REGISTRY, TRACKING], status="active", timeout=DEPLOY_TIMEOUT_S
    )
    assert ops_test.model.units[UNIT].workload_status_message == "backend: Job; no job running"


@pytest.mark.abort_on_fail
async def test_train_on_a_version_the_registry_cut(
    ops_test: OpsTest, run_action, shared, registry_files
):
    await registry_files(f"{REGISTRY}/0", INCOMING, _dataset())
    cut = await run_action(f"{REGISTRY}/0", "create-version", source=INCOMING, message="reviews")
    assert cut.results["version"] == "v1"
    started = await run_action(UNIT, "train", spec=SPEC, project="reviews", folds=3)
    assert started.results["state"] == "running" and started.results["backend"] == "Job"
    job = await _job_end(run_action, started.results["job"])
    assert job["state"] == "succeeded", job
    logs = await run_action(UNIT, "job-logs", job=job["id"], lines=50)
    result = json.loads(logs.results["log"].splitlines()[-1])
    assert result["dataset"]["version"] == "v1"
    shared["run_id"] = result["run_id"]


async def test_the_run_is_in_mlflow_with_the_version_as_its_input(
    run_action, unit_address, shared
):
    admin = await run_action(f"{TRACKING}/0", "get-admin-credentials")
    url = f"http://{await unit_address(f'{TRACKING}/0')}:5000"
    run = await asyncio.to_thread(
        _mlflow,
        url,
        admin.results["username"],
        admin.results["password"],
        f"/api/2.0/mlflow/runs/get?run_id={shared['run_id']}",
    )
    inputs = run["run"]["inputs"]["dataset_inputs"]
    assert any(entry["dataset"]["name"].endswith("v1") for entry in inputs), inputs
    experiment = await asyncio.to_thread(
        _mlflow,
        url,
        admin.results["username"],
        admin.results["password"],
        f"/api/2.0/mlflow/experiments/get?experiment_id={run['run']['info']['experiment_id']}",
    )
    assert experiment["experiment"]["name"] == APP


async def test_error_analysis_returns_a_relabel_batch(run_action):
    started = await run_action(
        UNIT, "error-analysis", spec=SPEC, project="reviews", folds=3, **{"top-k": 5}
    )
    job = await _job_end(run_action, started.results["job"])
    assert job["state"] == "succeeded", job


async def test_cancel_job_stops_a_sweep(run_action):
    grid = json.dumps({"C": [0.1, 1, 10, 100]})
    started = await run_action(UNIT, "sweep", spec=SPEC, project="reviews", grid=grid)
    cancelled = await run_action(UNIT, "cancel-job", job=started.results["job"])
    assert cancelled.results["state"] == "cancelled"
    job = await _job_end(run_action, started.results["job"])
    assert job["error"] == "cancelled by the cancel-job action"


@pytest.fixture(scope="module")
def shared() -> dict[str, Any]:
    return {}
