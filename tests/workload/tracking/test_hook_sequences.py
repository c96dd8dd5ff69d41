"""tracking-k8s through a unit's life: hooks in sequence on a real Pebble, state carried over.

Each step is a hook (or a few) of the real charm, whose ``mlflow`` container is a real Pebble
daemon (see tests/workload/pebble_backed.py): the charm's layer runs the real MLflow server.
After every step the running services, the status and every run logged so far to the current
store are checked: a consumer reads each run's params, metrics and artifact with the real
MLflow client, knowing nothing but the URL the charm published and the secret granted to it
(the cluster's DNS name of the service resolves to this machine). A hook that changes nothing
must leave Pebble without a single change and must not write to MLflow (no user created, no
permission revoked or granted). The stores: the embedded ones (SQLite and artifacts on the
unit's storage); a real PostgreSQL, related as postgresql-k8s writes the relation; a real S3
server for artifacts (``rclone serve s3`` over a folder, related as s3-integrator writes it);
the moves between them and back. The approach switch: each revision acknowledged once MLflow
answers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
import sqlalchemy
from alembic import command as alembic_command
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from mlflow.exceptions import MlflowException
from mlflow.store.db.utils import _get_alembic_config
from mlflow.utils import server_info
from ops import testing

import charm
import mlflow_server
from mlops_charms import mlflow_schema, tracking_server
from mlops_charms.approach import APPROACH_ENDPOINT
from mlops_charms.mlflow import MLflowAPI
from tests import previous_release, provider_data
from tests.provider_data import postgresql_k8s_relation
from tests.workload.pebble_backed import PebbleBackedCharm, shared_folder, wait_until
from tests.workload.processes import PostgreSQLServer, free_port, missing
from tests.workload.s3_server import S3Server, run_s3_server
from tests.workload.tracking.harness import CLIENT_ENV

pytestmark = [
    pytest.mark.slow,
    # object-storage-charmlib 1.0.0 calls ops' deprecated JujuVersion.from_environ().
    pytest.mark.filterwarnings("ignore:JujuVersion.from_environ:DeprecationWarning"),
]

REPO = Path(__file__).resolve().parents[3]
CHARM_ROOT = REPO / "charms" / "tracking-k8s"
MODEL = "mlops"
APP = "tracking-k8s"
SERVICES = {mlflow_server.SERVICE, mlflow_server.METRICS_SERVICE}
CONSUMER_EXPERIMENT = "fraud-detection"
SCALE_OUT = "scale-out needs the database relation: SQLite is per unit"
# While MLflow starts, a hook may find it answering already (a warm start takes ~5 s).
STARTING = (testing.WaitingStatus, testing.ActiveStatus)
READING = "GET"  # MLflow calls that change nothing; any other method writes


@dataclasses.dataclass(frozen=True)
class Consumer:
    """What a consumer knows: the published URL and experiment, its secret's credentials."""

    tracking_uri: str
    experiment: str
    username: str
    password: str


@dataclasses.dataclass(frozen=True)
class LoggedRun:
    """A run a consumer logged, and the stores it went to."""

    run_id: str
    params: dict[str, str]
    metrics: dict[str, float]
    artifact_name: str
    artifact: bytes
    backend: str  # "sqlite" or "postgresql": where its metadata lives
    artifacts: str  # "unit" or "s3": where its artifact was written


@pytest.fixture(scope="module")
def external_s3() -> Iterator[S3Server]:
    # MLflow's S3 artifact repository needs boto3 (the rock has it too).
    if importlib.util.find_spec("boto3") is None:
        missing("boto3 is not installed: MLflow's S3 artifacts need it (see requirements/)")
    with shared_folder("tracking-s3-") as root, run_s3_server(root) as server:
        yield server


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def cluster_dns() -> Iterator[None]:
    """The service's in-cluster name resolves to this machine, where its pod's port is."""
    real = socket.getaddrinfo
    suffix = f".{MODEL}.svc.cluster.local"

    def getaddrinfo(host, *args, **kwargs):
        if isinstance(host, str) and host.endswith(suffix):
            host = "127.0.0.1"
        return real(host, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket, "getaddrinfo", getaddrinfo)
        for name, value in CLIENT_ENV.items():
            patch.setenv(name, value)
        yield


