"""bundle-machines.yaml on a machine cloud (LXD): every service as a systemd unit, one iteration.

The Kubernetes tests' controller also drives a machine cloud here: pytest-operator adds a model
on ``MLOPS_MACHINE_CLOUD`` (default ``localhost``, the LXD cloud ``concierge prepare -p
machine`` or ``juju bootstrap localhost`` gives) and deploys the bundle with packed charms.
The tests run in order and share that model:

1. the five applications reach active/idle, every service applied policy revision 1, and each
   workload runs as the systemd unit its charm rendered;
2. labelled reviews written on the registry's machine become ``v1`` (a create-version job: a
   transient systemd unit), which list-versions shows;
3. labelling imports ``v1`` into a Label Studio project (an import job);
4. training trains on ``v1`` by itself (the data-centric loop; a run is a transient systemd
   unit, on the CPU in LXD) and the run is in MLflow with its dataset version.

Without a Juju controller, or without the machine cloud on it, every test is collected and
skipped with the reason (conftest.py, and ``_in_model`` below).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from pytest_operator.plugin import OpsTest

from tests.integration import stack

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLE = REPO_ROOT / "bundle-machines.yaml"
MACHINE_CLOUD = os.environ.get("MLOPS_MACHINE_CLOUD", "localhost")
MODEL_ALIAS = "machines"
APPROACH = "mlops-approach"
TRACKING = "tracking"
REGISTRY = "data-versioning"
LABELLING = "labelling"
TRAINING = "training"
APPS = (APPROACH, TRACKING, REGISTRY, LABELLING, TRAINING)
# Each workload's systemd unit, as its charm names it (the charms' src/*_unit(s).py).
SERVICES = {
    TRACKING: ("mlflow.service",),
    REGISTRY: tuple(
        f"mlops-registry-{server}.service" for server in ("git-http", "s3", "s3-read-only")
    ),
    LABELLING: ("label-studio.service",),
}
# The machine charms install their workloads at install (MLflow ~2 min here, Label Studio more).
DEPLOY_TIMEOUT_S = 60 * 60
# Where create-version reads from: on the registry's storage, owned by the registry's user.
INCOMING = "/var/lib/mlops-registry/incoming/reviews"
REGISTRY_USER = "mlops-registry"
PROJECT = "reviews"
LABELS = ("positive", "negative")
REVIEWS_PER_CLASS = 12


def _labelled_reviews() -> dict[str, str]:
    """24 short reviews and their labels, in the layout labelling exports (training reads it).

    ``texts/*.txt`` and ``labels/<project>.jsonl`` (``item``, ``label`` per line).
    """
    words = {"positive": ["great", "love", "works"], "negative": ["broke", "awful", "refund"]}
    rng = random.Random(7)  # noqa: S311 - the same reviews every run
    files, records = {}, []
    for label, telling in words.items():
        for i in range(REVIEWS_PER_CLASS):
            name = f"texts/{label[:3]}-{i:02d}.txt"
            files[name] = " ".join([*rng.choices(telling, k=3), "the", "item"]) + "\n"
            records.append(json.dumps({"item": name, "label": label}))
    files[f"labels/{PROJECT}.jsonl"] = "\n".join(records) + "\n"
    return files


async def _in_model(ops_test: OpsTest) -> None:
    """Track the machine model (made once per module); skip when the cloud is not there."""
    if MODEL_ALIAS in ops_test.models:
        return
    _, stdout, _ = await ops_test.juju(
        "clouds", "--controller", ops_test.controller_name, "--format", "json"
    )
    clouds = json.loads(stdout or "{}")
    if MACHINE_CLOUD not in clouds:
        pytest.skip(
            f"the controller has no machine cloud {MACHINE_CLOUD!r}: add one (LXD: "
            "`juju add-cloud localhost`) or set MLOPS_MACHINE_CLOUD"
        )
    await ops_test.track_model(MODEL_ALIAS, cloud_name=MACHINE_CLOUD)


async def _exec(ops_test: OpsTest, unit_name: str, script: str) -> str:
    """Run ``script`` as root on the unit's machine; its output."""
    _, stdout, _ = await ops_test.juju(
        "exec",
        "--unit",
        unit_name,
        "--",
        "sh",
        "-c",
        shlex.quote(script),
        check=True,
        fail_msg=f"juju exec on {unit_name} failed",
    )
    return stdout


@pytest.fixture(scope="module")
def shared() -> dict[str, Any]:
    return {}


@pytest.mark.abort_on_fail
async def test_deploy_the_machine_bundle(ops_test: OpsTest, charm_builder):
    await _in_model(ops_test)
    with ops_test.model_context(MODEL_ALIAS) as model:
        charms = {}
        applications = yaml.safe_load(BUNDLE.read_text())["applications"]
        assert set(applications) == set(APPS)
        for app, application in applications.items():
            charms[app] = await charm_builder(Path(application["charm"]).stem)
        rendered = stack.render_bundle(BUNDLE, ops_test.tmp_path, charms)
        await ops_test.juju("deploy", str(rendered), check=True, fail_msg="deploying failed")
        await model.wait_for_idle(apps=list(APPS), status="active", timeout=DEPLOY_TIMEOUT_S)
        await stack.wait_for_message(
            ops_test,
            f"{APPROACH}/0",
            lambda message: message == "data-centric (rev 1): applied by 4/4",
            "revision 1 applied by the four services",
        )


async def test_each_workload_runs_as_its_systemd_unit(ops_test: OpsTest):
    await _in_model(ops_test)
    with ops_test.model_context(MODEL_ALIAS):
        for app, services in SERVICES.items():
            for service in services:
                state = await _exec(ops_test, f"{app}/0", f"systemctl is-active {service}")
                assert state.strip() == "active", f"{app}: {service} is {state.strip()}"


@pytest.mark.abort_on_fail
async def test_labelled_reviews_become_v1(ops_test: OpsTest, run_action, shared):
    await _in_model(ops_test)
    with ops_test.model_context(MODEL_ALIAS):
        files = _labelled_reviews()
        script = [f"rm -rf {INCOMING}", f"mkdir -p {INCOMING}/texts {INCOMING}/labels"]
        script += [
            f"printf %s {shlex.quote(text)} > {shlex.quote(f'{INCOMING}/{name}')}"
            for name, text in files.items()
        ]
        script.append(f"chown -R {REGISTRY_USER}: {shlex.quote(str(Path(INCOMING).parent))}")
        await _exec(ops_test, f"{REGISTRY}/0", " && ".join(script))
        cut = await run_action(
            f"{REGISTRY}/0", "create-version", source=INCOMING, message="labelled", wait=True
        )
        assert cut.results["version"] == "v1", cut.results
        listed = await run_action(f"{REGISTRY}/0", "list-versions")
        shared["versions"] = listed.results


async def test_labelling_imports_v1_into_a_project(ops_test: OpsTest, run_action, unit_address):
    await _in_model(ops_test)
    with ops_test.model_context(MODEL_ALIAS):
        imported = await run_action(
            f"{LABELLING}/0",
            "import-version",
            version="v1",
            project=PROJECT,
            preset="text-classification",
            labels=",".join(LABELS),
            wait=True,
        )
        assert imported.results["tasks-created"] == str(2 * REVIEWS_PER_CLASS), imported.results
        api = await stack.label_studio(run_action, unit_address, ops_test, LABELLING)
        tasks = await asyncio.to_thread(api.tasks, PROJECT)
        assert len(tasks) == 2 * REVIEWS_PER_CLASS


async def test_training_trains_on_v1_by_itself_and_logs_the_run(
    ops_test: OpsTest, run_action, unit_address
):
    """Data-centric: the approach's loop trains every new labelled version (a systemd job)."""
    await _in_model(ops_test)
    with ops_test.model_context(MODEL_ALIAS):
        job = await stack.ended_job(run_action, f"{TRAINING}/0", "train", "v1")
        assert job["state"] == "succeeded", job
        result = await stack.job_result(run_action, f"{TRAINING}/0", job["id"])
        call = await stack.tracking(run_action, unit_address, ops_test, TRACKING)
        run = (await call(f"runs/get?run_id={result['run_id']}"))["run"]
        assert stack.run_tag(run, "dataset-version") == "v1", run["info"]
        assert stack.run_tag(run, "approach") == "data-centric", run["info"]
