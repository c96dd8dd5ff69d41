"""Backup and restore of MLflow into a fresh deployment, with the real jobs and clients.

tracking-k8s runs on a real Pebble (tests/workload/pebble_backed.py): its layer runs the real
MLflow server. A consumer related over mlops-tracking logs runs (params, a metric's history,
an artifact) with the official MLflow client; create-backup runs the real ``mlops-workload
backup create`` job as a Pebble service while MLflow serves. Then the unit's state is
destroyed — Pebble, its plan and every file of the storage but the backups — and a new
deployment comes up on the empty storage, with a new admin secret and the consumer related
again (a new password). restore stops MLflow, runs the real restore job and starts MLflow
again: the consumer, with the new deployment's credentials, reads every run, metric and
artifact back byte for byte, and the new deployment's admin still works (the users are the
deployment's own: ``mlflow_backup``).

Only the rock's path of the workload CLI becomes this environment's (``charm.MLOPS_WORKLOAD``).
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow.utils import server_info
from ops import testing

import charm
from mlops_charms.mlflow import ADMIN_USERNAME, MLflowAPI
from tests.workload.pebble_backed import PebbleBackedCharm, shared_folder, wait_until
from tests.workload.processes import free_port, missing
from tests.workload.tracking.harness import CLIENT_ENV

pytestmark = [
    pytest.mark.slow,
    # object-storage-charmlib 1.0.0 calls ops' deprecated JujuVersion.from_environ().
    pytest.mark.filterwarnings("ignore:JujuVersion.from_environ:DeprecationWarning"),
]

CHARM_ROOT = Path(__file__).resolve().parents[3] / "charms" / "tracking-k8s"
WORKLOAD_CLI = Path(sys.executable).with_name("mlops-workload")
EXPERIMENT = "fraud-detection"


@dataclasses.dataclass(frozen=True)
class Logged:
    """A run the consumer logged: what it wrote, to compare with what is read back."""

    run_id: str
    params: dict[str, str]
    losses: list[float]
    artifact: bytes


@dataclasses.dataclass
class Deployment:
    """One deployment of the charm on the unit's Pebble, and its consumer's credentials."""

    unit: PebbleBackedCharm
    state: testing.State
    consumer: testing.Relation
    username: str = ""
    password: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.state.config['port']}"

    @property
    def admin_password(self) -> str:
        (secret,) = [s for s in self.state.secrets if s.label == "mlflow-server"]
        return (secret.latest_content or secret.tracked_content)["admin-password"]

    def admin(self) -> MLflowAPI:
        return MLflowAPI(self.url, ADMIN_USERNAME, self.admin_password)

    def hook(self, event) -> None:
        self.state = self.unit.run(event, self.state)

    def action(self, name: str, **params) -> dict:
        results, self.state = self.unit.run_action(name, self.state, **params)
        assert not isinstance(results, testing.ActionFailed), f"{name}: {results.message}"
        return dict(results)  # a copy: the context's results change with the next action

    def serving(self) -> None:
        """Wait for MLflow to answer, then let a hook provision the consumer."""
        wait_until(self.admin().is_healthy, 120, "MLflow to answer")
        relation = self.state.get_relation(self.consumer.id)
        self.hook(self.unit.context.on.relation_changed(relation, remote_unit=0))
        databag = self.state.get_relation(self.consumer.id).local_app_data
        secret_id = json.loads(databag["credentials_secret_id"])
        (secret,) = [s for s in self.state.secrets if s.id == secret_id]
        content = secret.latest_content or secret.tracked_content
        self.username, self.password = content["username"], content["password"]

    def client(self, patch: pytest.MonkeyPatch) -> mlflow.MlflowClient:
        """The consumer's client, new as in a new process (no cached server info)."""
        server_info._SERVER_INFO_CACHE.clear()
        patch.setenv("MLFLOW_TRACKING_USERNAME", self.username)
        patch.setenv("MLFLOW_TRACKING_PASSWORD", self.password)
        return mlflow.MlflowClient(tracking_uri=self.url)


def deploy(unit: PebbleBackedCharm) -> Deployment:
    """A new leader unit with its consumer related; MLflow serving."""
    consumer = testing.Relation(
        "mlops-tracking",
        remote_app_name="trainer",
        remote_app_data={"experiment": json.dumps(EXPERIMENT)},
    )
    state = testing.State(
        leader=True,
        config={"port": free_port(), "metrics-port": free_port()},
        containers={unit.container_state(charm.CONTAINER)},
        storages=unit.storages(),
        relations={consumer},
        model=testing.Model(name="mlops"),
    )
    deployment = Deployment(unit, state, consumer)
    deployment.hook(unit.context.on.config_changed())
    deployment.serving()
    return deployment


