"""The MLflow Tracking Server workload: its command, files, health and REST API.

Nothing here knows about Juju. The charm turns config and relations into ``ServerSettings``;
this module turns those into the Pebble layer and the files the server reads, and talks to the
running server over its REST API (stdlib ``urllib`` only: hooks stay fast).

Secrets never appear in the Pebble plan: the service's command sources ``secrets.env`` (mode
0600) before it execs MLflow, so ``pebble plan`` and the process list show no password.
"""

from __future__ import annotations

import base64
import json
import shlex
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ops.pebble import LayerDict

SERVICE = "mlflow"
READY_CHECK = "mlflow-ready"
ADMIN_USERNAME = "admin"
PERMISSIONS = ("READ", "EDIT", "MANAGE", "NO_PERMISSIONS")

# Host headers MLflow accepts besides the in-cluster names: loopback and private addresses,
# as MLflow's own default does; the charm adds the service and ingress names.
_LOCAL_HOSTS = (
    "localhost",
    "localhost:*",
    "127.0.0.1",
    "127.0.0.1:*",
    "10.*",
    "192.168.*",
    *(f"172.{octet}.*" for octet in range(16, 32)),
)


@dataclass(frozen=True)
class PostgreSQLBackend:
    """A PostgreSQL backend store; the password travels in ``secrets.env``, not in the URL."""

    url: str
    password: str


@dataclass(frozen=True)
class S3Artifacts:
    """An S3 artifact store proxied by the server; clients need no S3 credentials."""

    destination: str
    endpoint: str | None
    region: str | None
    access_key: str
    secret_key: str


@dataclass(frozen=True)
class ServerSettings:
    """Everything the MLflow server's layer and files are derived from."""

    data_dir: str
    port: int
    workers: int
    job_execution: bool
    default_permission: str
    admin_password: str
    flask_secret_key: str
    allowed_hosts: tuple[str, ...] = ()
    database: PostgreSQLBackend | None = None
    artifacts: S3Artifacts | None = None

    @property
    def secrets_env_path(self) -> str:
        return f"{self.data_dir}/secrets/secrets.env"

    @property
    def auth_config_path(self) -> str:
        return f"{self.data_dir}/secrets/basic_auth.ini"

    @property
    def backend_store_uri(self) -> str:
        if self.database:
            return self.database.url
        return f"sqlite:///{self.data_dir}/mlflow.db"

    @property
    def auth_database_uri(self) -> str:
        # With PostgreSQL the users live in the same database (MLflow's auth tables have their
        # own migration table), so every unit sees the same users and the app can scale.
        if self.database:
            return self.database.url
        return f"sqlite:///{self.data_dir}/basic_auth.db"

    @property
    def artifacts_destination(self) -> str:
        if self.artifacts:
            return self.artifacts.destination
        return f"{self.data_dir}/artifacts"


def server_command(settings: ServerSettings) -> list[str]:
    """The ``mlflow server`` command line (no secrets in it)."""
    return [
        "mlflow",
        "server",
        "--host",
        "0.0.0.0",  # noqa: S104 - the server is reached through the pod's service
        "--port",
        str(settings.port),
        "--workers",
        str(settings.workers),
        "--backend-store-uri",
        settings.backend_store_uri,
        "--serve-artifacts",
        "--artifacts-destination",
        settings.artifacts_destination,
        "--app-name",
        "basic-auth",
        "--allowed-hosts",
        ",".join((*_LOCAL_HOSTS, *settings.allowed_hosts)),
    ]


def layer(settings: ServerSettings) -> LayerDict:
    """The Pebble layer that runs the server and checks its health."""
    environment = {
        "MLFLOW_AUTH_CONFIG_PATH": settings.auth_config_path,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true" if settings.job_execution else "false",
    }
    if settings.artifacts:
        if settings.artifacts.endpoint:
            environment["MLFLOW_S3_ENDPOINT_URL"] = settings.artifacts.endpoint
        if settings.artifacts.region:
            environment["AWS_DEFAULT_REGION"] = settings.artifacts.region
    secrets_env = shlex.quote(settings.secrets_env_path)
    launch = f". {secrets_env} && exec {shlex.join(server_command(settings))}"
    return {
        "summary": "MLflow Tracking Server",
        "services": {
            SERVICE: {
                "override": "replace",
                "summary": "MLflow Tracking Server with basic auth",
                "command": shlex.join(["/bin/sh", "-c", launch]),
                "startup": "enabled",
                "environment": environment,
            }
        },
        "checks": {
            READY_CHECK: {
                "override": "replace",
                "level": "ready",
                "period": "10s",
                "timeout": "3s",
                "threshold": 3,
                "http": {"url": f"http://localhost:{settings.port}/health"},
            }
        },
    }


def files(settings: ServerSettings) -> dict[str, str]:
    """The files the server reads, by path: all of them mode 0600."""
    auth_config = "\n".join(
        [
            "[mlflow]",
            f"default_permission = {settings.default_permission}",
            f"database_uri = {settings.auth_database_uri}",
            f"admin_username = {ADMIN_USERNAME}",
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth",
            "",
        ]
    )
    secret_env = {
        "MLFLOW_FLASK_SERVER_SECRET_KEY": settings.flask_secret_key,
        # Read only when the admin user does not exist yet in the auth store.
        "MLFLOW_AUTH_ADMIN_PASSWORD": settings.admin_password,
    }
    if settings.database:
        secret_env["PGPASSWORD"] = settings.database.password
    if settings.artifacts:
        secret_env["AWS_ACCESS_KEY_ID"] = settings.artifacts.access_key
        secret_env["AWS_SECRET_ACCESS_KEY"] = settings.artifacts.secret_key
    secrets_env = "".join(
        f"export {name}={shlex.quote(value)}\n" for name, value in secret_env.items()
    )
    return {settings.auth_config_path: auth_config, settings.secrets_env_path: secrets_env}