_HEAD_REVISION = ScriptDirectory.from_config(_get_alembic_config("sqlite://")).get_current_head()


def _schema_revision(uri: str) -> str | None:
    """The alembic revision a tracking store is at."""
    engine = sqlalchemy.create_engine(uri)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def tracking_unit(base: Path) -> PebbleBackedCharm:
    """The tracking charm with its container on a real Pebble under ``base``."""
    unit = PebbleBackedCharm(charm.TrackingCharm, CHARM_ROOT, base)
    unit.start()
    return unit


def print_service_logs(unit: PebbleBackedCharm, lines: int = 150) -> None:
    """The last lines the unit's services wrote, from Pebble's log buffer."""
    container = unit.containers[charm.CONTAINER]
    if container.daemon is None:
        return
    binary = os.environ.get("PEBBLE_BIN") or shutil.which("pebble") or "pebble"
    logs = subprocess.run(
        [binary, "logs", "-n", str(lines)],
        env={**os.environ, "PEBBLE": str(container.base / "pebble")},
        capture_output=True,
        text=True,
        check=False,
    )
    print(f"--- the last {lines} lines of {container.name}'s services ---\n{logs.stdout}")


class Life:
    """Drives the tracking charm's hooks and checks what must hold after each of them."""

    def __init__(self, unit: PebbleBackedCharm, state: testing.State, tmp_path: Path):
        self.unit = unit
        self.state = state
        self.tmp_path = tmp_path
        self.container = unit.containers[charm.CONTAINER]
        self.port = int(state.config["port"])
        self.runs: list[LoggedRun] = []
        self.backend, self.artifacts = "sqlite", "unit"
        self.s3: S3Server | None = None
        self.trainer: Consumer | None = None  # the consumer related at deploy
        self.mlflow_calls: list[tuple[str, str]] = []
        self.checks = 0

    @property
    def ctx(self) -> testing.Context:
        return self.unit.context

    @property
    def data_dir(self) -> Path:
        return self.unit.storage[charm.STORAGE]

    # --- hooks ------------------------------------------------------------------------------

    def deploy(self) -> None:
        """A new unit's hooks in Juju's order; MLflow starts once storage and secret are there."""
        container = self.state.get_container(charm.CONTAINER)
        (storage,) = self.state.storages
        self.hook(self.ctx.on.install())
        assert not self.container.running(), "install started a service"
        self.hook(self.ctx.on.storage_attached(storage))
        self.check("storage-attached", None, status=STARTING)
        for event, step in (
            (self.ctx.on.leader_elected(), "leader-elected"),
            (self.ctx.on.config_changed(), "config-changed"),
            (self.ctx.on.start(), "start"),
            (self.ctx.on.pebble_ready(container), "pebble-ready"),
        ):
            self.quiet(event, step)
            self.check(step, None, status=STARTING)
        self.deliver_ready(None, "first start")
        self.check("deployed", None)

    def hook(self, event, state: testing.State | None = None) -> testing.State:
        """One hook; the MLflow API calls the charm makes in it are kept in ``mlflow_calls``."""
        calls: list[tuple[str, str]] = []
        # The hook's own client: a previous release's while it runs (tests/previous_release.py).
        api_class = sys.modules[MLflowAPI.__module__].MLflowAPI
        original = api_class._call

        def spy(api, method, path, body):
            calls.append((method, path))
            return original(api, method, path, body)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(api_class, "_call", spy)
            self.state = self.unit.run(event, self.state if state is None else state)
        self.mlflow_calls = calls
        return self.state

    def mlflow_writes(self) -> list[tuple[str, str]]:
        """The calls of the last hook that change something in MLflow."""
        return [call for call in self.mlflow_calls if call[0] != READING]

    def quiet(self, event, step: str, state: testing.State | None = None) -> None:
        """A hook that must change nothing: no Pebble change, no write to MLflow."""
        before = self.container.last_change_id()
        self.hook(event, state)
        changes = self.container.changes_since(before)
        assert not changes, f"{step}: changed the workload: {[c.kind for c in changes]}"
        assert not self.mlflow_writes(), f"{step}: wrote to MLflow: {self.mlflow_writes()}"

    def ready_marker(self) -> tuple[int, int] | None:
        """The newest ready notice (id, occurrences): it changes each time MLflow answers."""
        notices = self.container.custom_notices(mlflow_server.READY_NOTICE)
        return max(((int(n.id), n.occurrences) for n in notices), default=None)

    def deliver_ready(self, marker: tuple[int, int] | None, step: str) -> None:
        """Wait for MLflow's ready notice after ``marker``, then run its hook."""
        wait_until(
            lambda: self.ready_marker() not in (None, marker), 120, f"{step}: the ready notice"
        )
        event, state = self.unit.notice_event(
            self.state, charm.CONTAINER, mlflow_server.READY_NOTICE
        )
        before = self.container.last_change_id()
        self.hook(event, state)
        assert not self.container.changes_since(before), f"{step}: the notice changed Pebble"

    def restarting(self, event, step: str, state: testing.State | None = None) -> None:
        """A hook that restarts MLflow on other stores; then its ready notice's hook."""
        marker = self.ready_marker()
        before = self.container.last_change_id()
        self.hook(event, state)
        assert self.container.changes_since(before), f"{step}: MLflow was not restarted"
        status = self.state.unit_status
        assert status == testing.WaitingStatus("waiting for MLflow to become ready"), status
        self.deliver_ready(marker, step)

    def add_relation(self, relation: testing.Relation, *secrets_: testing.Secret) -> None:
        """relation-created: the relation exists, the remote application has said nothing yet."""
        empty = dataclasses.replace(relation, remote_app_data={})
        state = dataclasses.replace(
            self.state,
            relations={*self.state.relations, empty},
            secrets={*self.state.secrets, *secrets_},
        )
        self.quiet(self.ctx.on.relation_created(empty), f"{relation.endpoint} created", state)

    def remote_answers(self, relation: testing.Relation, step: str) -> None:
        """The remote application writes its databag: relation-changed restarts MLflow."""
        current = self.state.get_relation(relation.id)
        answered = dataclasses.replace(current, remote_app_data=relation.remote_app_data)
        state = dataclasses.replace(
            self.state, relations={*(self.state.relations - {current}), answered}
        )
        self.restarting(self.ctx.on.relation_changed(answered, remote_unit=0), step, state)

    def remove_relation(self, relation_id: int, step: str) -> None:
        """relation-broken, then the relation is gone from the model, as Juju does it."""
        relation = self.state.get_relation(relation_id)
        marker = self.ready_marker()
        before = self.container.last_change_id()
        self.hook(self.ctx.on.relation_broken(relation))
        self.state = dataclasses.replace(self.state, relations=self.state.relations - {relation})
        assert self.container.changes_since(before), f"{step}: MLflow was not restarted"
        status = self.state.unit_status
        assert status == testing.WaitingStatus("waiting for MLflow to become ready"), status
        self.deliver_ready(marker, step)

    # --- the consumer -----------------------------------------------------------------------

    def consumer(self, relation: testing.Relation) -> Consumer:
        """What the charm published to the consumer: its databag and the secret granted to it."""
        databag = self.state.get_relation(relation.id).local_app_data
        published = {key: json.loads(value) for key, value in databag.items()}
        (secret,) = [s for s in self.state.secrets if s.id == published["credentials_secret_id"]]
        assert secret.remote_grants.get(relation.id) == {relation.remote_app_name}
        content = secret.latest_content or secret.tracked_content
        return Consumer(
            tracking_uri=published["tracking_uri"],
            experiment=published["default_experiment"],
            username=content["username"],
            password=content["password"],
        )

    @contextlib.contextmanager
    def client(self, consumer: Consumer) -> Iterator[mlflow.MlflowClient]:
        """The consumer's client, new as in a new process.

        MLflow's client keeps what a server said it can do for 60 s (server_info.py): one
        that asked while artifacts were in S3 goes on asking for presigned S3 downloads, which
        the server refuses (501) once artifacts are on its storage again.
        """
        server_info._SERVER_INFO_CACHE.clear()  # a new process has none
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("MLFLOW_TRACKING_USERNAME", consumer.username)
            patch.setenv("MLFLOW_TRACKING_PASSWORD", consumer.password)
            yield mlflow.MlflowClient(tracking_uri=consumer.tracking_uri)

    def log_run(self, consumer: Consumer, name: str) -> LoggedRun:
        """Log a run with a param, a metric and an artifact, as the consumer."""
        with self.client(consumer) as client:
            experiment = client.get_experiment_by_name(consumer.experiment)
            assert experiment is not None, f"{name}: the consumer's experiment is missing"
            run_id = client.create_run(experiment.experiment_id, run_name=name).info.run_id
            params = {"store": f"{self.backend}+{self.artifacts}", "name": name}
            metrics = {"accuracy": round(0.5 + len(self.runs) / 100, 2)}
            for key, value in params.items():
                client.log_param(run_id, key, value)
            for key, value in metrics.items():
                client.log_metric(run_id, key, value)
            artifact = self.tmp_path / f"{name}.json"
            artifact.write_text(json.dumps({"run": name, "noise": secrets.token_hex(8)}))
            client.log_artifact(run_id, str(artifact))
            client.set_terminated(run_id)
        run = LoggedRun(
            run_id,
            params,
            metrics,
            artifact.name,
            artifact.read_bytes(),
            self.backend,
            self.artifacts,
        )
        self.runs.append(run)
        return run

    def stored_artifact(self, run: LoggedRun) -> Path:
        """Where the run's artifact lies: on the unit's storage or in the S3 folder."""
        if run.artifacts == "unit":
            root = self.data_dir / "artifacts"
        else:
            assert self.s3 is not None
            root = self.s3.root / "team-bucket" / "tracking"
        (found,) = [p for p in root.rglob(run.artifact_name) if run.run_id in p.parts]
        return found

    # --- what must hold ---------------------------------------------------------------------

    def check(
        self,
        step: str,
        consumer: Consumer | None,
        *,
        status: type | tuple[type, ...] = testing.ActiveStatus,
    ):
        """Services, status, and every run of the current store readable by the consumer."""
        self.checks += 1
        assert self.container.running() == SERVICES, f"{step}: {self.container.running()}"
        unit_status = self.state.unit_status
        assert isinstance(unit_status, status), f"{step}: {unit_status}"
        if isinstance(unit_status, testing.ActiveStatus):
            assert unit_status.message == f"serving at {self.url}", f"{step}: {unit_status}"
        if consumer is None:
            return
        with self.client(consumer) as client:
            for run in self.runs:
                if run.backend != self.backend:
                    # Nothing is migrated: the other store's runs are not served (README).
                    # MLflow's auth answers 403 for a run it cannot find.
                    refused = "RESOURCE_DOES_NOT_EXIST|Permission denied"
                    with pytest.raises(MlflowException, match=refused):
                        client.get_run(run.run_id)
                    continue
                fetched = client.get_run(run.run_id).data
                assert fetched.params == run.params, f"{step}: {run.params['name']}"
                assert fetched.metrics == run.metrics, f"{step}: {run.params['name']}"
                if run.artifacts == self.artifacts:
                    down = self.tmp_path / f"check-{self.checks}" / run.run_id
                    path = client.download_artifacts(run.run_id, run.artifact_name, str(down))
                    assert Path(path).read_bytes() == run.artifact, f"{step}: artifact differs"
                else:
                    # Served from the other destination no more, but not deleted (README).
                    assert self.stored_artifact(run).read_bytes() == run.artifact

    @property
    def url(self) -> str:
        return f"http://{APP}.{MODEL}.svc.cluster.local:{self.port}"


