"""What tracking-k8s's unit tests share: an in-memory MLflow server and relation builders.

The relation data have the shapes the real providers write (see tests/lib/test_postgresql.py
and tests/lib/test_s3.py for where they were captured): postgresql-k8s 16 answering in the v0
contract, s3-integrator 2/ with its keys in a Juju secret, and traefik-k8s's ingress v2.
"""

from __future__ import annotations

import itertools
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from ops import testing

from mlops_charms.rest import RESTError

MODEL = "mlops"
APP = "tracking-k8s"
DATA_DIR = "/var/lib/mlflow"
SECRETS_ENV = f"{DATA_DIR}/secrets/secrets.env"
AUTH_CONFIG = f"{DATA_DIR}/secrets/basic_auth.ini"
SERVICE_HOST = f"{APP}.{MODEL}.svc.cluster.local"
INTERNAL_URL = f"http://{SERVICE_HOST}:5000"

ADMIN_PASSWORD = "admin-Pa55word-from-the-secret"
FLASK_SECRET_KEY = "flask-secret-key-from-the-secret-0123456789abcdef"
DB_HOST = "postgresql-k8s-primary.mlops.svc.cluster.local"
DB_USERNAME = "relation_id_7"
DB_PASSWORD = "db-Pa55word-from-postgresql"
S3_ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
S3_SECRET_KEY = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"
S3_ENDPOINT = "http://rgw.ceph.svc.cluster.local:7480"
INGRESS_HOST = "mlops.example.com"
INGRESS_URL = f"http://{INGRESS_HOST}/mlops-tracking-k8s"


# --- secrets and relations, as their owners write them -------------------------------------


def server_secret(**content: str) -> testing.Secret:
    """The admin secret the leader created in an earlier hook."""
    return testing.Secret(
        {"admin-password": ADMIN_PASSWORD, "flask-secret-key": FLASK_SECRET_KEY, **content},
        label="mlflow-server",
        owner="app",
    )


def database_secret(password: str = DB_PASSWORD) -> testing.Secret:
    """The user secret postgresql-k8s grants to this application."""
    return testing.Secret(
        {
            "username": DB_USERNAME,
            "password": password,
            "uris": f"postgresql://{DB_USERNAME}:{password}@{DB_HOST}:5432/mlflow",
        }
    )


def database_relation(secret: testing.Secret | None = None, **changes: str) -> testing.Relation:
    """The ``database`` relation; with ``secret``, as postgresql-k8s 16 answers it."""
    databag: dict[str, str] = {}
    if secret is not None:
        databag = {
            "data": json.dumps({"database": "mlflow", "version": "v1"}),
            "database": "mlflow",
            "endpoints": f"{DB_HOST}:5432",
            "secret-user": secret.id,
            "version": "16.9",
            **changes,
        }
    return testing.Relation(
        "database",
        interface="postgresql_client",
        remote_app_name="postgresql-k8s",
        remote_app_data={key: value for key, value in databag.items() if value},
    )


def s3_secret() -> testing.Secret:
    """The keys secret s3-integrator 2/ grants to this application."""
    return testing.Secret({"access-key": S3_ACCESS_KEY, "secret-key": S3_SECRET_KEY})


def s3_relation(secret: testing.Secret | None = None, **changes: str) -> testing.Relation:
    """The ``s3-credentials`` relation; with ``secret``, as s3-integrator 2/ answers it."""
    databag: dict[str, str] = {}
    if secret is not None:
        databag = {
            "version": "1",
            "secret-extra": secret.id,
            "bucket": "mlflow-artifacts",
            "path": "/team-a/",
            "endpoint": S3_ENDPOINT,
            "region": "eu-west-1",
            "s3-uri-style": "path",
            **changes,
        }
    return testing.Relation(
        "s3-credentials",
        interface="s3",
        remote_app_name="s3-integrator",
        remote_app_data={key: value for key, value in databag.items() if value},
        remote_units_data={0: {}},
    )


def ingress_relation(
    url: str | None = INGRESS_URL, *, databag: dict[str, str] | None = None
) -> testing.Relation:
    """The ``ingress`` relation as traefik-k8s fills it; ``databag`` replaces its data."""
    if databag is None:
        databag = {"ingress": json.dumps({"url": url})} if url else {}
    return testing.Relation(
        "ingress", interface="ingress", remote_app_name="traefik-k8s", remote_app_data=databag
    )


def consumer_relation(
    app: str = "trainer",
    experiment: str | None = "fraud",
    *,
    databag: dict[str, str] | None = None,
) -> testing.Relation:
    """An ``mlops-tracking`` consumer asking for ``experiment``; ``databag`` replaces its data."""
    if databag is None:
        databag = {"experiment": json.dumps(experiment)} if experiment is not None else {}
    return testing.Relation(
        "mlops-tracking",
        interface="mlops_tracking",
        remote_app_name=app,
        remote_app_data=databag,
    )


def consumer_secret(relation: testing.Relation, *, password: str) -> testing.Secret:
    """The consumer credentials the leader created for ``relation`` in an earlier hook."""
    return testing.Secret(
        {"username": f"relation-{relation.id}-{relation.remote_app_name}", "password": password},
        label=f"mlops-tracking-{relation.id}",
        owner="app",
        remote_grants={relation.id: {relation.remote_app_name}},
    )


