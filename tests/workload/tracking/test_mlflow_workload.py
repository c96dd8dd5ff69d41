"""tracking-k8s's workload, for real: the charm's Pebble layer run by a real Pebble daemon.

An ``ops.testing`` run of the charm produces the layer and the files it pushes (the storage
mount is a temporary folder); a real Pebble runs that layer, which starts the real MLflow
server; the real MLflow client and plain HTTP talk to it.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from ops import pebble, testing

from tests.provider_data import postgresql_k8s_relation
from tests.workload.processes import PebbleDaemon, PostgreSQLServer, run_pebble
from tests.workload.tracking.harness import CLIENT_ENV, RunningServer, as_user, start_server


@pytest.fixture
def mlflow_client_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in CLIENT_ENV.items():
        monkeypatch.setenv(name, value)


def log_and_read_back(client, experiment_name: str, tmp_path: Path) -> str:
    """Log params, a metric and an artifact; assert they read back; return the run id."""
    experiment = client.get_experiment_by_name(experiment_name)
    experiment_id = (
        experiment.experiment_id if experiment else client.create_experiment(experiment_name)
    )
    run = client.create_run(experiment_id)
    run_id = run.info.run_id
    client.log_param(run_id, "learning_rate", "0.01")
    client.log_metric(run_id, "accuracy", 0.93, step=1)
    artifact = tmp_path / "confusion.json"
    artifact.write_text(json.dumps({"tp": 41, "fp": 3}))
    client.log_artifact(run_id, str(artifact))
    client.set_terminated(run_id)

    fetched = client.get_run(run_id)
    assert fetched.data.params == {"learning_rate": "0.01"}
    assert fetched.data.metrics == {"accuracy": 0.93}
    downloaded = client.download_artifacts(run_id, "confusion.json", str(tmp_path / "down"))
    assert Path(downloaded).read_bytes() == artifact.read_bytes()
    return run_id


def http_status(url: str, auth: tuple[str, str] | None = None) -> int:
    headers = {}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One server with the embedded stores, shared by the tests that only talk to it."""
    base = tmp_path_factory.mktemp("sqlite-server")
    data_dir = base / "mlflow-data"
    data_dir.mkdir()
    with pytest.MonkeyPatch.context() as patch, run_pebble(base) as daemon:
        for name, value in CLIENT_ENV.items():
            patch.setenv(name, value)
        yield start_server(daemon, data_dir)