def first_state(
    unit: PebbleBackedCharm,
    *,
    leader: bool = True,
    planned_units: int = 1,
    secrets_: frozenset[testing.Secret] = frozenset(),
) -> testing.State:
    """A unit before its first hook: ports of its own (its pod's, here on one loopback)."""
    return testing.State(
        leader=leader,
        planned_units=planned_units,
        config={"port": free_port(), "metrics-port": free_port()},
        containers={unit.container_state(charm.CONTAINER)},
        storages=unit.storages(),
        model=testing.Model(name=MODEL),
        secrets=secrets_,
    )


@pytest.fixture(scope="module")
def life(cluster_dns: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Life]:
    """A leader deployed on its embedded stores, with a consumer that logged a first run.

    Shared by the module's tests, in order, as a unit's life: each leaves it serving.
    """
    with shared_folder("tracking-hooks-") as base:
        unit = tracking_unit(base)
        try:
            deployed = Life(unit, first_state(unit), tmp_path_factory.mktemp("life"))
            deployed.deploy()
            deployed.trainer = relate_consumer(deployed)
            deployed.log_run(deployed.trainer, "sqlite-first")
            deployed.check("consumer related", deployed.trainer)
            yield deployed
        finally:
            print_service_logs(unit)  # shown with a failure: what MLflow said
            unit.stop()


