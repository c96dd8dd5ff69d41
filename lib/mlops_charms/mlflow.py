"""The MLflow Tracking Server workload, substrate-neutral: its command, environment, files and API.

Nothing here knows about Juju, Pebble or systemd. A tracking charm (tracking-k8s, tracking)
turns config and relations into ``ServerSettings``; this module turns those into the server's
command line, its plain environment and the files it reads, and talks to the running server over
its REST API (stdlib ``urllib`` only: hooks stay fast). The substrate adapters (tracking-k8s's
Pebble layer, tracking's systemd unit) run that command with that environment.

Secrets never appear in the command or the environment: they are in ``secrets.env`` (mode 0600),
which the Pebble service sources and the systemd unit reads as its ``EnvironmentFile``.

Metrics: MLflow's ``--expose-prometheus`` counts requests in a multiprocess folder, but serves
``/metrics`` behind its basic auth (only ``/health``, ``/static`` and server-info are open).
So a second, tiny process, the metrics exporter, serves that folder on its own port without
auth, plus whether MLflow answers: Prometheus scrapes it with no MLflow password anywhere.

HTTPS: with a certificate (``ServerSettings.tls``) uvicorn, which ``mlflow server`` runs, serves
HTTPS only on the port. The certificate, its key and the CA are secret files like the others;
everything that asks the server (health check, ready notice, exporter, the charm's API client)
reaches it as ``https://localhost`` and verifies it against that CA.
"""

from __future__ import annotations

import base64
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlops_charms import client_ca, mlflow_schema, rotation, workload
from mlops_charms.rest import JSONClient, RESTError

if TYPE_CHECKING:
    from mlops_charms.tls import ServerTLS

# The tag that says which consumer application an experiment was created for.
CONSUMER_TAG = "mlops.stack/consumer"
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
    sslmode: str | None = None  # libpq's: verify-full with ``ca``, require with TLS alone
    ca: str | None = None


@dataclass(frozen=True)
class S3Artifacts:
    """An S3 artifact store behind the server: clients need no keys (downloads are presigned)."""

    destination: str
    endpoint: str | None
    region: str | None
    access_key: str
    secret_key: str
    ca_chain: str | None = None  # PEM: trust the endpoint's private CA
    path_style: bool | None = None  # address buckets in the path (MinIO, Ceph RGW, ...)


@dataclass(frozen=True)
class ServerSettings:
    """Everything the MLflow server's layer and files are derived from."""

    data_dir: str
    port: int
    metrics_port: int  # the metrics exporter's
    workers: int
    job_execution: bool
    default_permission: str
    admin_password: str
    flask_secret_key: str
    allowed_hosts: tuple[str, ...] = ()
    database: PostgreSQLBackend | None = None
    artifacts: S3Artifacts | None = None
    # The leader migrates the tracking store before its server starts (mlflow_schema).
    upgrade_schema: bool = False
    # The unit's certificate: HTTPS only on ``port``; None: plain HTTP.
    tls: ServerTLS | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def metrics_dir(self) -> str:
        """prometheus_client's multiprocess folder: MLflow's workers write, the exporter reads."""
        return f"{self.data_dir}/prometheus"

    @property
    def metrics_exporter_path(self) -> str:
        return f"{self.data_dir}/metrics_exporter.py"

    @property
    def secrets_env_path(self) -> str:
        return f"{self.data_dir}/secrets/secrets.env"

    @property
    def postgresql_ca_path(self) -> str:
        return f"{self.data_dir}/secrets/postgresql-ca.pem"

    @property
    def s3_ca_path(self) -> str:
        return f"{self.data_dir}/secrets/s3-ca.pem"

    @property
    def tls_certificate_path(self) -> str:
        return f"{self.data_dir}/secrets/server-certificate.pem"

    @property
    def tls_key_path(self) -> str:
        return f"{self.data_dir}/secrets/server-key.pem"

    @property
    def tls_ca_path(self) -> str:
        """The CA of the server's certificate: what the unit's own probes verify it with."""
        return f"{self.data_dir}/secrets/server-ca.pem"

    @property
    def tls_files(self) -> tuple[str, ...]:
        """The files of HTTPS, the key first (removed when the server serves HTTP)."""
        return (self.tls_key_path, self.tls_certificate_path, self.tls_ca_path)

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


