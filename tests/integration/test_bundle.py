"""The whole bundle on MicroK8s: one data-centric iteration, then the switch to model-centric.

The tests run in order and share one model (pytest-operator makes one per module).
``bundle.yaml`` is deployed with ``juju deploy --trust`` (training-k8s creates Jobs and
Secrets) after its charms are replaced by packed ones (built as conftest.py builds them) and
its images by the ones below, with ``overlays/data-centric.yaml`` and one more option: error
analysis sends 8 items back instead of 50, so that finding the planted mistakes means
something on 60 reviews. Then, as a person would, through actions and Label Studio's REST API:

1. the five applications reach active/idle; every service applied policy revision 1;
2. 60 unlabelled reviews become ``v1``; labelling imports them, two annotators each;
3. the annotators label every task, with 10 planted disagreements and 4 items both get wrong;
   the agreement gate (Krippendorff's alpha) refuses the export; the disagreements fixed, the
   export makes ``v2``;
4. training-k8s trains on ``v2`` by itself and runs error analysis on it; the relabel batch
   arrives in Label Studio as the ``reviews re-label`` project, holding most of the wrong
   items; labelled right, it is exported as ``v3``, which is trained on too;
5. every run in MLflow names its dataset version and is tagged data-centric, revision 1;
6. ``switch approach=model-centric`` (with a sweep configured): the registry pins ``v3``,
   training sweeps it, the best model gets the ``champion`` alias; revision 2 applied by all.

No GPU is needed. Without a Juju controller every test is collected and skipped (conftest.py).

Environment overrides:

- ``MLOPS_MLFLOW_IMAGE``, ``MLOPS_REGISTRY_IMAGE``, ``MLOPS_LABELLING_IMAGE``,
  ``MLOPS_TRAINING_IMAGE``: the charms' images (default: the rocks pushed to the MicroK8s
  registry, as in bundle.yaml);
- ``MLOPS_CHARM_<NAME>`` (``MLOPS_CHARM_TRACKING_K8S``, ``MLOPS_CHARM_MLOPS_APPROACH``...):
  packed charms to deploy instead of building them.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pytest_operator.plugin import OpsTest

from tests.integration import stack

APPROACH = "mlops-approach"
TRACKING = "tracking-k8s"
REGISTRY = "data-versioning-k8s"
LABELLING = "labelling-k8s"
TRAINING = "training-k8s"
APPS = (APPROACH, TRACKING, REGISTRY, LABELLING, TRAINING)
# The image resources, by name: the environment's, else the rocks in the MicroK8s registry.
IMAGES = {
    "mlflow-image": os.environ.get("MLOPS_MLFLOW_IMAGE", "localhost:32000/mlflow:3.17.2"),
    "registry-image": os.environ.get(
        "MLOPS_REGISTRY_IMAGE", "localhost:32000/data-registry:0.1.0"
    ),
    "label-studio-image": os.environ.get(
        "MLOPS_LABELLING_IMAGE", "localhost:32000/labelling:1.23.2"
    ),
    "training-image": os.environ.get("MLOPS_TRAINING_IMAGE", "localhost:32000/training:0.1.0"),
}
REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLE = REPO_ROOT / "bundle.yaml"
DATA_CENTRIC_OVERLAY = REPO_ROOT / "overlays" / "data-centric.yaml"
RELABEL_TOP_K = 8
SWEEP = "{C: [0.1, 1.0, 10.0]}"
SPEC = "text-tfidf-logreg"
DEPLOY_TIMEOUT_S = 30 * 60

INCOMING = "/var/lib/registry/incoming/reviews"
PROJECT = "reviews"
RELABEL_PROJECT = f"{PROJECT} re-label"
LABELS = ("positive", "negative")
ANNOTATORS = ("ann", "bob")
REVIEWS_PER_CLASS = 30
REVIEW_WORDS = {
    "positive": ["great", "love", "excellent", "works", "perfect", "happy", "recommend"],
    "negative": ["broke", "awful", "refund", "poor", "useless", "disappointed", "returned"],
}
FILLER = ["the", "it", "was", "this", "item", "and", "my", "order", "really", "after", "a", "day"]
# Items both annotators get wrong (agreement cannot see them; error analysis should) and
# items the second annotator answers differently at first (what the agreement gate sees).
WRONG = ("pos-03.txt", "pos-17.txt", "neg-05.txt", "neg-21.txt")
DISAGREE = tuple(f"{kind}-{i:02d}.txt" for kind in ("pos", "neg") for i in (1, 6, 11, 24, 28))


# --- the data and the annotators' answers -------------------------------------------------------


def _reviews() -> dict[str, str]:
    """60 short synthetic reviews, {file name: text}: three telling words and five filler."""
    rng = random.Random(3)  # noqa: S311 - the same reviews every run
    texts = {}
    for label, words in REVIEW_WORDS.items():
        for i in range(REVIEWS_PER_CLASS):
            chosen = [*rng.choices(words, k=3), *rng.choices(FILLER, k=5)]
            rng.shuffle(chosen)
            texts[f"{label[:3]}-{i:02d}.txt"] = " ".join(chosen) + "\n"
    return texts


def _name(item: str) -> str:
    """A task's item (``texts/pos-03.txt``) by its file name, as the answers know it."""
    return item.rsplit("/", 1)[-1]