def relate_consumer(life: Life) -> Consumer:
    """A training application relates on mlops-tracking, asking for its own experiment."""
    relation = testing.Relation(
        tracking_server.TRACKING_ENDPOINT,
        interface="mlops_tracking",
        remote_app_name="trainer",
        remote_app_data={"experiment": json.dumps(CONSUMER_EXPERIMENT)},
        remote_units_data={0: {}},
    )
    state = dataclasses.replace(life.state, relations={*life.state.relations, relation})
    life.quiet(life.ctx.on.relation_created(relation), "consumer relation-created", state)
    before = life.container.last_change_id()
    relation = life.state.get_relation(relation.id)
    life.hook(life.ctx.on.relation_joined(relation, remote_unit=0))
    assert not life.container.changes_since(before), "provisioning changed Pebble"
    writes = life.mlflow_writes()
    assert ("POST", "/api/2.0/mlflow/users/create") in writes, writes
    assert ("POST", "/api/3.0/mlflow/users/permissions/grant") in writes, writes
    # The same data again: the user, the experiment and the grant are all there already.
    relation = life.state.get_relation(relation.id)
    life.quiet(life.ctx.on.relation_changed(relation, remote_unit=0), "consumer relation-changed")
    published = life.state.get_relation(relation.id)
    assert isinstance(published, testing.Relation)
    consumer = life.consumer(published)
    assert consumer.tracking_uri == life.url
    assert consumer.experiment == CONSUMER_EXPERIMENT
    assert consumer.username == f"relation-{relation.id}-trainer"
    return consumer


