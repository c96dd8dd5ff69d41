"""tracking-k8s on MicroK8s: deploy, runs from outside, actions, databases, backup, rotation.

The tests run in order and share one model (pytest-operator makes one per module). A client
outside the cluster reaches the unit at its pod address (``juju status``), port 5000, with the
real MLflow client authenticated through ``MLFLOW_TRACKING_USERNAME``/``PASSWORD``.

Environment overrides:

- ``MLOPS_MLFLOW_IMAGE``: the ``mlflow-image`` resource (default: the rock pushed to the
  MicroK8s registry, ``localhost:32000/mlflow:3.17.2``);
- ``MLOPS_POSTGRESQL_CHANNEL``: the postgresql-k8s channel (default ``16/stable``);
- ``MLOPS_CHARM_TRACKING_K8S``: a packed charm to deploy instead of building one.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import logging
import os
import shlex
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from pytest_operator.plugin import OpsTest

logger = logging.getLogger(__name__)

APP = "tracking-k8s"
UNIT = f"{APP}/0"
CONTAINER = "mlflow"
SERVICE = "mlflow"  # the Pebble service in that container
PORT = 5000
IMAGE = os.environ.get("MLOPS_MLFLOW_IMAGE", "localhost:32000/mlflow:3.17.2")
POSTGRESQL = "postgresql-k8s"
POSTGRESQL_CHANNEL = os.environ.get("MLOPS_POSTGRESQL_CHANNEL", "16/stable")
SUFFIX = uuid.uuid4().hex[:8]
EXPERIMENT = f"integration-{SUFFIX}"
MODEL = f"integration-model-{SUFFIX}"
NEW_USER = f"scientist-{SUFFIX}"
DEPLOY_TIMEOUT_S = 20 * 60
POSTGRESQL_TIMEOUT_S = 30 * 60

# A client pointed at a dead server retries for minutes by default: fail fast instead.
CLIENT_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


# --- the MLflow side: plain functions, run in a thread so Juju's websocket stays served ---


@dataclass(frozen=True)
class Login:
    """A tracking server's URL and the MLflow user who talks to it."""

    url: str
    username: str
    password: str

    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.url, registry_uri=self.url)

    @contextlib.contextmanager
    def credentials(self) -> Iterator[None]:
        """Authenticate the MLflow client calls in the block, the way users do: env vars."""
        wanted = {
            **CLIENT_ENV,
            "MLFLOW_TRACKING_USERNAME": self.username,
            "MLFLOW_TRACKING_PASSWORD": self.password,
        }
        saved = {name: os.environ.get(name) for name in wanted}
        os.environ.update(wanted)
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def log_run(login: Login, experiment: str, tag: str) -> str:
    """Log a run (params, metrics, artifacts) into ``experiment``; return its id."""
    client = login.client()
    with login.credentials():
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(experiment)
        run = client.create_run(experiment_id, run_name=f"{tag}-run")
        run_id = run.info.run_id
        client.log_param(run_id, "learning_rate", "0.01")
        client.log_param(run_id, "logged_by", tag)
        for step, accuracy in enumerate((0.71, 0.84, 0.93)):
            client.log_metric(run_id, "accuracy", accuracy, step=step)
        client.log_text(run_id, f"hello from {tag}\n", "notes/hello.txt")
        client.log_text(run_id, "weights: [1, 2, 3]\n", "model/weights.yaml")
        client.set_terminated(run_id)
    return run_id


def read_run(login: Login, run_id: str, tag: str, download_dir: Path) -> None:
    """Read ``run_id`` back and check what ``log_run`` logged, artifact content included."""
    client = login.client()
    with login.credentials():
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert run.data.params == {"learning_rate": "0.01", "logged_by": tag}
        assert run.data.metrics == {"accuracy": 0.93}
        history = client.get_metric_history(run_id, "accuracy")
        assert [(m.step, m.value) for m in history] == [(0, 0.71), (1, 0.84), (2, 0.93)]
        listed = {artifact.path for artifact in client.list_artifacts(run_id)}
        assert listed == {"notes", "model"}
        local = client.download_artifacts(run_id, "notes/hello.txt", str(download_dir))
    assert Path(local).read_text() == f"hello from {tag}\n"


def run_exists(login: Login, run_id: str) -> bool:
    """Whether the server knows ``run_id`` (False on RESOURCE_DOES_NOT_EXIST)."""
    client = login.client()
    with login.credentials():
        try:
            client.get_run(run_id)
        except MlflowException as error:
            if error.error_code == "RESOURCE_DOES_NOT_EXIST":
                return False
            raise
    return True