def server_command(settings: ServerSettings, program: str = "mlflow") -> list[str]:
    """The ``mlflow server`` command line (no secrets in it); ``program``: where ``mlflow`` is."""
    https = (
        # uvicorn (MLflow's default server) serves TLS itself: HTTPS only, on the same port.
        [
            "--uvicorn-opts",
            shlex.join(
                [
                    "--ssl-certfile",
                    settings.tls_certificate_path,
                    "--ssl-keyfile",
                    settings.tls_key_path,
                ]
            ),
        ]
        if settings.tls
        else []
    )
    return [
        program,
        "server",
        "--host",
        "0.0.0.0",  # noqa: S104 - reached through the pod's service or the machine's address
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
        "--expose-prometheus",
        settings.metrics_dir,
        *https,
    ]


def start_steps(settings: ServerSettings, python: str = "python3") -> list[list[str]]:
    """What runs, in order, before each start of the server; ``python``: MLflow's interpreter.

    The metrics folder is emptied; the leader migrates the tracking store (``mlflow_schema``).
    """
    steps = [reset_metrics_command(settings)]
    if settings.upgrade_schema:
        steps.append(mlflow_schema.command(settings, python))
    return steps


def reset_metrics_command(settings: ServerSettings) -> list[str]:
    """Run before MLflow starts: remove the previous run's multiprocess folder (MLflow remakes it).

    prometheus_client asks for it: files of dead workers would otherwise pile up, one set per
    restart. Counters then restart from zero, which Prometheus' ``rate()`` handles.
    """
    return ["rm", "-rf", "--", settings.metrics_dir]


def metrics_exporter_command(settings: ServerSettings, python: str = "python3") -> list[str]:
    """The metrics exporter's command; ``python``: MLflow's interpreter (has prometheus_client)."""
    return [
        python,
        settings.metrics_exporter_path,
        settings.metrics_dir,
        str(settings.metrics_port),
        health_url(settings),
        settings.data_dir,
        *([settings.tls_ca_path] if settings.tls else []),
    ]


# The exporter's own gauges. The scrape's ``up`` says only that the exporter answers; these say
# whether MLflow does, and how full the unit's storage (stores, artifacts) is.
UP_METRIC = "mlflow_server_up"
STORAGE_SIZE_METRIC = "mlflow_storage_size_bytes"
STORAGE_AVAILABLE_METRIC = "mlflow_storage_available_bytes"

# Run by MLflow's interpreter: only the standard library and prometheus_client (which MLflow's
# own exporter needs anyway).
METRICS_EXPORTER = f'''"""Serve MLflow's multiprocess metrics, health and storage, without auth."""

import os
import shutil
import ssl
import sys
import threading
import urllib.request

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

metrics_dir, port, health_url, data_dir = sys.argv[1], int(sys.argv[2]), *sys.argv[3:5]
# Over HTTPS: MLflow's certificate verified against its CA's file.
context = ssl.create_default_context(cafile=sys.argv[5]) if len(sys.argv) > 5 else None


class Server:
    def collect(self):
        try:
            with urllib.request.urlopen(health_url, timeout=3, context=context) as response:
                up = response.status == 200
        except OSError:
            up = False
        yield GaugeMetricFamily("{UP_METRIC}", "Whether MLflow's /health answers.", 1.0 * up)
        usage = shutil.disk_usage(data_dir)
        yield GaugeMetricFamily("{STORAGE_SIZE_METRIC}", "The storage's size.", usage.total)
        yield GaugeMetricFamily("{STORAGE_AVAILABLE_METRIC}", "Free to MLflow.", usage.free)


os.makedirs(metrics_dir, exist_ok=True)
registry = CollectorRegistry()
MultiProcessCollector(registry, path=metrics_dir)
registry.register(Server())
start_http_server(port, registry=registry)
threading.Event().wait()
'''