def test_a_second_unit_without_a_database_does_not_serve(life: Life):
    # The application is scaled to two: the leader keeps serving and says what is missing.
    two = dataclasses.replace(life.state, planned_units=2)
    life.quiet(life.ctx.on.update_status(), "leader, two planned", two)
    assert life.state.unit_status == testing.BlockedStatus(SCALE_OUT)
    life.check("leader of two", life.trainer, status=testing.BlockedStatus)

    (server_secret,) = [s for s in life.state.secrets if s.label == tracking_server.SERVER_SECRET]
    with shared_folder("tracking-second-") as base:
        unit = tracking_unit(base)
        try:
            state = first_state(
                unit, leader=False, planned_units=2, secrets_=frozenset({server_secret})
            )
            second = Life(unit, state, life.tmp_path / "second")
            container = state.get_container(charm.CONTAINER)
            (storage,) = state.storages
            for event, step in (
                (second.ctx.on.install(), "install"),
                (second.ctx.on.storage_attached(storage), "storage-attached"),
                (second.ctx.on.config_changed(), "config-changed"),
                (second.ctx.on.start(), "start"),
                (second.ctx.on.pebble_ready(container), "pebble-ready"),
                (second.ctx.on.update_status(), "update-status"),
            ):
                second.quiet(event, f"second unit {step}")
                assert not second.container.running(), f"{step}: the second unit serves"
                assert second.state.unit_status == testing.BlockedStatus(SCALE_OUT), step
                assert not second.mlflow_calls, f"{step}: {second.mlflow_calls}"
            assert not _accepts(second.port), "something listens on the second unit's port"
        finally:
            unit.stop()
    life.quiet(life.ctx.on.update_status(), "leader, after the second unit's hooks")
    life.check("leader still serving", life.trainer, status=testing.BlockedStatus)
    # Back to one unit: the leader is Active again, nothing changed in its workload.
    one = dataclasses.replace(life.state, planned_units=1)
    life.quiet(life.ctx.on.update_status(), "leader, one planned", one)
    life.check("one unit again", life.trainer)


