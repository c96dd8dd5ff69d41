"""What tracking-k8s's unit tests share: an in-memory MLflow server and relation builders.

The relation data have the shapes the real providers write (see tests/lib/test_postgresql.py
and tests/lib/test_s3.py for where they were captured): postgresql-k8s 16 answering in the v0
contract, s3-integrator 2/ with its keys in a Juju secret, and traefik-k8s's ingress v2.

``FakeMLflow`` stands in for the server behind the charm's real ``MLflowAPI``: it replaces
the JSON client only, so the API's own logic (read a grant before changing it) is under test.
"""

from __future__ import annotations

import base64
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

ADMIN_USERNAME = "admin"
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
CONSUMER_TAG = "mlops.stack/consumer"
READY_NOTICE = "mlops-stack.dev/mlflow/ready"
# PEM certificates as the providers hand them over (bodies shortened).
DB_CA = "-----BEGIN CERTIFICATE-----\nMIIBpostgresqlCA\n-----END CERTIFICATE-----"
S3_ROOT_CA = "-----BEGIN CERTIFICATE-----\nMIIBrootCA\n-----END CERTIFICATE-----"
S3_INTERMEDIATE_CA = "-----BEGIN CERTIFICATE-----\nMIIBintermediateCA\n-----END CERTIFICATE-----"


# Config values both tracking charms block on, naming the option: (option, value).
BAD_CONFIG = {
    "port below 1024": ("port", 80),
    "port above 65535": ("port", 65536),
    "metrics port below 1024": ("metrics-port", 80),
    "metrics port equal to port": ("metrics-port", 5000),
    "no workers": ("workers", 0),
    "too many workers": ("workers", 17),
    "blank default experiment": ("default-experiment", "   "),
    "unknown permission": ("default-permission", "OWNER"),
    "empty allowed host": ("allowed-hosts", "mlflow.example.org,,other.example.org"),
    "allowed host with a space": ("allowed-hosts", "mlflow example.org"),
}


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


def database_tls_secret(tls: str = "True", ca: str | None = DB_CA) -> testing.Secret:
    """The ``tls`` group secret postgresql-k8s grants: ``tls`` and, with a CA, ``tls-ca``."""
    return testing.Secret({"tls": tls, **({"tls-ca": ca} if ca else {})})


