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
import base64
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
JOB_TIMEOUT_S = 15 * 60
STATUS_TIMEOUT_S = 10 * 60
POLL_S = 10

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


def _choice(label: str) -> list[dict[str, Any]]:
    return [
        {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [label]}}
    ]


# --- the services' REST APIs --------------------------------------------------------------------


def _request(url: str, authorization: str, method: str = "GET", body: Any = None) -> Any:
    request = urllib.request.Request(
        url,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": authorization, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        payload = response.read()
    return json.loads(payload) if payload else None


class LabelStudio:
    """Label Studio's REST API as the admin, where the annotators work."""

    def __init__(self, base: str, token: str):
        self.base = base
        self.authorization = f"Token {token}"

    def call(self, method: str, path: str, body: Any = None) -> Any:
        return _request(f"{self.base}{path}", self.authorization, method, body)

    def project(self, title: str) -> dict[str, Any] | None:
        projects = self.call("GET", "/api/projects?page_size=100")["results"]
        return next((p for p in projects if p["title"] == title), None)

    def tasks(self, title: str) -> list[dict[str, Any]]:
        """The project's tasks with their annotations; none while there is no such project."""
        project = self.project(title)
        if project is None:
            return []
        return self.call(
            "GET", f"/api/projects/{project['id']}/export?exportType=JSON&download_all_tasks=true"
        )

    def create_user(self, username: str) -> int:
        body = {"email": f"{username}@labelling.test", "username": username}
        return self.call("POST", "/api/users/", body)["id"]

    def annotate(self, task_id: int, user_id: int, label: str) -> None:
        body = {"completed_by": user_id, "result": _choice(label)}
        self.call("POST", f"/api/tasks/{task_id}/annotations", body)


def _annotator(annotation: dict[str, Any]) -> int:
    """Who made an annotation: an id, or a user object, depending on the export."""
    completed_by = annotation["completed_by"]
    return completed_by["id"] if isinstance(completed_by, dict) else int(completed_by)


def _annotate_all(api: LabelStudio, title: str, users: list[int], answer: Callable) -> int:
    """Each task of ``title`` answered by each user: ``answer(item)`` = their labels in turn."""
    posted = 0
    for task in api.tasks(title):
        for user, label in zip(users, answer(task["data"]["item"]), strict=True):
            api.annotate(task["id"], user, label)
            posted += 1
    return posted


def _second_agrees(api: LabelStudio, title: str, second: int) -> int:
    """The second annotator revises their answers on the disagreeing tasks to the first's."""
    fixed = 0
    for task in api.tasks(title):
        item = task["data"]["item"]
        if _name(item) not in DISAGREE:
            continue
        (annotation,) = [a for a in task["annotations"] if _annotator(a) == second]
        first_label = _first_pass(item)[0]
        api.call("PATCH", f"/api/annotations/{annotation['id']}", {"result": _choice(first_label)})
        fixed += 1
    return fixed


def _mlflow(base: str, user: str, password: str, path: str, body: Any = None) -> Any:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    method = "GET" if body is None else "POST"
    return _request(f"{base}/api/2.0/mlflow/{path}", f"Basic {token}", method, body)


def _run_tag(run: dict[str, Any], key: str) -> str | None:
    return next((t["value"] for t in run["data"].get("tags", []) if t["key"] == key), None)


# --- Juju ---------------------------------------------------------------------------------------


def _render_bundle(directory: Path, charms: dict[str, Path]) -> Path:
    """bundle.yaml with packed charms (absolute paths) and this run's images."""
    bundle = yaml.safe_load(BUNDLE.read_text())
    for app, application in bundle["applications"].items():
        application["charm"] = str(charms[app])
        for resource in application.get("resources") or {}:
            application["resources"][resource] = IMAGES[resource]
    rendered = directory / "bundle.yaml"
    rendered.write_text(yaml.safe_dump(bundle, sort_keys=False))
    return rendered


async def _config_value(ops_test: OpsTest, app: str, option: str) -> Any:
    assert ops_test.model is not None
    config = await ops_test.model.applications[app].get_config()
    entry = config[option]
    return entry.get("value", entry.get("default"))


async def _wait_for_message(
    ops_test: OpsTest, unit_name: str, wanted: Callable[[str], bool], what: str
) -> str:
    """Until the unit is active with a status message ``wanted`` accepts; the message."""
    assert ops_test.model is not None
    deadline = time.monotonic() + STATUS_TIMEOUT_S
    while True:
        unit = ops_test.model.units[unit_name]
        message = unit.workload_status_message or ""
        if unit.workload_status == "active" and wanted(message):
            return message
        assert time.monotonic() < deadline, (
            f"{unit_name} never showed {what}: {unit.workload_status} {message!r}"
        )
        await asyncio.sleep(POLL_S)


async def _training_job(run_action, kind: str, version: str) -> dict[str, Any]:
    """training-k8s's newest ``kind`` job on ``version``, once it has ended.

    The job may not exist yet: the charm starts it by itself.
    """
    deadline = time.monotonic() + JOB_TIMEOUT_S
    seen = None
    while True:
        listed = await run_action(f"{TRAINING}/0", "list-jobs")
        seen = next(
            (
                job
                for job in json.loads(listed.results["jobs"])  # newest first
                if job["kind"] == kind and job["params"].get("version") == version
            ),
            None,
        )
        if seen is not None and seen["state"] != "running":
            return seen
        assert time.monotonic() < deadline, f"no ended {kind} job on {version}: {seen}"
        await asyncio.sleep(POLL_S)


async def _job_result(run_action, job_id: str) -> dict[str, Any]:
    """An ended training job's JSON result: the last line of its log that is a JSON object."""
    logs = await run_action(f"{TRAINING}/0", "job-logs", job=job_id, lines=50)
    for line in reversed(logs.results["log"].splitlines()):
        try:
            result = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(result, dict):
            return result
    raise AssertionError(f"job {job_id} logged no JSON result: {logs.results['log'][-500:]}")


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


async def _label_studio(run_action, unit_address, ops_test: OpsTest) -> LabelStudio:
    token = (await run_action(f"{LABELLING}/0", "get-admin-credentials")).results["api-token"]
    port = await _config_value(ops_test, LABELLING, "port")
    return LabelStudio(f"http://{await unit_address(f'{LABELLING}/0')}:{port}", token)


async def _tracking(run_action, unit_address, ops_test: OpsTest) -> Callable[..., Any]:
    """A caller of MLflow's REST API as its admin: ``await call(path, body=None)``."""
    admin = (await run_action(f"{TRACKING}/0", "get-admin-credentials")).results
    port = await _config_value(ops_test, TRACKING, "port")
    base = f"http://{await unit_address(f'{TRACKING}/0')}:{port}"

    async def call(path: str, body: Any = None) -> Any:
        return await asyncio.to_thread(
            _mlflow, base, admin["username"], admin["password"], path, body
        )

    return call


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
    rendered = _render_bundle(ops_test.tmp_path, charms)
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
    await _wait_for_message(
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
    api = await _label_studio(run_action, unit_address, ops_test)
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
    api = await _label_studio(run_action, unit_address, ops_test)
    fixed = await asyncio.to_thread(_second_agrees, api, PROJECT, shared["users"][1])
    assert fixed == len(DISAGREE)
    exported = await run_action(f"{LABELLING}/0", "export-annotations", project=PROJECT)
    assert (exported.results["version"], exported.results["parent"]) == ("v2", "v1")
    # Nobody asks for training: the data-centric loop trains the new version by itself.
    trained = await _training_job(run_action, "train", "v2")
    assert trained["state"] == "succeeded", trained
    assert "data-centric loop, policy revision 1" in trained["params"].get("started_by", "")
    analysed = await _training_job(run_action, "error-analysis", "v2")
    assert analysed["state"] == "succeeded", analysed
    result = await _job_result(run_action, analysed["id"])
    shared["relabel_items"] = result["relabel_batch"]["items"]


@pytest.mark.abort_on_fail
async def test_the_relabel_batch_reaches_label_studio(
    ops_test: OpsTest, run_action, unit_address, shared
):
    items = shared["relabel_items"]
    assert 1 <= len(items) <= RELABEL_TOP_K, items
    found = {_name(item) for item in items} & set(WRONG)
    assert len(found) >= len(WRONG) - 1, f"error analysis found {sorted(found)} of {WRONG}"
    api = await _label_studio(run_action, unit_address, ops_test)
    deadline = time.monotonic() + JOB_TIMEOUT_S
    tasks = await asyncio.to_thread(api.tasks, RELABEL_PROJECT)
    while len(tasks) < len(items):
        assert time.monotonic() < deadline, f"{RELABEL_PROJECT!r} has {len(tasks)} tasks"
        await asyncio.sleep(POLL_S)
        tasks = await asyncio.to_thread(api.tasks, RELABEL_PROJECT)
    assert {task["data"]["item"] for task in tasks} == set(items)


@pytest.mark.abort_on_fail
async def test_relabelled_items_export_as_v3_which_is_trained_on(
    ops_test: OpsTest, run_action, unit_address, shared
):
    api = await _label_studio(run_action, unit_address, ops_test)
    posted = await asyncio.to_thread(
        _annotate_all, api, RELABEL_PROJECT, shared["users"], lambda item: (_truth(item),) * 2
    )
    assert posted == 2 * len(shared["relabel_items"])
    exported = await run_action(f"{LABELLING}/0", "export-annotations", project=RELABEL_PROJECT)
    assert exported.results["version"] == "v3"
    trained = await _training_job(run_action, "train", "v3")
    assert trained["state"] == "succeeded", trained
    # Its error analysis ends before the switch: the sweep would wait for it anyway.
    analysed = await _training_job(run_action, "error-analysis", "v3")
    assert analysed["state"] == "succeeded", analysed


async def test_runs_in_mlflow_carry_their_version_and_the_approach(
    ops_test: OpsTest, run_action, unit_address
):
    mlflow = await _tracking(run_action, unit_address, ops_test)
    experiments = (await mlflow("experiments/search", {"max_results": 100}))["experiments"]
    ids = [experiment["experiment_id"] for experiment in experiments]
    found = await mlflow("runs/search", {"experiment_ids": ids, "max_results": 500})
    runs = found.get("runs", [])
    # v1 had no labels: its training failed before it logged anything.
    assert {_run_tag(run, "dataset-version") for run in runs} == {"v2", "v3"}
    for run in runs:
        assert _run_tag(run, "approach") == "data-centric", run["info"]
        assert _run_tag(run, "approach_revision") == "1", run["info"]


@pytest.mark.abort_on_fail
async def test_a_sweep_configured_in_data_centric_mode_changes_no_policy(ops_test: OpsTest):
    assert ops_test.model is not None
    await ops_test.model.applications[APPROACH].set_config({"sweep": SWEEP})
    await ops_test.model.wait_for_idle(apps=list(APPS), status="active", timeout=STATUS_TIMEOUT_S)
    await _wait_for_message(
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
    await _wait_for_message(
        ops_test, f"{REGISTRY}/0", lambda message: "pinned v3" in message, "pinned v3"
    )
    listed = await run_action(f"{REGISTRY}/0", "list-versions")
    assert (listed.results["latest"], listed.results["pinned"]) == ("v3", "v3")
    published = await _published_to_training(ops_test)
    assert published.get("pinned_version") == "v3", published
    swept = await _training_job(run_action, "sweep", "v3")
    assert swept["state"] == "succeeded", swept
    assert "model-centric loop, policy revision 2" in swept["params"].get("started_by", "")
    shared["sweep"] = await _job_result(run_action, swept["id"])
    await _wait_for_message(
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
    mlflow = await _tracking(run_action, unit_address, ops_test)
    query = urllib.parse.urlencode({"name": SPEC, "alias": "champion"})
    champion = (await mlflow(f"registered-models/alias?{query}"))["model_version"]
    assert champion["version"] == str(promoted["version"])
    assert champion["run_id"] == shared["sweep"]["best"]["run_id"]