def test_tracking_through_its_life(
    life: Life,
    postgresql_server: PostgreSQLServer,
    external_s3: S3Server,
):
    ctx, consumer = life.ctx, life.trainer
    assert consumer is not None
    # Periodic and repeated hooks change nothing: no Pebble change, no grant re-made (M1).
    for _ in range(3):
        life.quiet(ctx.on.update_status(), "update-status")
    life.quiet(ctx.on.config_changed(), "config-changed, same config")
    life.check("no-op hooks", consumer)

    # The pod is rescheduled: Pebble's plan and MLflow are gone, the storage stays.
    life.unit.restart_container(charm.CONTAINER)
    assert not life.container.running()
    life.restarting(ctx.on.pebble_ready(life.state.get_container(charm.CONTAINER)), "restart")
    assert not life.mlflow_writes(), "the consumer was provisioned again on the same store"
    life.check("container restarted", consumer)

    life.quiet(ctx.on.upgrade_charm(), "upgrade-charm")
    life.log_run(consumer, "sqlite-after-upgrade")
    life.check("upgrade-charm", consumer)

    # A newer image: the pod restarts on a store one schema revision behind its MLflow, as
    # the previous MLflow left it (MLflow's own migration, taken back). The leader migrates it
    # before MLflow serves; every run stays readable.
    life.unit.restart_container(charm.CONTAINER)
    store = f"sqlite:///{life.data_dir}/mlflow.db"
    alembic_command.downgrade(_get_alembic_config(store), "-1")
    assert _schema_revision(store) != _HEAD_REVISION
    life.restarting(ctx.on.upgrade_charm(), "upgrade-charm, a newer image")
    assert _schema_revision(store) == _HEAD_REVISION
    assert not Path(mlflow_schema.failure_path(str(life.data_dir))).exists()
    life.quiet(ctx.on.pebble_ready(life.state.get_container(charm.CONTAINER)), "pebble-ready")
    life.check("a newer image, the store migrated", consumer)

    # PostgreSQL: runs and users move to a new, empty store; the consumer's user is remade.
    password = "pg-Life-secret:with-colon"
    postgresql_server.psql(f"CREATE ROLE tracking_life LOGIN PASSWORD '{password}'")
    postgresql_server.psql("CREATE DATABASE tracking_life OWNER tracking_life")
    database, user_secret = postgresql_k8s_relation(
        host=postgresql_server.host,
        port=postgresql_server.port,
        database="tracking_life",
        username="tracking_life",
        password=password,
    )
    life.add_relation(database, user_secret)
    assert life.state.unit_status == testing.WaitingStatus("waiting for database credentials")
    life.check("database related, no answer yet", consumer, status=testing.WaitingStatus)
    life.backend = "postgresql"
    life.remote_answers(database, "database answered")
    writes = life.mlflow_writes()
    assert ("POST", "/api/2.0/mlflow/users/create") in writes, writes
    command = life.container.client.get_plan().services[mlflow_server.SERVICE].command
    assert "postgresql+psycopg2://tracking_life@127.0.0.1:" in command
    assert password not in command
    life.check("on PostgreSQL", consumer)
    on_postgresql = life.log_run(consumer, "postgresql-first")
    count = f"SELECT count(*) FROM runs WHERE run_uuid = '{on_postgresql.run_id}'"
    assert postgresql_server.psql(count, "tracking_life") == "1"
    for _ in range(2):
        life.quiet(ctx.on.update_status(), "update-status on PostgreSQL")
    life.check("PostgreSQL, no-op hooks", consumer)

    # External S3 for artifacts: new artifacts go to the bucket, still proxied by MLflow.
    life.s3 = external_s3
    s3, keys = external_s3.relation(path="/tracking/")
    life.add_relation(s3, keys)
    life.check("S3 related, no answer yet", consumer, status=testing.WaitingStatus)
    life.artifacts = "s3"
    life.remote_answers(s3, "S3 answered")
    assert not life.mlflow_writes(), "the consumer was provisioned again on the same store"
    life.check("S3 for artifacts", consumer)
    in_s3 = life.log_run(consumer, "postgresql-s3")
    assert life.stored_artifact(in_s3).read_bytes() == in_s3.artifact
    life.quiet(ctx.on.update_status(), "update-status on S3")
    life.check("S3, no-op hooks", consumer)

    # The relations go, S3 first: back to the unit's artifacts, then to SQLite.
    life.artifacts = "unit"
    life.remove_relation(s3.id, "S3 removed")
    life.check("S3 removed", consumer)
    life.backend = "sqlite"
    life.remove_relation(database.id, "database removed")
    assert not life.mlflow_writes(), "the consumer's SQLite user was provisioned again"
    life.check("back on the embedded stores", consumer)
    life.log_run(consumer, "sqlite-again")
    life.quiet(ctx.on.update_status(), "update-status, embedded again")
    life.check("embedded again, no-op hooks", consumer)
    # Nothing was deleted from PostgreSQL: relating it again would serve those runs.
    logged = ", ".join(f"'{run.run_id}'" for run in life.runs if run.backend == "postgresql")
    kept = f"SELECT count(*) FROM runs WHERE run_uuid IN ({logged})"
    assert postgresql_server.psql(kept, "tracking_life") == "2"
    assert life.unit.hooks_run > 30