def database_relation(
    secret: testing.Secret | None = None,
    *,
    tls_secret: testing.Secret | None = None,
    **changes: str,
) -> testing.Relation:
    """The ``database`` relation; with ``secret``, as postgresql-k8s 16 answers it."""
    databag: dict[str, str] = {}
    if secret is not None:
        databag = {
            "data": json.dumps({"database": "mlflow", "version": "v1"}),
            "database": "mlflow",
            "endpoints": f"{DB_HOST}:5432",
            "secret-user": secret.id,
            "version": "16.9",
            **({"secret-tls": tls_secret.id} if tls_secret else {}),
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


def service_script(state: testing.State) -> str:
    """The shell script the mlflow service runs (``/bin/sh -c <script>``)."""
    shell, flag, script = shlex.split(service_command(state))
    assert (shell, flag) == ("/bin/sh", "-c")
    return script


def server_args(state: testing.State) -> list[str]:
    """The ``mlflow server ...`` arguments the service's shell command execs."""
    _, exec_part = service_script(state).split(" && exec ", 1)
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

REST_V2 = "/api/2.0/mlflow/"
REST_V3 = "/api/3.0/mlflow/"
# The endpoints the charm calls, by method and path, under the names tests use for them.
ENDPOINTS = {
    ("GET", f"{REST_V2}users/get"): "users/get",
    ("POST", f"{REST_V2}users/create"): "users/create",
    ("PATCH", f"{REST_V2}users/update-password"): "users/update-password",
    ("PATCH", f"{REST_V2}users/update-admin"): "users/update-admin",
    ("DELETE", f"{REST_V2}users/delete"): "users/delete",
    ("GET", f"{REST_V2}experiments/get-by-name"): "experiments/get-by-name",
    ("POST", f"{REST_V2}experiments/create"): "experiments/create",
    ("GET", f"{REST_V3}users/permissions/list"): "users/permissions/list",
    ("POST", f"{REST_V3}users/permissions/grant"): "users/permissions/grant",
    ("POST", f"{REST_V3}users/permissions/revoke"): "users/permissions/revoke",
    ("GET", f"{REST_V2}model-versions/get"): "model-versions/get",
    ("POST", f"{REST_V2}registered-models/alias"): "registered-models/alias",
}
DEFAULT_EXPERIMENT_ID = "0"  # MLflow creates "Default" with id 0 in a new store
# What a grant on one resource may be (mlflow.server.auth.permissions).
RESOURCE_GRANTABLE_PERMISSIONS = frozenset({"READ", "USE", "EDIT", "MANAGE", "DENY"})
NOT_AUTHENTICATED = (
    "You are not authenticated. Please see https://www.mlflow.org/docs/latest/auth/index.html"
    "#authenticating-to-mlflow on how to authenticate."
)


class _HandlerError(Exception):
    """What an MLflow handler answers with instead of 200: status, error_code, message."""

    def __init__(self, status: int, code: str | None, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def rest_error(self) -> RESTError:
        """The error ``mlops_charms.rest.JSONClient`` raises for this answer."""
        first_line = self.message.strip().splitlines()[0]
        return RESTError(
            f"MLflow refused the request ({self.status}): {first_line}", self.status, self.code
        )


def _invalid(message: str) -> _HandlerError:
    return _HandlerError(400, "INVALID_PARAMETER_VALUE", message)


def _missing(message: str) -> _HandlerError:
    return _HandlerError(404, "RESOURCE_DOES_NOT_EXIST", message)


def _exists(message: str) -> _HandlerError:
    return _HandlerError(400, "RESOURCE_ALREADY_EXISTS", message)


@dataclass
class FakeMLflow:
    """MLflow 3.17.2's REST API with basic auth, in memory, as ``MLflowAPI`` reaches it.

    It answers what the real handlers answer (mlflow/server/auth/__init__.py and
    sqlalchemy_store.py): a grant on a row that exists is RESOURCE_ALREADY_EXISTS and is not
    updated, a revoke of a missing row is RESOURCE_DOES_NOT_EXIST, the permissions list holds
    one row per grant of every role the user has, an empty repeated field (an experiment's
    tags) is left out of the JSON, and creating an experiment gives its creator MANAGE on it.
    Every request must authenticate as the admin, whose password is the charm's secret's.
    """

    healthy: bool = True
    # username -> {"id", "username", "password", "is_admin"}
    users: dict[str, dict] = field(default_factory=dict)
    # experiment id -> {"experiment_id", "name", "lifecycle_stage", "tags": {key: value}}
    experiments: dict[str, dict] = field(default_factory=dict)
    # (username, experiment id) -> permission: the grants on the user's own
    # ``__user_<id>__`` role, the only ones the grant and revoke endpoints change.
    grants: dict[tuple[str, str], str] = field(default_factory=dict)
    # (username, role name, experiment id, permission): roles an operator assigned.
    role_grants: list[tuple[str, str, str, str]] = field(default_factory=list)
    model_versions: dict[tuple[str, str], dict] = field(default_factory=dict)
    aliases: dict[tuple[str, str], str] = field(default_factory=dict)
    # (endpoint, parameters) of every request, in order; see ``called``.
    requests: list[tuple[str, dict]] = field(default_factory=list)
    # (base URL, username, password) of every client the charm made.
    clients: list[tuple[str, str, str]] = field(default_factory=list)
    # The CA each of those clients verifies an HTTPS server with (None: plain HTTP).
    client_cas: list[str | None] = field(default_factory=list)
    failures: dict[str, RESTError] = field(default_factory=dict)
    sender: str | None = None  # the user of the request being answered
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self):
        self.add_user(ADMIN_USERNAME, ADMIN_PASSWORD, is_admin=True)
        self.experiments[DEFAULT_EXPERIMENT_ID] = self._experiment(
            DEFAULT_EXPERIMENT_ID, "Default", {}
        )

    # --- what tests arrange and inspect ---

    def client(
        self,
        base_url: str,
        headers: dict[str, str],
        *,
        service: str,
        timeout: float = 10.0,
        ca: str | None = None,
    ):
        """What ``MLflowAPI`` gets when it makes its ``JSONClient``."""
        scheme, _, token = headers["Authorization"].partition(" ")
        assert scheme == "Basic"
        username, _, password = base64.b64decode(token).decode().partition(":")
        self.clients.append((base_url, username, password))
        self.client_cas.append(ca)
        return FakeJSONClient(self, (username, password))

    def fail(self, endpoint: str, message: str = "boom", status: int = 500) -> None:
        """Make every request to ``endpoint`` fail as a refusing server would."""
        assert endpoint in ENDPOINTS.values(), f"FakeMLflow has no endpoint {endpoint!r}"
        self.failures[endpoint] = _HandlerError(status, None, message).rest_error()

    def called(self, endpoint: str) -> list[dict]:
        """The parameters of every request to ``endpoint``, in order."""
        return [params for name, params in self.requests if name == endpoint]

    def add_user(self, username: str, password: str, *, is_admin: bool = False) -> None:
        self.users[username] = {
            "id": next(self._ids),
            "username": username,
            "password": password,
            "is_admin": is_admin,
        }

    def add_experiment(self, name: str, tags: dict[str, str] | None = None) -> str:
        """An experiment made before the hook (by a person, or by the charm); its id."""
        experiment_id = str(next(self._ids))
        self.experiments[experiment_id] = self._experiment(experiment_id, name, tags or {})
        return experiment_id

    def experiment_id(self, name: str) -> str:
        (found,) = [e["experiment_id"] for e in self.experiments.values() if e["name"] == name]
        return found

    def experiment_tags(self, name: str) -> dict[str, str]:
        return self.experiments[self.experiment_id(name)]["tags"]

    def permission(self, username: str, experiment: str) -> str | None:
        """The permission ``username`` was granted on the experiment named ``experiment``."""
        return self.grants.get((username, self.experiment_id(experiment)))

    def add_model_version(self, name: str, version: str, run_id: str = "run-1") -> None:
        self.model_versions[name, version] = {
            "name": name,
            "version": version,
            "run_id": run_id,
            "source": f"models:/m-{run_id}",
        }

    # --- the server ---

    def handle(self, credentials: tuple[str, str], method: str, path: str, params: dict) -> dict:
        """Answer one request as MLflow would, or raise the ``RESTError`` the client raises."""
        endpoint = ENDPOINTS.get((method, path))
        assert endpoint is not None, f"FakeMLflow does not serve {method} {path}"
        self.requests.append((endpoint, params))
        if endpoint in self.failures:
            raise self.failures[endpoint]
        handler = getattr(self, "_" + endpoint.replace("/", "_").replace("-", "_"))
        try:
            self._authenticate_admin(*credentials)
            self.sender = credentials[0]
            return handler(params)
        except _HandlerError as refusal:
            raise refusal.rest_error() from None

    def _authenticate_admin(self, username: str, password: str) -> None:
        user = self.users.get(username)
        if user is None or user["password"] != password:
            raise _HandlerError(401, None, NOT_AUTHENTICATED)
        if not user["is_admin"]:
            raise _HandlerError(403, "PERMISSION_DENIED", "Permission denied")

    @staticmethod
    def _param(params: dict, name: str):
        if name not in params:
            raise _invalid(f"Missing value for required parameter '{name}'.")
        return params[name]

    def _user(self, params: dict) -> dict:
        username = self._param(params, "username")
        if username not in self.users:
            raise _missing(f"User with username={username} not found")
        return self.users[username]

    @staticmethod
    def _user_json(user: dict) -> dict:
        return {key: user[key] for key in ("id", "username", "is_admin")}

    @staticmethod
    def _experiment(experiment_id: str, name: str, tags: dict[str, str]) -> dict:
        return {
            "experiment_id": experiment_id,
            "name": name,
            "lifecycle_stage": "active",
            "tags": dict(tags),
        }

    @staticmethod
    def _validate_password(password) -> None:
        if password is None or len(password) < 12:
            raise _invalid("Password must be at least 12 characters.")

    def _users_get(self, params: dict) -> dict:
        return {"user": self._user_json(self._user(params))}

    def _users_create(self, params: dict) -> dict:
        username, password = self._param(params, "username"), self._param(params, "password")
        if not username or not password:
            raise _HandlerError(400, None, "Username and password cannot be empty.")
        self._validate_password(password)
        if username in self.users:
            raise _exists(f"User (username={username}) already exists.")
        self.add_user(username, password)
        return {"user": self._user_json(self.users[username])}

    def _users_update_password(self, params: dict) -> dict:
        user = self._user(params)
        password = self._param(params, "password")
        if user["username"] == self.sender and params.get("current_password") != user["password"]:
            # MLflow 3.17: a user changing its own password proves it knows the current one.
            raise _invalid("Current password is required when changing your own password.")
        self._validate_password(password)
        user["password"] = password
        return {}

    def _users_update_admin(self, params: dict) -> dict:
        user = self._user(params)
        user["is_admin"] = self._param(params, "is_admin")
        return {}

    def _users_delete(self, params: dict) -> dict:
        if params.get("username") == ADMIN_USERNAME:
            raise _HandlerError(400, "BAD_REQUEST", "Users cannot delete their own account.")
        username = self._user(params)["username"]
        del self.users[username]
        self.grants = {key: value for key, value in self.grants.items() if key[0] != username}
        self.role_grants = [row for row in self.role_grants if row[0] != username]
        return {}

    def _experiments_get_by_name(self, params: dict) -> dict:
        name = self._param(params, "experiment_name")
        for experiment in self.experiments.values():
            if experiment["name"] == name:
                found = {key: value for key, value in experiment.items() if key != "tags"}
                if experiment["tags"]:  # protobuf JSON leaves an empty repeated field out
                    found["tags"] = [
                        {"key": key, "value": value} for key, value in experiment["tags"].items()
                    ]
                return {"experiment": found}
        raise _missing(f"Could not find experiment with name '{name}'")

    def _experiments_create(self, params: dict) -> dict:
        name = self._param(params, "name")
        if not name:
            raise _invalid("Invalid experiment name: ''")
        if any(experiment["name"] == name for experiment in self.experiments.values()):
            raise _exists(f"Experiment(name={name}) already exists.")
        tags = {tag["key"]: tag["value"] for tag in params.get("tags", [])}
        experiment_id = self.add_experiment(name, tags)
        # The auth app's after-request hook: the creator may manage what it made.
        self.grants[ADMIN_USERNAME, experiment_id] = "MANAGE"
        return {"experiment_id": experiment_id}

    def _users_permissions_list(self, params: dict) -> dict:
        user = self._user(params)
        own_role = (user["id"], f"__user_{user['id']}__")
        rows = [
            (own_role, experiment_id, permission)
            for (username, experiment_id), permission in self.grants.items()
            if username == user["username"]
        ]
        rows += [
            ((1000 + index, role), experiment_id, permission)
            for index, (username, role, experiment_id, permission) in enumerate(self.role_grants)
            if username == user["username"]
        ]
        return {
            "is_admin": user["is_admin"],
            "permissions": [
                {
                    "role_id": role_id,
                    "role_name": role_name,
                    "workspace": "default",
                    "resource_type": "experiment",
                    "resource_pattern": experiment_id,
                    "permission": permission,
                }
                for (role_id, role_name), experiment_id, permission in rows
            ],
        }

    def _experiment_grant_key(self, params: dict) -> tuple[str, str]:
        username = self._user(params)["username"]
        resource_type = self._param(params, "resource_type")
        assert resource_type == "experiment", (
            f"FakeMLflow grants on experiments only, not {resource_type}"
        )
        return username, str(self._param(params, "resource_id"))

    def _users_permissions_grant(self, params: dict) -> dict:
        key = self._experiment_grant_key(params)
        permission = self._param(params, "permission")
        if permission not in RESOURCE_GRANTABLE_PERMISSIONS:
            raise _invalid(f"Invalid permission '{permission}' for resource_type='experiment'.")
        if key in self.grants:
            raise _exists(
                f"Permission for user={key[0]} on resource_type=experiment, "
                f"resource_id={key[1]} already exists."
            )
        self.grants[key] = permission
        return {}

    def _users_permissions_revoke(self, params: dict) -> dict:
        key = self._experiment_grant_key(params)
        if key not in self.grants:
            raise _missing(
                f"Permission for user={key[0]} on resource_type=experiment, "
                f"resource_id={key[1]} not found."
            )
        del self.grants[key]
        return {}

    def _model_versions_get(self, params: dict) -> dict:
        key = (self._param(params, "name"), self._param(params, "version"))
        if key not in self.model_versions:
            raise _missing(f"Model Version (name={key[0]}, version={key[1]}) not found")
        return {"model_version": self.model_versions[key]}

    def _registered_models_alias(self, params: dict) -> dict:
        name, version = self._param(params, "name"), self._param(params, "version")
        if (name, version) not in self.model_versions:
            raise _missing(f"Model Version (name={name}, version={version}) not found")
        self.aliases[name, self._param(params, "alias")] = version
        return {}


class FakeJSONClient:
    """``mlops_charms.rest.JSONClient`` against a ``FakeMLflow``: the same wire, no socket."""

    def __init__(self, server: FakeMLflow, credentials: tuple[str, str]):
        self._server = server
        self._credentials = credentials

    def is_healthy(self, path: str = "/health") -> bool:
        assert path == "/health"
        return self._server.healthy

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        if not self._server.healthy:
            raise RESTError("MLflow unreachable: <urlopen error [Errno 111] Connection refused>")
        # As on the wire: GET parameters travel as strings in the query, others as JSON.
        if method == "GET":
            params = {key: str(value) for key, value in (body or {}).items()}
        else:
            params = json.loads(json.dumps(body or {}))
        return self._server.handle(self._credentials, method, path, params)