def _truth(item: str) -> str:
    return "positive" if _name(item).startswith("pos-") else "negative"


def _other(label: str) -> str:
    return "negative" if label == "positive" else "positive"


def _first_pass(item: str) -> tuple[str, str]:
    """The planted answers of (first annotator, second annotator) on ``item``."""
    name = _name(item)
    first = _other(_truth(item)) if name in WRONG else _truth(item)
    return first, _other(first) if name in DISAGREE else first


# --- the services' REST APIs --------------------------------------------------------------------


def _annotator(annotation: dict[str, Any]) -> int:
    """Who made an annotation: an id, or a user object, depending on the export."""
    completed_by = annotation["completed_by"]
    return completed_by["id"] if isinstance(completed_by, dict) else int(completed_by)


def _annotate_all(api: stack.LabelStudio, title: str, users: list[int], answer: Callable) -> int:
    """Each task of ``title`` answered by each user: ``answer(item)`` = their labels in turn."""
    posted = 0
    for task in api.tasks(title):
        for user, label in zip(users, answer(task["data"]["item"]), strict=True):
            api.annotate(task["id"], user, label)
            posted += 1
    return posted


def _second_agrees(api: stack.LabelStudio, title: str, second: int) -> int:
    """The second annotator revises their answers on the disagreeing tasks to the first's."""
    fixed = 0
    for task in api.tasks(title):
        item = task["data"]["item"]
        if _name(item) not in DISAGREE:
            continue
        (annotation,) = [a for a in task["annotations"] if _annotator(a) == second]
        first_label = _first_pass(item)[0]
        api.call(
            "PATCH", f"/api/annotations/{annotation['id']}", {"result": stack.choice(first_label)}
        )
        fixed += 1
    return fixed


# --- Juju ---------------------------------------------------------------------------------------


def _decoded(value: str) -> Any:
    """A relation databag value: JSON, as our charms write them; else the text itself."""
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


async def _published_to_training(ops_test: OpsTest) -> dict[str, Any]:
    """What the registry publishes to training-k8s over mlops-dataset, decoded."""
    _, stdout, _ = await ops_test.juju(
        "show-unit", f"{TRAINING}/0", "--format", "json", check=True, fail_msg="show-unit failed"
    )
    relations = json.loads(stdout)[f"{TRAINING}/0"].get("relation-info") or []
    for relation in relations:
        if relation.get("endpoint") == "mlops-dataset":
            data = relation.get("application-data") or {}
            return {key: _decoded(value) for key, value in data.items() if value}
    raise AssertionError(f"{TRAINING}/0 has no mlops-dataset relation: {relations}")


# --- the tests ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared() -> dict[str, Any]:
    """What a test hands on to the next ones (users, the relabel batch, the sweep's result)."""
    return {}


@pytest.mark.abort_on_fail
async def test_deploy_the_bundle(ops_test: OpsTest, charm_builder):
    """bundle.yaml with the data-centric overlay: all active; every service applied rev 1."""
    assert ops_test.model is not None
    bundle = yaml.safe_load(BUNDLE.read_text())
    assert set(bundle["applications"]) == set(APPS)
    charms = {}
    for app, application in bundle["applications"].items():
        charms[app] = await charm_builder(Path(application["charm"]).stem)
    rendered = stack.render_bundle(BUNDLE, ops_test.tmp_path, charms, IMAGES)
    policy = ops_test.tmp_path / "relabel-top-k.yaml"
    policy.write_text(
        yaml.safe_dump({"applications": {APPROACH: {"options": {"relabel-top-k": RELABEL_TOP_K}}}})
    )
    await ops_test.juju(
        "deploy",
        str(rendered),
        "--overlay",
        str(DATA_CENTRIC_OVERLAY),
        "--overlay",
        str(policy),
        "--trust",
        check=True,
        fail_msg="deploying the bundle failed",
    )
    # Not raise_on_blocked: mlops-approach is Blocked while a service cannot apply the policy
    # yet (Label Studio's first start takes minutes).
    await ops_test.model.wait_for_idle(apps=list(APPS), status="active", timeout=DEPLOY_TIMEOUT_S)
    await stack.wait_for_message(
        ops_test,
        f"{APPROACH}/0",
        lambda message: message == "data-centric (rev 1): applied by 4/4",
        "revision 1 applied by the four services",
    )