def test_the_approach_is_acknowledged_once_mlflow_answers(life: Life):
    ctx = life.ctx

    def published(relation: testing.Relation, mode: str, revision: int) -> testing.State:
        """The state in which the switch has published ``mode`` at ``revision``."""
        current = life.state.get_relation(relation.id)
        answered = dataclasses.replace(
            current, remote_app_data=provider_data.approach_databag(mode, revision)
        )
        return dataclasses.replace(
            life.state, relations={*(life.state.relations - {current}), answered}
        )

    def acknowledged() -> dict:
        databag = life.state.get_relation(relation.id).local_app_data
        return {key: json.loads(value) for key, value in databag.items()}

    relation = testing.Relation(
        APPROACH_ENDPOINT, interface="mlops_approach", remote_app_name="mlops-approach"
    )
    life.add_relation(relation)
    assert acknowledged() == {}
    # MLflow answers: the revision is acknowledged at once; nothing changes on the server.
    state = published(relation, "model-centric", 1)
    life.quiet(ctx.on.relation_changed(state.get_relation(relation.id)), "approach rev 1", state)
    assert acknowledged() == {"service": "tracking", "applied_revision": 1}
    life.check("approach applied", life.trainer)

    # The pod is rescheduled and revision 2 comes before MLflow answers again.
    life.unit.restart_container(charm.CONTAINER)
    marker = life.ready_marker()
    state = published(relation, "data-centric", 2)
    life.hook(ctx.on.relation_changed(state.get_relation(relation.id)), state)
    status = life.state.unit_status
    assert status == testing.WaitingStatus("waiting for MLflow to become ready"), status
    assert acknowledged() == {
        "service": "tracking",
        "applied_revision": 1,
        "reason": "waiting for MLflow",
        "waiting": True,
    }
    life.deliver_ready(marker, "MLflow answers after the restart")
    assert acknowledged() == {"service": "tracking", "applied_revision": 2}
    life.check("approach rev 2 applied", life.trainer)

    # The relation goes: nothing changes on the server.
    life.quiet(ctx.on.relation_broken(life.state.get_relation(relation.id)), "approach removed")
    life.state = dataclasses.replace(
        life.state, relations=life.state.relations - {life.state.get_relation(relation.id)}
    )
    life.check("approach removed", life.trainer)