# --- reading what the charm did ----------------------------------------------------------


def stored(data_dir: Path, container_path: str) -> Path:
    """Where a file the charm pushed under the storage mount lands on the test's disk."""
    return data_dir / Path(container_path).relative_to(DATA_DIR)


def service_command(state: testing.State) -> str:
    """The mlflow service's command in the container's plan."""
    return state.get_container("mlflow").plan.services["mlflow"].command


def server_args(state: testing.State) -> list[str]:
    """The ``mlflow server ...`` arguments the service's shell command execs."""
    shell, flag, script = shlex.split(service_command(state))
    assert (shell, flag) == ("/bin/sh", "-c")
    _, exec_part = script.split(" && exec ", 1)
    return shlex.split(exec_part)


def option(args: list[str], name: str) -> str:
    """The value that follows ``name`` in ``args``."""
    return args[args.index(name) + 1]


def allowed_hosts(state: testing.State) -> list[str]:
    return option(server_args(state), "--allowed-hosts").split(",")


def environment(state: testing.State) -> dict[str, str]:
    return dict(state.get_container("mlflow").plan.services["mlflow"].environment)


def secret_by_label(state: testing.State, label: str) -> testing.Secret:
    (secret,) = [secret for secret in state.secrets if secret.label == label]
    return secret


# --- the MLflow server, in memory --------------------------------------------------------


@dataclass
class FakeMLflow:
    """An in-memory stand-in for the MLflow server's REST API; records every call."""

    healthy: bool = True
    users: dict[str, dict] = field(default_factory=dict)
    experiments: dict[str, str] = field(default_factory=dict)
    permissions: dict[tuple[str, str], str] = field(default_factory=dict)
    model_versions: dict[tuple[str, str], dict] = field(default_factory=dict)
    aliases: dict[tuple[str, str], str] = field(default_factory=dict)
    calls: list[tuple] = field(default_factory=list)
    clients: list[tuple[str, str, str]] = field(default_factory=list)
    failures: dict[str, RESTError] = field(default_factory=dict)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def client(self, base_url: str, username: str, password: str, timeout: float = 10.0):
        """What the charm gets when it constructs ``MLflowAPI(...)``."""
        self.clients.append((base_url, username, password))
        return FakeMLflowAPI(self)

    def fail(self, method: str, message: str = "boom", status: int = 500) -> None:
        """Make ``method`` raise as a refusing server would."""
        self.failures[method] = RESTError(
            f"MLflow refused the request ({status}): {message}", status=status
        )

    def called(self, method: str) -> list[tuple]:
        return [call[1:] for call in self.calls if call[0] == method]

    def add_model_version(self, name: str, version: str, run_id: str = "run-1") -> None:
        self.model_versions[name, version] = {
            "name": name,
            "version": version,
            "run_id": run_id,
            "source": f"models:/m-{run_id}",
        }


class FakeMLflowAPI:
    """The methods of ``mlflow_server.MLflowAPI`` the charm uses, against a ``FakeMLflow``."""

    def __init__(self, server: FakeMLflow):
        self._server = server

    def _record(self, method: str, *args) -> None:
        self._server.calls.append((method, *args))
        if method in self._server.failures:
            raise self._server.failures[method]

    def is_healthy(self) -> bool:
        self._server.calls.append(("is_healthy",))
        return self._server.healthy

    def get_user(self, username: str) -> dict | None:
        self._record("get_user", username)
        return self._server.users.get(username)

    def create_user(self, username: str, password: str) -> None:
        self._record("create_user", username, password)
        if username in self._server.users:
            raise RESTError(
                "MLflow refused the request (400): user exists", 400, "RESOURCE_ALREADY_EXISTS"
            )
        self._server.users[username] = {"username": username, "password": password}

    def update_password(self, username: str, password: str) -> None:
        self._record("update_password", username, password)
        self._server.users[username]["password"] = password

    def set_admin(self, username: str, is_admin: bool) -> None:
        self._record("set_admin", username, is_admin)
        self._server.users[username]["is_admin"] = is_admin

    def delete_user(self, username: str) -> None:
        self._record("delete_user", username)
        if self._server.users.pop(username, None) is None:
            raise RESTError(
                "MLflow refused the request (404): no such user", 404, "RESOURCE_DOES_NOT_EXIST"
            )

    def ensure_experiment(self, name: str) -> str:
        self._record("ensure_experiment", name)
        if name not in self._server.experiments:
            self._server.experiments[name] = str(next(self._server._ids))
        return self._server.experiments[name]

    def grant_experiment_permission(self, experiment_id: str, username: str, permission: str):
        self._record("grant_experiment_permission", experiment_id, username, permission)
        self._server.permissions[experiment_id, username] = permission

    def get_model_version(self, name: str, version: str) -> dict | None:
        self._record("get_model_version", name, version)
        return self._server.model_versions.get((name, version))

    def set_model_alias(self, name: str, alias: str, version: str) -> None:
        self._record("set_model_alias", name, alias, version)
        self._server.aliases[name, alias] = version
