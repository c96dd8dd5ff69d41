"""data-versioning-k8s on MicroK8s: versions by actions (jobs), backup and restore, a refresh.

The tests run in order and share one model (pytest-operator makes one per module). Data for
a version is written into the registry container with ``juju ssh --container``; versions are
then cut, listed, compared, pinned and rolled back through the charm's actions, and the git
server is checked from outside the cluster at the unit's address.

Environment overrides:

- ``MLOPS_REGISTRY_IMAGE``: the ``registry-image`` resource (default: the rock pushed to the
  MicroK8s registry, ``localhost:32000/data-registry:0.1.0``);
- ``MLOPS_CHARM_DATA_VERSIONING_K8S``: a packed charm to deploy.
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.error
import urllib.request

import pytest
from pytest_operator.plugin import OpsTest

APP = "data-versioning-k8s"
UNIT = f"{APP}/0"
CONTAINER = "registry"
REGISTRY_IMAGE = os.environ.get("MLOPS_REGISTRY_IMAGE", "localhost:32000/data-registry:0.1.0")
INCOMING = "/var/lib/registry/uploads/batch"
DEPLOY_TIMEOUT_S = 20 * 60


@pytest.mark.abort_on_fail
async def test_build_and_deploy(ops_test: OpsTest, charm_builder):
    """Deploy the registry alone; it reaches active/idle with its embedded remote."""
    assert ops_test.model is not None
    registry_charm = await charm_builder(APP)
    await ops_test.model.deploy(
        registry_charm, application_name=APP, resources={"registry-image": REGISTRY_IMAGE}
    )
    await ops_test.model.wait_for_idle(
        apps=[APP], status="active", raise_on_blocked=True, timeout=DEPLOY_TIMEOUT_S
    )
    assert ops_test.model.units[UNIT].workload_status_message == "no versions yet"


async def test_create_and_list_versions(ops_test: OpsTest, run_action, registry_files):
    await registry_files(UNIT, INCOMING, {"a.txt": "alpha", "b.txt": "beta"})
    first = await run_action(UNIT, "create-version", source=INCOMING, message="first")
    assert first.results["version"] == "v1"
    assert int(first.results["files"]) == 2
    await registry_files(
        UNIT, INCOMING, {"a.txt": "alpha", "b.txt": "beta, relabelled", "c.txt": "c"}
    )
    second = await run_action(UNIT, "create-version", source=INCOMING)
    assert second.results["version"] == "v2"
    assert second.results["parent"] == "v1"
    listed = await run_action(UNIT, "list-versions")
    names = [v["version"] for v in json.loads(listed.results["versions"])]
    assert names == ["v1", "v2"]


async def test_identical_data_makes_no_version(ops_test: OpsTest, run_action):
    failed = await run_action(UNIT, "create-version", source=INCOMING, expect_failure=True)
    assert "identical to v2" in failed.message


async def test_a_job_started_without_waiting_is_listed(
    ops_test: OpsTest, run_action, registry_files
):
    assert ops_test.model is not None
    await registry_files(UNIT, INCOMING, {"a.txt": "alpha, again"})
    started = await run_action(UNIT, "create-version", source=INCOMING, wait=False)
    job = started.results["job"]
    await ops_test.model.wait_for_idle(apps=[APP], status="active", timeout=300)
    state = "running"
    for _ in range(60):
        listed = await run_action(UNIT, "list-jobs")
        state = {j["id"]: j["state"] for j in json.loads(listed.results["jobs"])}[job]
        if state != "running":
            break
        await asyncio.sleep(5)
    assert state == "succeeded"
    await ops_test.model.wait_for_idle(apps=[APP], status="active", timeout=300)
    assert "latest v3" in ops_test.model.units[UNIT].workload_status_message


async def test_diff_versions(run_action):
    diff = await run_action(UNIT, "diff-versions", **{"from": "v1", "to": "v2"})
    assert json.loads(diff.results["added"]) == ["data/c.txt"]
    assert json.loads(diff.results["modified"]) == ["data/b.txt"]
    assert int(diff.results["modified-bytes"]) == len("beta, relabelled")


async def test_pin_and_rollback(ops_test: OpsTest, run_action):
    assert ops_test.model is not None
    await run_action(UNIT, "pin-version", version="v1")
    await ops_test.model.wait_for_idle(apps=[APP], status="active", timeout=300)
    assert "pinned v1" in ops_test.model.units[UNIT].workload_status_message
    rolled = await run_action(UNIT, "rollback", to="v1")
    assert rolled.results["version"] == "v4"
    assert rolled.results["source"] == "rollback"
    failed = await run_action(UNIT, "rollback", to="v0", expect_failure=True)
    assert "version name" in failed.message


async def test_git_server_refuses_anonymous_clients(unit_address):
    address = await unit_address(UNIT)
    url = f"http://{address}:8080/registry.git/info/refs?service=git-upload-pack"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=30)
    assert refused.value.code == 401
    with urllib.request.urlopen(f"http://{address}:8080/healthz", timeout=30) as response:
        assert response.status == 200


async def test_a_restored_backup_brings_back_its_versions_and_drops_later_ones(
    ops_test: OpsTest, run_action, registry_files
):
    """create-backup, a version after it, restore: the versions before it diff as before."""
    assert ops_test.model is not None
    created = await run_action(UNIT, "create-backup")
    assert created.results["state"] == "succeeded"
    backup_id = created.results["backup-id"]
    await registry_files(UNIT, INCOMING, {"a.txt": "after the backup"})
    later = await run_action(UNIT, "create-version", source=INCOMING)

    restored = await run_action(UNIT, "restore", **{"backup-id": backup_id})
    assert restored.results["state"] == "succeeded"
    await ops_test.model.wait_for_idle(apps=[APP], status="active", timeout=DEPLOY_TIMEOUT_S)
    listed = await run_action(UNIT, "list-versions")
    names = [v["version"] for v in json.loads(listed.results["versions"])]
    assert later.results["version"] not in names
    assert names[:2] == ["v1", "v2"]
    diff = await run_action(UNIT, "diff-versions", **{"from": "v1", "to": "v2"})
    assert json.loads(diff.results["modified"]) == ["data/b.txt"]


async def test_a_refresh_keeps_every_version(ops_test: OpsTest, charm_builder, run_action):
    """A refresh to a freshly packed charm: the pod is replaced, the versions stay."""
    assert ops_test.model is not None
    before = await run_action(UNIT, "list-versions")
    charm = await charm_builder(APP)
    await ops_test.model.applications[APP].refresh(
        path=charm, resources={"registry-image": REGISTRY_IMAGE}
    )
    await ops_test.model.wait_for_idle(apps=[APP], status="active", timeout=DEPLOY_TIMEOUT_S)
    after = await run_action(UNIT, "list-versions")
    assert json.loads(after.results["versions"]) == json.loads(before.results["versions"])