def test_an_upgrade_from_the_previous_release_keeps_runs_users_and_secrets(
    cluster_dns: None, tmp_path: Path
):
    """A refresh from the previous release: runs, the consumer's user and every secret stay."""
    release = previous_release.released_charm("tracking-k8s")
    with shared_folder("tracking-upgrade-") as base:
        previous = PebbleBackedCharm(release.charm_class, release.root, base)
        previous.start()
        try:
            with release.active():
                life = Life(previous, first_state(previous), tmp_path)
                life.deploy()
                consumer = relate_consumer(life)
                life.log_run(consumer, "previous-release")
                life.check("previous release", consumer)
                secrets_before = {s.id: s.tracked_content for s in life.state.secrets}
                life.hook(life.ctx.on.stop())  # the old pod goes

            # The pod comes back with the new charm: Pebble's plan is gone, the storage stays.
            life.unit = previous.refreshed(charm.TrackingCharm, CHARM_ROOT)
            life.unit.restart_container(charm.CONTAINER)
            life.restarting(life.ctx.on.upgrade_charm(), "upgrade-charm")
            assert not life.mlflow_writes(), "the upgrade provisioned the consumer again"
            container = life.state.get_container(charm.CONTAINER)
            for event, step in (
                (life.ctx.on.config_changed(), "config-changed"),
                (life.ctx.on.start(), "start"),
                (life.ctx.on.pebble_ready(container), "pebble-ready"),
                (life.ctx.on.update_status(), "update-status"),
            ):
                life.quiet(event, f"after the upgrade: {step}")
            life.check("upgraded", consumer)
            for secret in life.state.secrets:
                if secret.id in secrets_before:
                    assert secret.tracked_content == secrets_before[secret.id], secret.label
            assert life.consumer(_consumer_relation(life)) == consumer
            life.log_run(consumer, "after-upgrade")
            life.check("a run logged after the upgrade", consumer)
            # What the release did not have works on the state it left: a backup.
            results, life.state = life.unit.run_action("list-backups", life.state)
            assert not isinstance(results, Exception), results
        finally:
            print_service_logs(previous)
            previous.stop()


def _consumer_relation(life: Life) -> testing.Relation:
    (relation,) = [
        r for r in life.state.relations if r.endpoint == tracking_server.TRACKING_ENDPOINT
    ]
    assert isinstance(relation, testing.Relation)
    return relation