def log_runs(deployment: Deployment, scratch: Path) -> list[Logged]:
    logged = []
    with pytest.MonkeyPatch.context() as patch:
        client = deployment.client(patch)
        experiment = client.get_experiment_by_name(EXPERIMENT)
        assert experiment is not None
        for index in range(2):
            run = client.create_run(experiment.experiment_id, run_name=f"run-{index}")
            run_id = run.info.run_id
            params = {"learning_rate": f"0.0{index + 1}", "model": "logreg"}
            for key, value in params.items():
                client.log_param(run_id, key, value)
            losses = [round(1.0 / (step + 2 + index), 4) for step in range(3)]
            for step, loss in enumerate(losses):
                client.log_metric(run_id, "loss", loss, step=step)
            artifact = secrets.token_bytes(64 * 1024)  # incompressible, binary
            folder = scratch / run_id
            folder.mkdir()
            (folder / "weights.bin").write_bytes(artifact)
            client.log_artifact(run_id, str(folder / "weights.bin"), "model")
            client.set_terminated(run_id)
            logged.append(Logged(run_id, params, losses, artifact))
    return logged


def destroy_but_the_backups(unit: PebbleBackedCharm, base: Path) -> None:
    """The workload's state is gone: processes, plan, every file of the storage but backups."""
    unit.stop()
    storage = unit.storage[charm.STORAGE]
    kept = base / "kept-backups"
    shutil.move(storage / "backups", kept)
    shutil.rmtree(storage)
    storage.mkdir()
    storage.chmod(0o755)
    shutil.move(kept, storage / "backups")
    unit.start()


@pytest.fixture(scope="module")
def restored(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Deployment, list[Logged], dict, dict]]:
    if not WORKLOAD_CLI.exists():
        missing(f"{WORKLOAD_CLI} is missing: requirements/workload-tracking.txt installs it")
    scratch = tmp_path_factory.mktemp("runs")
    with shared_folder("trk-bk-") as base, pytest.MonkeyPatch.context() as patch:
        for name, value in CLIENT_ENV.items():
            patch.setenv(name, value)
        patch.setattr(charm, "MLOPS_WORKLOAD", str(WORKLOAD_CLI))
        unit = PebbleBackedCharm(charm.TrackingCharm, CHARM_ROOT, base)
        unit.start()
        try:
            old = deploy(unit)
            logged = log_runs(old, scratch)
            backed_up = old.action("create-backup")
            destroy_but_the_backups(unit, base)
            fresh = deploy(unit)
            assert fresh.admin_password != old.admin_password, "not a new deployment"
            assert fresh.password != old.password, "not a new deployment"
            with pytest.MonkeyPatch.context() as inner:
                client = fresh.client(inner)
                experiment = client.get_experiment_by_name(EXPERIMENT)
                assert experiment is not None
                assert client.search_runs([experiment.experiment_id]) == [], "not fresh"
            listed = fresh.action("list-backups")
            assert backed_up["backup-id"] in listed["backups"]
            result = fresh.action("restore", **{"backup-id": backed_up["backup-id"]})
            fresh.serving()
            yield fresh, logged, backed_up, result
        finally:
            unit.stop()


def test_create_backup_holds_the_store_and_the_artifacts(restored):
    _fresh, _logged, backed_up, _result = restored
    assert backed_up["state"] == "succeeded", backed_up
    assert backed_up["members"] == "mlflow.db, artifacts"
    assert int(backed_up["files"]) >= 3 and int(backed_up["bytes"]) > 2 * 64 * 1024
    assert backed_up["destination"].endswith("/backups")


def test_the_consumer_reads_every_run_metric_and_artifact_back(restored, tmp_path):
    fresh, logged, _backed_up, result = restored
    assert result["state"] == "succeeded", result
    assert result["restored"] == "mlflow.db, artifacts"
    assert fresh.state.unit_status.name == "active", fresh.state.unit_status
    with pytest.MonkeyPatch.context() as patch:
        client = fresh.client(patch)
        for run in logged:
            fetched = client.get_run(run.run_id)
            assert fetched.data.params == run.params
            history = client.get_metric_history(run.run_id, "loss")
            assert [m.value for m in sorted(history, key=lambda m: m.step)] == run.losses
            path = client.download_artifacts(run.run_id, "model/weights.bin", str(tmp_path))
            assert Path(path).read_bytes() == run.artifact


def test_the_new_deployments_users_and_secrets_still_work(restored):
    fresh, _logged, _backed_up, _result = restored
    admin = fresh.admin()
    assert admin.get_user(fresh.username) is not None  # the consumer, this deployment's
    assert admin.get_experiment(EXPERIMENT) is not None