def test_pebble_runs_mlflow_from_the_charm_layer_with_embedded_stores(
    sqlite_server: RunningServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    services = sqlite_server.pebble.client.get_services(names=["mlflow"])
    assert services[0].current == pebble.ServiceStatus.ACTIVE

    client = as_user(monkeypatch, sqlite_server.url, "admin", sqlite_server.admin_password)
    run_id = log_and_read_back(client, "workload-test", tmp_path)

    # The embedded defaults: runs in SQLite and artifacts on the unit's storage.
    assert (sqlite_server.data_dir / "mlflow.db").stat().st_size > 0
    stored = (sqlite_server.data_dir / "artifacts").rglob("confusion.json")
    assert len([path for path in stored if run_id in path.parts]) == 1


def test_secrets_stay_out_of_the_pebble_plan_and_the_command(sqlite_server: RunningServer):
    plan = sqlite_server.pebble.client.get_plan().to_yaml()
    assert sqlite_server.admin_password not in plan
    secrets_env = sqlite_server.data_dir / "secrets" / "secrets.env"
    assert sqlite_server.admin_password in secrets_env.read_text()
    assert secrets_env.stat().st_mode & 0o777 == 0o600


def test_unauthenticated_and_wrong_password_requests_are_refused(sqlite_server: RunningServer):
    search = f"{sqlite_server.url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert http_status(f"{sqlite_server.url}/health") == 200
    assert http_status(search) == 401
    assert http_status(search, ("admin", "not-the-password")) == 401
    assert http_status(search, ("admin", sqlite_server.admin_password)) == 200


def test_consumer_gets_its_own_user_that_can_log_to_its_experiment(
    sqlite_server: RunningServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    consumer = testing.Relation(
        "mlops-tracking", remote_app_name="trainer", remote_app_data={"experiment": '"fraud"'}
    )
    state_in = dataclasses.replace(sqlite_server.state, relations={consumer})
    context = sqlite_server.context
    state_out = context.run(context.on.relation_changed(consumer), state_in)

    published = state_out.get_relation(consumer.id).local_app_data
    secret_id = json.loads(published["credentials_secret_id"])
    (secret,) = [s for s in state_out.secrets if s.id == secret_id]
    username = secret.tracked_content["username"]
    assert json.loads(published["default_experiment"]) == "fraud"
    assert secret.remote_grants[consumer.id] == {"trainer"}

    client = as_user(monkeypatch, sqlite_server.url, username, secret.tracked_content["password"])
    log_and_read_back(client, "fraud", tmp_path)
    search = f"{sqlite_server.url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert http_status(search, (username, "wrong-password-123")) == 401


def test_promote_model_sets_the_alias_on_the_real_registry(
    sqlite_server: RunningServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    client = as_user(monkeypatch, sqlite_server.url, "admin", sqlite_server.admin_password)
    run_id = log_and_read_back(client, "registry-test", tmp_path)
    client.create_registered_model("fraud-detector")
    version = client.create_model_version(
        "fraud-detector", f"runs:/{run_id}/confusion.json", run_id=run_id
    )
    context = sqlite_server.context

    context.run(
        context.on.action(
            "promote-model",
            params={
                "model": "fraud-detector",
                "version": int(version.version),
                "alias": "champion",
            },
        ),
        sqlite_server.state,
    )

    assert context.action_results == {
        "model": "fraud-detector",
        "version": version.version,
        "alias": "champion",
        "run-id": run_id,
        "source": version.source,
    }
    promoted = client.get_model_version_by_alias("fraud-detector", "champion")
    assert promoted.version == version.version


def test_promote_model_of_a_missing_version_fails_with_a_reason(sqlite_server: RunningServer):
    context = sqlite_server.context
    with pytest.raises(testing.ActionFailed, match="has no version 7"):
        context.run(
            context.on.action("promote-model", params={"model": "nothing-here", "version": 7}),
            sqlite_server.state,
        )


def test_create_user_action_makes_a_working_user(
    sqlite_server: RunningServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    context = sqlite_server.context
    context.run(
        context.on.action("create-user", params={"username": "ada", "permission": "EDIT"}),
        sqlite_server.state,
    )
    results = context.action_results
    assert results is not None and results["username"] == "ada"

    client = as_user(monkeypatch, sqlite_server.url, "ada", results["password"])
    log_and_read_back(client, "Default", tmp_path)


def test_postgresql_relation_moves_runs_and_users_into_postgresql(
    pebble_daemon: PebbleDaemon,
    postgresql_server: PostgreSQLServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mlflow_client_env: None,
):
    password = "pg-Secret-with:colon"
    postgresql_server.psql(f"CREATE ROLE mlflow_app LOGIN PASSWORD '{password}'")
    postgresql_server.psql("CREATE DATABASE mlflow OWNER mlflow_app")
    relation, user_secret = postgresql_k8s_relation(
        host=postgresql_server.host,
        port=postgresql_server.port,
        database="mlflow",
        username="mlflow_app",
        password=password,
    )
    data_dir = tmp_path / "mlflow-data"
    data_dir.mkdir()

    server = start_server(
        pebble_daemon,
        data_dir,
        relations={relation},
        secrets={user_secret},
    )
    command = pebble_daemon.client.get_plan().services["mlflow"].command
    assert "postgresql+psycopg2://mlflow_app@127.0.0.1:" in command
    assert password not in command

    client = as_user(monkeypatch, server.url, "admin", server.admin_password)
    run_id = log_and_read_back(client, "on-postgresql", tmp_path)

    assert (
        postgresql_server.psql(f"SELECT count(*) FROM runs WHERE run_uuid = '{run_id}'", "mlflow")
        == "1"
    )
    assert postgresql_server.psql("SELECT username FROM users", "mlflow") == "admin"
    assert not (data_dir / "mlflow.db").exists()