class MLflowAPIError(Exception):
    """The server refused a request or could not be reached; the message is one line."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


class MLflowAPI:
    """A small client for the REST endpoints the charm needs, authenticated as one user."""

    def __init__(self, base_url: str, username: str, password: str, timeout: float = 10.0):
        self._base_url = base_url.rstrip("/")
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        self._headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}
        self._timeout = timeout

    def is_healthy(self) -> bool:
        """Whether ``/health`` answers OK."""
        try:
            with urllib.request.urlopen(  # noqa: S310 - the URL is the charm's own http server
                f"{self._base_url}/health", timeout=self._timeout
            ) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def get_user(self, username: str) -> dict | None:
        """The user, or None if it does not exist."""
        try:
            return self._call("GET", "/api/2.0/mlflow/users/get", {"username": username})["user"]
        except MLflowAPIError as error:
            if error.code == "RESOURCE_DOES_NOT_EXIST" or error.status == 404:
                return None
            raise

    def create_user(self, username: str, password: str) -> None:
        self._call(
            "POST", "/api/2.0/mlflow/users/create", {"username": username, "password": password}
        )

    def update_password(self, username: str, password: str) -> None:
        self._call(
            "PATCH",
            "/api/2.0/mlflow/users/update-password",
            {"username": username, "password": password},
        )

    def set_admin(self, username: str, is_admin: bool) -> None:
        self._call(
            "PATCH",
            "/api/2.0/mlflow/users/update-admin",
            {"username": username, "is_admin": is_admin},
        )

    def delete_user(self, username: str) -> None:
        self._call("DELETE", "/api/2.0/mlflow/users/delete", {"username": username})

    def ensure_experiment(self, name: str) -> str:
        """The id of the experiment ``name``, created if missing."""
        try:
            found = self._call(
                "GET", "/api/2.0/mlflow/experiments/get-by-name", {"experiment_name": name}
            )
            return found["experiment"]["experiment_id"]
        except MLflowAPIError as error:
            if error.code != "RESOURCE_DOES_NOT_EXIST":
                raise
        return self._call("POST", "/api/2.0/mlflow/experiments/create", {"name": name})[
            "experiment_id"
        ]

    def grant_experiment_permission(
        self, experiment_id: str, username: str, permission: str
    ) -> None:
        """Give ``username`` exactly ``permission`` on the experiment (grant or replace)."""
        grant = {
            "username": username,
            "resource_type": "experiment",
            "resource_id": experiment_id,
            "permission": permission,
        }
        try:
            self._call("POST", "/api/3.0/mlflow/users/permissions/grant", grant)
        except MLflowAPIError as error:
            if error.code != "RESOURCE_ALREADY_EXISTS":
                raise
            # A grant cannot be updated in place: replace it.
            revoke = {key: grant[key] for key in ("username", "resource_type", "resource_id")}
            self._call("POST", "/api/3.0/mlflow/users/permissions/revoke", revoke)
            self._call("POST", "/api/3.0/mlflow/users/permissions/grant", grant)

    def get_model_version(self, name: str, version: str) -> dict | None:
        """The registered model version, or None if the model or version does not exist."""
        try:
            return self._call(
                "GET", "/api/2.0/mlflow/model-versions/get", {"name": name, "version": version}
            )["model_version"]
        except MLflowAPIError as error:
            if error.code == "RESOURCE_DOES_NOT_EXIST" or error.status == 404:
                return None
            raise

    def set_model_alias(self, name: str, alias: str, version: str) -> None:
        self._call(
            "POST",
            "/api/2.0/mlflow/registered-models/alias",
            {"name": name, "alias": alias, "version": version},
        )

    def _call(self, method: str, path: str, body: dict) -> dict:
        url = f"{self._base_url}{path}"
        data = None
        if method == "GET":
            url = f"{url}?{urllib.parse.urlencode(body)}"
        else:
            data = json.dumps(body).encode()
        # The base URL is the charm's own http://localhost server, never user input.
        request = urllib.request.Request(  # noqa: S310
            url, data=data, method=method, headers=self._headers
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:  # noqa: S310
                payload = response.read()
        except urllib.error.HTTPError as error:
            raise _api_error(error) from None
        except (urllib.error.URLError, OSError) as error:
            raise MLflowAPIError(f"MLflow server unreachable: {error}") from None
        return json.loads(payload) if payload else {}


def _api_error(error: urllib.error.HTTPError) -> MLflowAPIError:
    body = error.read().decode(errors="replace")
    try:
        parsed = json.loads(body)
        code, message = parsed.get("error_code"), parsed.get("message", body)
    except (json.JSONDecodeError, AttributeError):
        code, message = None, body or error.reason
    first_line = str(message).strip().splitlines()[0] if str(message).strip() else ""
    return MLflowAPIError(
        f"MLflow refused the request ({error.code}): {first_line}", status=error.code, code=code
    )