def environment(settings: ServerSettings) -> dict[str, str]:
    """The server's plain environment (no secrets in it: those are in ``secrets.env``)."""
    environment = {
        "MLFLOW_AUTH_CONFIG_PATH": settings.auth_config_path,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true" if settings.job_execution else "false",
        # Nothing phones home: MLflow's usage telemetry (server and UI) is on by default.
        # MLflow reads DO_NOT_TRACK only when it is "true", hence its own switch as well.
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
    }
    if settings.database and settings.database.sslmode:
        environment["PGSSLMODE"] = settings.database.sslmode  # libpq, under psycopg2
        if settings.database.ca:
            environment["PGSSLROOTCERT"] = settings.postgresql_ca_path
    if settings.artifacts:
        environment.update(client_ca.S3_UPLOAD_SETTINGS)  # the artifact proxy's uploads
        if settings.artifacts.endpoint:
            environment["MLFLOW_S3_ENDPOINT_URL"] = settings.artifacts.endpoint
        if settings.artifacts.region:
            environment["AWS_DEFAULT_REGION"] = settings.artifacts.region
        if settings.artifacts.ca_chain:
            environment["AWS_CA_BUNDLE"] = settings.s3_ca_path
        if settings.artifacts.path_style is not None:
            # MLflow's artifact proxy sets boto3's addressing style from this, over any
            # AWS config file.
            style = "path" if settings.artifacts.path_style else "virtual"
            environment["MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE"] = style
    return environment


def health_url(settings: ServerSettings) -> str:
    """Where the server answers once it is ready, from the machine it runs on.

    Over HTTPS, ``localhost`` is one of the certificate's names: verify with ``tls_ca_path``.
    """
    return f"{settings.scheme}://localhost:{settings.port}/health"


# Seconds a verified username/password pair stays verified in a worker (MLflow 3.17).
AUTH_CACHE_TTL = 60