@pytest.mark.abort_on_fail
async def test_raw_reviews_become_v1_and_a_project(ops_test: OpsTest, run_action, registry_files):
    await registry_files(
        f"{REGISTRY}/0", INCOMING, {f"texts/{name}": text for name, text in _reviews().items()}
    )
    cut = await run_action(f"{REGISTRY}/0", "create-version", source=INCOMING, message="raw")
    assert cut.results["version"] == "v1"
    imported = await run_action(
        f"{LABELLING}/0",
        "import-version",
        version="v1",
        project=PROJECT,
        preset="text-classification",
        labels=",".join(LABELS),
    )
    assert imported.results["tasks-created"] == str(2 * REVIEWS_PER_CLASS)
    # The approach's annotator-overlap, not labelling's own overlap option (1).
    assert imported.results["overlap"] == "2"


@pytest.mark.abort_on_fail
async def test_two_annotators_label_every_task(
    ops_test: OpsTest, run_action, unit_address, shared
):
    api = await stack.label_studio(run_action, unit_address, ops_test, LABELLING)
    users = [await asyncio.to_thread(api.create_user, name) for name in ANNOTATORS]
    shared["users"] = users
    posted = await asyncio.to_thread(_annotate_all, api, PROJECT, users, _first_pass)
    assert posted == 2 * 2 * REVIEWS_PER_CLASS


@pytest.mark.abort_on_fail
async def test_the_agreement_gate_refuses_the_export(run_action):
    refused = await run_action(
        f"{LABELLING}/0", "export-annotations", expect_failure=True, project=PROJECT
    )
    assert "alpha" in refused.message, refused.message
    assert any(name in refused.message for name in DISAGREE), refused.message


@pytest.mark.abort_on_fail
async def test_fixed_labels_export_as_v2_which_is_trained_on(
    ops_test: OpsTest, run_action, unit_address, shared
):
    api = await stack.label_studio(run_action, unit_address, ops_test, LABELLING)
    fixed = await asyncio.to_thread(_second_agrees, api, PROJECT, shared["users"][1])
    assert fixed == len(DISAGREE)
    exported = await run_action(f"{LABELLING}/0", "export-annotations", project=PROJECT)
    assert (exported.results["version"], exported.results["parent"]) == ("v2", "v1")
    # Nobody asks for training: the data-centric loop trains the new version by itself.
    trained = await stack.ended_job(run_action, f"{TRAINING}/0", "train", "v2")
    assert trained["state"] == "succeeded", trained
    assert "data-centric loop, policy revision 1" in trained["params"].get("started_by", "")
    analysed = await stack.ended_job(run_action, f"{TRAINING}/0", "error-analysis", "v2")
    assert analysed["state"] == "succeeded", analysed
    result = await stack.job_result(run_action, f"{TRAINING}/0", analysed["id"])
    shared["relabel_items"] = result["relabel_batch"]["items"]


@pytest.mark.abort_on_fail
async def test_the_relabel_batch_reaches_label_studio(
    ops_test: OpsTest, run_action, unit_address, shared
):
    items = shared["relabel_items"]
    assert 1 <= len(items) <= RELABEL_TOP_K, items
    found = {_name(item) for item in items} & set(WRONG)
    assert len(found) >= len(WRONG) - 1, f"error analysis found {sorted(found)} of {WRONG}"
    api = await stack.label_studio(run_action, unit_address, ops_test, LABELLING)
    deadline = time.monotonic() + stack.JOB_TIMEOUT_S
    tasks = await asyncio.to_thread(api.tasks, RELABEL_PROJECT)
    while len(tasks) < len(items):
        assert time.monotonic() < deadline, f"{RELABEL_PROJECT!r} has {len(tasks)} tasks"
        await asyncio.sleep(stack.POLL_S)
        tasks = await asyncio.to_thread(api.tasks, RELABEL_PROJECT)
    assert {task["data"]["item"] for task in tasks} == set(items)


