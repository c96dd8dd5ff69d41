"""labelling-k8s on MicroK8s: fed by the data registry, annotated, measured, exported.

The tests run in order and share one model (pytest-operator makes one per module).
data-versioning-k8s cuts ``v1`` from text files written into its container; labelling-k8s,
related over ``mlops-dataset`` with write access, imports it into a project; two annotators
label through Label Studio's REST API at the unit's address (with the admin token the
``get-admin-credentials`` action returns) with one planted disagreement; ``consistency-report``
must find it; ``export-annotations`` must cut ``v2`` whose parent is ``v1``. Then a backup is
restored over a later project, and the admin token is rotated.

Environment overrides:

- ``MLOPS_LABELLING_IMAGE``: the ``label-studio-image`` resource (default: the rock pushed to
  the MicroK8s registry, ``localhost:32000/labelling:1.23.2``);
- ``MLOPS_REGISTRY_IMAGE``: data-versioning-k8s's image, as in test_data_versioning.py;
- ``MLOPS_CHARM_LABELLING_K8S``/``MLOPS_CHARM_DATA_VERSIONING_K8S``: packed charms to deploy.
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.error
import urllib.request
from typing import Any

import pytest
from pytest_operator.plugin import OpsTest

APP = "labelling-k8s"
UNIT = f"{APP}/0"
REGISTRY = "data-versioning-k8s"
REGISTRY_UNIT = f"{REGISTRY}/0"
LABELLING_IMAGE = os.environ.get("MLOPS_LABELLING_IMAGE", "localhost:32000/labelling:1.23.2")
REGISTRY_IMAGE = os.environ.get("MLOPS_REGISTRY_IMAGE", "localhost:32000/data-registry:0.1.0")
INCOMING = "/var/lib/registry/incoming/reviews"
PORT = 8080
DEPLOY_TIMEOUT_S = 20 * 60
TEXTS = {"a.txt": "Great value.", "b.txt": "Broke in a day.", "c.txt": "Fine, I guess."}
# (first annotator, second annotator): b.txt is the planted disagreement.
ANSWERS = {"a.txt": ("positive", "positive"), "b.txt": ("negative", "positive")}


def _api(base: str, token: str, method: str, path: str, body: Any = None) -> Any:
    request = urllib.request.Request(
        f"{base}{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        payload = response.read()
    return json.loads(payload) if payload else None


def _annotate(base: str, token: str, project_id: int) -> None:
    """Two annotators answer through the REST API, as the front end would."""
    users = [
        _api(
            base,
            token,
            "POST",
            "/api/users/",
            {"email": f"{name}@labelling.test", "username": name},
        )["id"]
        for name in ("ann", "bob")
    ]
    export = f"/api/projects/{project_id}/export?exportType=JSON&download_all_tasks=true"
    for task in _api(base, token, "GET", export):
        item = task["data"]["item"].rsplit("/", 1)[-1]
        for user, answer in zip(users, ANSWERS.get(item, ()), strict=False):
            result = [
                {
                    "from_name": "label",
                    "to_name": "text",
                    "type": "choices",
                    "value": {"choices": [answer]},
                }
            ]
            body = {"completed_by": user, "result": result}
            _api(base, token, "POST", f"/api/tasks/{task['id']}/annotations", body)


@pytest.mark.abort_on_fail
async def test_build_and_deploy_with_the_registry(ops_test: OpsTest, charm_builder):
    """Deploy labelling beside the registry; related, both reach active/idle."""
    assert ops_test.model is not None
    labelling_charm = await charm_builder(APP)
    registry_charm = await charm_builder(REGISTRY)
    await ops_test.model.deploy(
        labelling_charm,
        application_name=APP,
        resources={"label-studio-image": LABELLING_IMAGE},
        config={"overlap": 2},
    )
    await ops_test.model.deploy(
        registry_charm, application_name=REGISTRY, resources={"registry-image": REGISTRY_IMAGE}
    )
    await ops_test.model.integrate(f"{APP}:mlops-dataset", f"{REGISTRY}:mlops-dataset")
    await ops_test.model.wait_for_idle(
        apps=[APP, REGISTRY], status="active", raise_on_blocked=True, timeout=DEPLOY_TIMEOUT_S
    )
    assert "no data registry" not in ops_test.model.units[UNIT].workload_status_message


async def test_get_admin_credentials(run_action):
    credentials = await run_action(UNIT, "get-admin-credentials")
    assert credentials.results["username"] == "admin@labelling.mlops.invalid"
    assert len(credentials.results["api-token"]) == 40


async def test_import_a_version_cut_by_the_registry(ops_test: OpsTest, run_action, registry_files):
    await registry_files(REGISTRY_UNIT, INCOMING, TEXTS)
    cut = await run_action(REGISTRY_UNIT, "create-version", source=INCOMING, message="reviews")
    assert cut.results["version"] == "v1"
    imported = await run_action(
        UNIT,
        "import-version",
        version="v1",
        project="reviews",
        preset="text-classification",
        labels="positive,negative",
    )
    assert imported.results["tasks-created"] == str(len(TEXTS))
    assert imported.results["overlap"] == "2"


async def test_import_failures_are_one_line(run_action):
    unknown = await run_action(
        UNIT,
        "import-version",
        expect_failure=True,
        version="v9",
        project="reviews",
        preset="text-classification",
        labels="positive",
    )
    assert "unknown version v9" in unknown.message
    bad = await run_action(
        UNIT, "import-version", expect_failure=True, version="v1", project="reviews"
    )
    assert "give exactly one of preset and label-config" in bad.message


async def test_consistency_report_finds_the_planted_disagreement(run_action, unit_address):
    token = (await run_action(UNIT, "get-admin-credentials")).results["api-token"]
    base = f"http://{await unit_address(UNIT)}:{PORT}"
    projects = await asyncio.to_thread(_api, base, token, "GET", "/api/projects")
    project_id = next(p["id"] for p in projects["results"] if p["title"] == "reviews")
    await asyncio.to_thread(_annotate, base, token, project_id)
    report = await run_action(UNIT, "consistency-report", project="reviews", threshold=0.5)
    inconsistent = json.loads(report.results["inconsistent"])
    assert [entry["item"] for entry in inconsistent] == ["b.txt"]
    assert report.results["compared-tasks"] == "2"


async def test_export_cuts_a_version_whose_parent_is_v1(run_action):
    exported = await run_action(UNIT, "export-annotations", project="reviews")
    assert (exported.results["version"], exported.results["parent"]) == ("v2", "v1")
    listed = await run_action(REGISTRY_UNIT, "list-versions")
    v2 = next(v for v in json.loads(listed.results["versions"]) if v["version"] == "v2")
    assert (v2["parent"], v2["source"]) == ("v1", "labelling-export")
    nothing = await run_action(
        UNIT, "export-annotations", expect_failure=True, project="no-such-project"
    )
    assert "unknown project 'no-such-project'" in nothing.message


def _project_titles(base: str, token: str) -> set[str]:
    return {p["title"] for p in _api(base, token, "GET", "/api/projects")["results"]}


async def test_a_restored_backup_brings_back_the_annotations_and_drops_later_projects(
    ops_test: OpsTest, run_action, unit_address
):
    """create-backup, a project after it, restore: the annotated project stays, the later goes."""
    assert ops_test.model is not None
    token = (await run_action(UNIT, "get-admin-credentials")).results["api-token"]
    base = f"http://{await unit_address(UNIT)}:{PORT}"
    created = await run_action(UNIT, "create-backup")
    assert created.results["state"] == "succeeded"
    await asyncio.to_thread(_api, base, token, "POST", "/api/projects", {"title": "later"})

    restored = await run_action(UNIT, "restore", **{"backup-id": created.results["backup-id"]})
    assert restored.results["state"] == "succeeded"
    await ops_test.model.wait_for_idle(apps=[APP], status="active", timeout=DEPLOY_TIMEOUT_S)
    token = (await run_action(UNIT, "get-admin-credentials")).results["api-token"]
    assert await asyncio.to_thread(_project_titles, base, token) == {"reviews"}
    report = await run_action(UNIT, "consistency-report", project="reviews", threshold=0.5)
    assert report.results["compared-tasks"] == "2"  # both annotators' answers came back


async def test_rotating_the_admin_token_refuses_the_old_one(run_action, unit_address):
    """rotate-credentials target=admin: the new token works, the old one gets 401."""
    old = (await run_action(UNIT, "get-admin-credentials")).results["api-token"]
    await run_action(UNIT, "rotate-credentials", target="admin")
    new = (await run_action(UNIT, "get-admin-credentials")).results["api-token"]
    assert new != old
    base = f"http://{await unit_address(UNIT)}:{PORT}"
    assert await asyncio.to_thread(_project_titles, base, new) == {"reviews"}
    with pytest.raises(urllib.error.HTTPError) as refused:
        await asyncio.to_thread(_project_titles, base, old)
    assert refused.value.code == 401