def register_versions(login: Login, model: str, run_id: str, count: int) -> list[str]:
    """Register ``model`` with ``count`` versions from ``run_id``'s ``model/`` artifacts."""
    client = login.client()
    with login.credentials():
        client.create_registered_model(model)
        return [
            client.create_model_version(model, f"runs:/{run_id}/model", run_id=run_id).version
            for _ in range(count)
        ]


def alias_version(login: Login, model: str, alias: str) -> str:
    """The version ``model``'s ``alias`` points at, resolved by the MLflow client."""
    client = login.client()
    with login.credentials():
        return str(client.get_model_version_by_alias(model, alias).version)


def http_status(url: str, login: Login | None = None, body: bytes | None = None) -> int:
    """The HTTP status of one raw request (GET, or POST when ``body`` is given)."""
    headers = {"Content-Type": "application/json"}
    if login:
        token = base64.b64encode(f"{login.username}:{login.password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    request = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def wait_for_health(url: str, timeout_s: float = 180) -> None:
    """Wait until the server answers ``/health`` from outside the cluster."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = http_status(f"{url}/health")
        except OSError as error:
            last = error
        if last == 200:
            return
        time.sleep(3)
    raise AssertionError(f"{url}/health did not answer 200 within {timeout_s}s: {last}")


# --- Juju side ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared() -> dict[str, Any]:
    """What one test leaves for the next ones (credentials, run ids)."""
    return {}


def model_of(ops_test: OpsTest):
    assert ops_test.model is not None, "pytest-operator gave no model"
    return ops_test.model


async def server_url(unit_address) -> str:
    url = f"http://{await unit_address(UNIT)}:{PORT}"
    await asyncio.to_thread(wait_for_health, url)
    logger.info("MLflow answers at %s", url)
    return url


async def wait_active(
    ops_test: OpsTest, apps: list[str], timeout: float, raise_on_blocked: bool = False
) -> None:
    """Wait for ``apps`` to be active and idle, firing update-status often meanwhile.

    The charm reports "waiting for MLflow to become ready" until ``/health`` answers; the
    next hook (update-status, every 10 s here) turns that into active.
    """
    async with ops_test.fast_forward("10s"):
        await model_of(ops_test).wait_for_idle(
            apps=apps,
            status="active",
            raise_on_error=True,
            raise_on_blocked=raise_on_blocked,
            timeout=timeout,
            idle_period=30,
        )


def backend_store(plan: dict[str, Any]) -> str:
    """The ``--backend-store-uri`` of the mlflow service in a Pebble plan.

    The service runs ``/bin/sh -c '. secrets.env && exec mlflow server ...'``: split the
    command, then each of its words, to find the option wherever it sits.
    """
    command = plan.get("services", {}).get(SERVICE, {}).get("command", "")
    words = [part for word in shlex.split(command) for part in shlex.split(word)]
    if "--backend-store-uri" not in words:
        return ""
    return words[words.index("--backend-store-uri") + 1]


async def wait_for_store(pebble_plan, prefix: str, timeout_s: float = 10 * 60) -> str:
    """Wait until the unit's plan runs MLflow on a backend store starting with ``prefix``."""
    deadline = time.monotonic() + timeout_s
    store = ""
    while time.monotonic() < deadline:
        store = backend_store(await pebble_plan(UNIT, CONTAINER))
        if store.startswith(prefix):
            return store
        await asyncio.sleep(10)
    raise AssertionError(f"the backend store is still {store!r}, not {prefix}...")


@pytest.mark.abort_on_fail
async def test_build_and_deploy(ops_test: OpsTest, charm_builder):
    """Pack the staged charm, deploy it with the MLflow image and wait for active/idle."""
    charm = await charm_builder(APP)
    model = model_of(ops_test)
    await model.deploy(charm, application_name=APP, resources={"mlflow-image": IMAGE}, num_units=1)
    # Alone, the charm is never blocked unless its config is bad: fail fast if it is.
    await wait_active(ops_test, [APP], DEPLOY_TIMEOUT_S, raise_on_blocked=True)
    unit = model.applications[APP].units[0]
    expected = f"serving at http://{APP}.{ops_test.model_name}.svc.cluster.local:{PORT}"
    assert unit.workload_status_message == expected


@pytest.mark.abort_on_fail
async def test_admin_logs_a_run_from_outside(
    ops_test: OpsTest, run_action, unit_address, shared, tmp_path
):
    """get-admin-credentials, then log and read back a run through the unit's address."""
    outcome = await run_action(UNIT, "get-admin-credentials")
    assert outcome.results["username"] == "admin"
    assert outcome.results["password"]
    assert outcome.results["url"] == (
        f"http://{APP}.{ops_test.model_name}.svc.cluster.local:{PORT}"
    )
    url = await server_url(unit_address)
    admin = Login(url, outcome.results["username"], outcome.results["password"])

    run_id = await asyncio.to_thread(log_run, admin, EXPERIMENT, "admin")
    await asyncio.to_thread(read_run, admin, run_id, "admin", tmp_path)
    shared.update(admin=admin, sqlite_run_id=run_id)


async def test_unauthenticated_requests_are_refused(shared):
    """No credentials, or a wrong password, get 401; the health endpoint stays open."""
    admin: Login = shared["admin"]
    api = f"{admin.url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert await asyncio.to_thread(http_status, api) == 401
    impostor = dataclasses.replace(admin, password="not-the-password")
    assert await asyncio.to_thread(http_status, api, impostor) == 401
    assert await asyncio.to_thread(http_status, api, admin) == 200
    assert await asyncio.to_thread(http_status, f"{admin.url}/health") == 200


async def test_create_user(run_action, shared, tmp_path):
    """create-user gives working credentials with EDIT on the default experiment, no more."""
    outcome = await run_action(UNIT, "create-user", username=NEW_USER, permission="EDIT")
    results = outcome.results
    assert results["username"] == NEW_USER
    assert results["permission"] == "EDIT"
    assert results["experiment"] == "Default"
    user = Login(shared["admin"].url, NEW_USER, results["password"])

    run_id = await asyncio.to_thread(log_run, user, "Default", "user")
    await asyncio.to_thread(read_run, user, run_id, "user", tmp_path)
    # Not an administrator: creating users is refused.
    create_user = f"{user.url}/api/2.0/mlflow/users/create"
    body = b'{"username": "intruder", "password": "intruder-password-1"}'
    assert await asyncio.to_thread(http_status, create_user, user, body) == 403

    failed = await run_action(UNIT, "create-user", username=NEW_USER, expect_failure=True)
    assert "already exists" in failed.message
    failed = await run_action(UNIT, "create-user", username="admin", expect_failure=True)
    assert "reserved" in failed.message


async def test_promote_model(run_action, shared):
    """Register two versions, promote one then the other: the alias follows."""
    admin: Login = shared["admin"]
    run_id = shared["sqlite_run_id"]
    versions = await asyncio.to_thread(register_versions, admin, MODEL, run_id, 2)
    assert versions == ["1", "2"]

    for version in (1, 2):
        outcome = await run_action(
            UNIT, "promote-model", model=MODEL, version=version, alias="champion"
        )
        assert outcome.results["model"] == MODEL
        assert outcome.results["version"] == str(version)
        assert outcome.results["alias"] == "champion"
        assert outcome.results["run-id"] == run_id
        resolved = await asyncio.to_thread(alias_version, admin, MODEL, "champion")
        assert resolved == str(version)

    failed = await run_action(
        UNIT, "promote-model", model=MODEL, version=99, alias="champion", expect_failure=True
    )
    assert "has no version 99" in failed.message


async def test_a_second_unit_without_a_database_does_not_serve(ops_test: OpsTest):
    """Scale-out before a database: both units blocked, the second one's MLflow stopped."""
    model = model_of(ops_test)
    application = model.applications[APP]
    await application.add_unit(count=1)
    await model.wait_for_idle(apps=[APP], status="blocked", timeout=DEPLOY_TIMEOUT_S)
    messages = {unit.name: unit.workload_status_message for unit in application.units}
    assert set(messages.values()) == {"scale-out needs the database relation: SQLite is per unit"}
    second = next(unit.name for unit in application.units if unit.name != UNIT)
    _, services, _ = await ops_test.juju(
        "ssh", "--container", CONTAINER, second, "/charm/bin/pebble", "services", SERVICE
    )
    # The second unit's MLflow does not run: its ready check takes it out of the Service.
    assert "inactive" in services, services
    await application.destroy_unit(second)
    await wait_active(ops_test, [APP], DEPLOY_TIMEOUT_S)


@pytest.mark.abort_on_fail
async def test_postgresql_becomes_the_backend_store(
    ops_test: OpsTest, run_action, unit_address, pebble_plan, shared, tmp_path
):
    """Relate postgresql-k8s: the stores move to PostgreSQL, the admin is re-created there."""
    model = model_of(ops_test)
    await model.deploy(
        POSTGRESQL,
        application_name=POSTGRESQL,
        channel=POSTGRESQL_CHANNEL,
        trust=True,
        config={"profile": "testing"},
    )
    await model.integrate(f"{APP}:database", f"{POSTGRESQL}:database")
    await wait_active(ops_test, [APP, POSTGRESQL], POSTGRESQL_TIMEOUT_S)

    store = await wait_for_store(pebble_plan, "postgresql+psycopg2://")
    admin: Login = dataclasses.replace(shared["admin"], url=await server_url(unit_address))
    assert admin.password not in store  # the password travels in a 0600 file, not the plan

    # The auth store moved too; the admin is re-created from the same Juju secret.
    outcome = await run_action(UNIT, "get-admin-credentials")
    assert (outcome.results["username"], outcome.results["password"]) == (
        admin.username,
        admin.password,
    )
    api = f"{admin.url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert await asyncio.to_thread(http_status, api, admin) == 200
    assert await asyncio.to_thread(http_status, api) == 401

    # A new store: runs logged on SQLite are not carried over (documented); new runs log fine.
    assert not await asyncio.to_thread(run_exists, admin, shared["sqlite_run_id"])
    run_id = await asyncio.to_thread(log_run, admin, EXPERIMENT, "postgresql")
    await asyncio.to_thread(read_run, admin, run_id, "postgresql", tmp_path)
    shared.update(postgresql_run_id=run_id)


async def test_removing_the_database_returns_to_sqlite(
    ops_test: OpsTest, unit_address, pebble_plan, shared
):
    """Remove the relation: back to active on the unit's SQLite store, with its runs."""
    model = model_of(ops_test)
    await ops_test.juju("remove-relation", f"{APP}:database", f"{POSTGRESQL}:database", check=True)
    application = model.applications[APP]
    await model.block_until(
        lambda: (
            not any(
                endpoint.name == "database"
                for relation in application.relations
                for endpoint in relation.endpoints
                if endpoint.application_name == APP
            )
        ),
        timeout=5 * 60,
    )
    await wait_active(ops_test, [APP], DEPLOY_TIMEOUT_S)

    await wait_for_store(pebble_plan, "sqlite:///")
    admin: Login = dataclasses.replace(shared["admin"], url=await server_url(unit_address))
    assert await asyncio.to_thread(run_exists, admin, shared["sqlite_run_id"])
    assert not await asyncio.to_thread(run_exists, admin, shared["postgresql_run_id"])


async def test_a_restored_backup_brings_back_its_runs_and_drops_later_ones(
    ops_test: OpsTest, run_action, unit_address, shared, tmp_path
):
    """create-backup, a run after it, restore: the backed-up run reads back, the later is gone."""
    admin: Login = dataclasses.replace(shared["admin"], url=await server_url(unit_address))
    created = await run_action(UNIT, "create-backup")
    backup_id = created.results["backup-id"]
    assert created.results["state"] == "succeeded"
    listed = await run_action(UNIT, "list-backups")
    assert backup_id in {entry["id"] for entry in json.loads(listed.results["backups"])}
    later = await asyncio.to_thread(log_run, admin, EXPERIMENT, "after-the-backup")

    restored = await run_action(UNIT, "restore", **{"backup-id": backup_id})
    assert restored.results["state"] == "succeeded"
    await wait_active(ops_test, [APP], DEPLOY_TIMEOUT_S)
    admin = dataclasses.replace(admin, url=await server_url(unit_address))
    await asyncio.to_thread(read_run, admin, shared["sqlite_run_id"], "admin", tmp_path)
    assert not await asyncio.to_thread(run_exists, admin, later)


async def test_rotating_the_admin_password_refuses_the_old_one(run_action, unit_address, shared):
    """rotate-credentials target=admin: the new password works at once, the old gets 401."""
    old: Login = dataclasses.replace(shared["admin"], url=await server_url(unit_address))
    rotated = await run_action(UNIT, "rotate-credentials", target="admin")
    assert old.password not in json.dumps(rotated.results)
    fresh = await run_action(UNIT, "get-admin-credentials")
    new = dataclasses.replace(old, password=fresh.results["password"])
    assert new.password != old.password
    api = f"{old.url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert await asyncio.to_thread(http_status, api, new) == 200
    assert await asyncio.to_thread(http_status, api, old) == 401
    shared["admin"] = new


async def test_a_refresh_keeps_every_run_and_the_admin(
    ops_test: OpsTest, charm_builder, unit_address, shared, tmp_path
):
    """A refresh to a freshly packed charm: the pod is replaced, the runs and admin stay."""
    charm = await charm_builder(APP)
    await (
        model_of(ops_test).applications[APP].refresh(path=charm, resources={"mlflow-image": IMAGE})
    )
    await wait_active(ops_test, [APP], DEPLOY_TIMEOUT_S)
    admin: Login = dataclasses.replace(shared["admin"], url=await server_url(unit_address))
    await asyncio.to_thread(read_run, admin, shared["sqlite_run_id"], "admin", tmp_path)