def files(
    settings: ServerSettings,
    render_secrets: Callable[[Mapping[str, str]], str] = workload.secrets_env,
) -> dict[str, str]:
    """The files the server reads, by path: all of them mode 0600.

    ``render_secrets`` writes ``secrets.env`` in the substrate's syntax: shell ``export`` lines
    for Pebble's sourcing command, ``NAME='value'`` lines for a systemd ``EnvironmentFile``.
    """
    auth_config = "\n".join(
        [
            "[mlflow]",
            f"default_permission = {settings.default_permission}",
            f"database_uri = {settings.auth_database_uri}",
            f"admin_username = {ADMIN_USERNAME}",
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth",
            # Without the cache every request re-hashes the password (PBKDF2, ~0.4 s here): a
            # training job's ~20 requests spent 14 s in it. A password change or user removal
            # reaches the other workers' caches within this TTL.
            f"auth_cache_ttl_seconds = {AUTH_CACHE_TTL}",
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
    rendered = {
        settings.auth_config_path: auth_config,
        settings.secrets_env_path: render_secrets(secret_env),
        settings.metrics_exporter_path: METRICS_EXPORTER,
        mlflow_schema.script_path(settings.data_dir): mlflow_schema.SCHEMA_UPGRADE,
    }
    if settings.database and settings.database.ca:
        rendered[settings.postgresql_ca_path] = settings.database.ca
    if settings.artifacts and settings.artifacts.ca_chain:
        rendered[settings.s3_ca_path] = settings.artifacts.ca_chain
    if settings.tls:
        # A renewed certificate changes these files: the server restarts to serve it.
        rendered[settings.tls_certificate_path] = settings.tls.certificate
        rendered[settings.tls_key_path] = settings.tls.private_key
        rendered[settings.tls_ca_path] = settings.tls.ca
    return rendered


# Read by MLflow only to create the admin user (its first start): a new value (rotate-credentials
# changes the password through the API first) is written without a restart.
READ_ONLY_TO_BOOTSTRAP = ("MLFLOW_AUTH_ADMIN_PASSWORD",)


@dataclass(frozen=True)
class Restarts:
    """Which of MLflow and its exporter must restart to read files that changed."""

    server: bool
    exporter: bool

    @property
    def any(self) -> bool:
        return self.server or self.exporter


def restarts(
    settings: ServerSettings, before: Mapping[str, str | None], after: Mapping[str, str]
) -> Restarts:
    """What must restart to read the files ``after`` (``files``) over ``before``.

    The exporter reads its script and the server's CA; MLflow reads the rest. So a refresh that
    changes the exporter's script only does not restart MLflow.
    """
    exporter = {settings.metrics_exporter_path, settings.tls_ca_path}
    server_before = {path: text for path, text in before.items() if path not in exporter}
    server_after = {path: text for path, text in after.items() if path not in exporter}
    return Restarts(
        server=rotation.restart_needed(
            server_before, server_after, read_only_to_bootstrap=READ_ONLY_TO_BOOTSTRAP
        ),
        exporter=any(before.get(path) != text for path, text in after.items() if path in exporter),
    )


class MLflowAPI:
    """The REST endpoints the charm needs, authenticated as one MLflow user."""

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        timeout: float = 10.0,
        ca: str | None = None,
    ):
        """``ca``: PEM, the CA an HTTPS server is verified against."""
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        self._client = JSONClient(
            base_url,
            {"Authorization": f"Basic {token}"},
            service="MLflow",
            timeout=timeout,
            ca=ca,
        )

    def is_healthy(self) -> bool:
        """Whether ``/health`` answers OK."""
        return self._client.is_healthy("/health")

    def get_user(self, username: str) -> dict | None:
        """The user, or None if it does not exist."""
        try:
            return self._call("GET", "/api/2.0/mlflow/users/get", {"username": username})["user"]
        except RESTError as error:
            if error.code == "RESOURCE_DOES_NOT_EXIST" or error.status == 404:
                return None
            raise

    def create_user(self, username: str, password: str) -> None:
        self._call(
            "POST", "/api/2.0/mlflow/users/create", {"username": username, "password": password}
        )

    def update_password(
        self, username: str, password: str, *, current_password: str | None = None
    ) -> None:
        """Set ``username``'s password; ``current_password``: when it is this client's own user.

        MLflow 3.17 asks a user changing its own password for the current one, as an admin
        changing another's does not.
        """
        body = {"username": username, "password": password}
        if current_password is not None:
            body["current_password"] = current_password
        self._call("PATCH", "/api/2.0/mlflow/users/update-password", body)

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
        found = self.get_experiment(name)
        return found["experiment_id"] if found else self.create_experiment(name, {})

    def get_experiment(self, name: str) -> dict | None:
        """The experiment ``name`` (id, tags, ...), or None if there is none."""
        try:
            found = self._call(
                "GET", "/api/2.0/mlflow/experiments/get-by-name", {"experiment_name": name}
            )
        except RESTError as error:
            if error.code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        return found["experiment"]

    def create_experiment(self, name: str, tags: dict[str, str]) -> str:
        """Create the experiment ``name`` with ``tags``; its id."""
        body = {"name": name, "tags": [{"key": k, "value": v} for k, v in tags.items()]}
        return self._call("POST", "/api/2.0/mlflow/experiments/create", body)["experiment_id"]

    def experiment_permission(self, experiment_id: str, username: str) -> str | None:
        """The permission granted to ``username`` on the experiment, or None (the default)."""
        listed = self._call(
            "GET", "/api/3.0/mlflow/users/permissions/list", {"username": username}
        )
        for row in listed.get("permissions", []):
            # Only the user's own grants (its `__user_<id>__` role), not an operator's roles.
            own = str(row.get("role_name", "")).startswith("__user_")
            if (
                own
                and row.get("resource_type") == "experiment"
                and str(row.get("resource_pattern")) == str(experiment_id)
            ):
                return row.get("permission")
        return None

    def grant_experiment_permission(
        self, experiment_id: str, username: str, permission: str
    ) -> None:
        """Give ``username`` exactly ``permission`` on the experiment, changing only what differs.

        A grant cannot be updated in place, and replacing it (revoke, then grant) leaves the
        user without it in between: so it is read first and replaced only when it differs.
        """
        current = self.experiment_permission(experiment_id, username)
        if current == permission:
            return
        grant = {
            "username": username,
            "resource_type": "experiment",
            "resource_id": experiment_id,
            "permission": permission,
        }
        if current is not None:
            self.revoke_experiment_permission(experiment_id, username)
        self._call("POST", "/api/3.0/mlflow/users/permissions/grant", grant)

    def revoke_experiment_permission(self, experiment_id: str, username: str) -> None:
        revoke = {
            "username": username,
            "resource_type": "experiment",
            "resource_id": experiment_id,
        }
        self._call("POST", "/api/3.0/mlflow/users/permissions/revoke", revoke)

    def get_model_version(self, name: str, version: str) -> dict | None:
        """The registered model version, or None if the model or version does not exist."""
        try:
            return self._call(
                "GET", "/api/2.0/mlflow/model-versions/get", {"name": name, "version": version}
            )["model_version"]
        except RESTError as error:
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
        return self._client.call(method, path, body)