@pytest.mark.abort_on_fail
async def test_relabelled_items_export_as_v3_which_is_trained_on(
    ops_test: OpsTest, run_action, unit_address, shared
):
    api = await stack.label_studio(run_action, unit_address, ops_test, LABELLING)
    posted = await asyncio.to_thread(
        _annotate_all, api, RELABEL_PROJECT, shared["users"], lambda item: (_truth(item),) * 2
    )
    assert posted == 2 * len(shared["relabel_items"])
    exported = await run_action(f"{LABELLING}/0", "export-annotations", project=RELABEL_PROJECT)
    assert exported.results["version"] == "v3"
    trained = await stack.ended_job(run_action, f"{TRAINING}/0", "train", "v3")
    assert trained["state"] == "succeeded", trained
    # Its error analysis ends before the switch: the sweep would wait for it anyway.
    analysed = await stack.ended_job(run_action, f"{TRAINING}/0", "error-analysis", "v3")
    assert analysed["state"] == "succeeded", analysed


async def test_runs_in_mlflow_carry_their_version_and_the_approach(
    ops_test: OpsTest, run_action, unit_address
):
    mlflow = await stack.tracking(run_action, unit_address, ops_test, TRACKING)
    experiments = (await mlflow("experiments/search", {"max_results": 100}))["experiments"]
    ids = [experiment["experiment_id"] for experiment in experiments]
    found = await mlflow("runs/search", {"experiment_ids": ids, "max_results": 500})
    runs = found.get("runs", [])
    # v1 had no labels: its training failed before it logged anything.
    assert {stack.run_tag(run, "dataset-version") for run in runs} == {"v2", "v3"}
    for run in runs:
        assert stack.run_tag(run, "approach") == "data-centric", run["info"]
        assert stack.run_tag(run, "approach_revision") == "1", run["info"]


@pytest.mark.abort_on_fail
async def test_a_sweep_configured_in_data_centric_mode_changes_no_policy(ops_test: OpsTest):
    assert ops_test.model is not None
    await ops_test.model.applications[APPROACH].set_config({"sweep": SWEEP})
    await ops_test.model.wait_for_idle(
        apps=list(APPS), status="active", timeout=stack.STATUS_TIMEOUT_S
    )
    await stack.wait_for_message(
        ops_test,
        f"{APPROACH}/0",
        lambda message: message == "data-centric (rev 1): applied by 4/4",
        "revision 1 still in force",
    )


@pytest.mark.abort_on_fail
async def test_switch_to_model_centric_pins_v3_and_sweeps_it(
    ops_test: OpsTest, run_action, shared
):
    switched = await run_action(f"{APPROACH}/0", "switch", approach="model-centric")
    assert (switched.results["mode"], switched.results["revision"]) == ("model-centric", "2")
    # The registry pins its latest version when it applies the switch, and says so.
    await stack.wait_for_message(
        ops_test, f"{REGISTRY}/0", lambda message: "pinned v3" in message, "pinned v3"
    )
    listed = await run_action(f"{REGISTRY}/0", "list-versions")
    assert (listed.results["latest"], listed.results["pinned"]) == ("v3", "v3")
    published = await _published_to_training(ops_test)
    assert published.get("pinned_version") == "v3", published
    swept = await stack.ended_job(run_action, f"{TRAINING}/0", "sweep", "v3")
    assert swept["state"] == "succeeded", swept
    assert "model-centric loop, policy revision 2" in swept["params"].get("started_by", "")
    shared["sweep"] = await stack.job_result(run_action, f"{TRAINING}/0", swept["id"])
    await stack.wait_for_message(
        ops_test,
        f"{APPROACH}/0",
        lambda message: message == "model-centric (rev 2): applied by 4/4",
        "revision 2 applied by the four services",
    )


async def test_the_best_model_of_the_sweep_is_the_champion(
    ops_test: OpsTest, run_action, unit_address, shared
):
    promoted = shared["sweep"]["promoted"]
    assert (promoted["model"], promoted["alias"]) == (SPEC, "champion")
    mlflow = await stack.tracking(run_action, unit_address, ops_test, TRACKING)
    query = urllib.parse.urlencode({"name": SPEC, "alias": "champion"})
    champion = (await mlflow(f"registered-models/alias?{query}"))["model_version"]
    assert champion["version"] == str(promoted["version"])
    assert champion["run_id"] == shared["sweep"]["best"]["run_id"]
