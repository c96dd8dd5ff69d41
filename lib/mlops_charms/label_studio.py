"""The Label Studio workload, substrate-neutral: what labelling-k8s and labelling share.

Nothing here knows about Juju, Pebble or systemd. The charm turns config, relations and secrets
into ``ServerSettings``; this module turns those into the server's command line, environment,
one-shot setup steps and the files it reads, tells whether the server is healthy, builds the
``mlops-workload labelling`` commands (and their environment) the charm runs as jobs, and reads
the projects' answer counts (one request) so the charm knows when they change. The substrate
adapters (a Pebble layer in labelling-k8s, a systemd unit in labelling) only wrap these.

The server is run the way the upstream image's ``label-studio-uwsgi`` entrypoint runs it:
``label-studio init`` (migrations and the admin user, idempotent) and then uWSGI serving
``core.wsgi``. Secrets are never in the command or the environment: they are in
``secrets.env`` (mode 0600), written in the substrate's syntax.

With a certificate (``ServerSettings.tls``) uWSGI's router serves HTTPS only, on the same
port, from certificate and key files beside ``secrets.env``; everything that calls Label
Studio here (the charm, its jobs, the metrics exporter, the readiness probes) verifies it with
the certificate's CA.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from mlops_charms import rotation, workload
from mlops_charms.backup import BackupPlan
from mlops_charms.client_ca import ClientCA, client_ca
from mlops_charms.rest import JSONClient, RESTError

if TYPE_CHECKING:
    from mlops_charms.tls import ServerTLS

SERVICE = "label-studio"
METRICS_SERVICE = "label-studio-metrics"
# The Label Studio the rock (rocks/labelling) and the machine's venv pin: the schema version
# the leader migrates a shared database to before any unit serves it.
VERSION = "1.23.2"
# The first migration of a large database takes minutes (a hook waits for it).
MIGRATE_TIMEOUT = 900.0
ADMIN_USERNAME = "admin@labelling.mlops.invalid"


@dataclass(frozen=True)
class Binaries:
    """Where the workload's programs are (the rock's paths by default, rocks/labelling)."""

    label_studio: str = "/opt/label-studio/bin/label-studio"
    uwsgi: str = "/opt/label-studio/bin/uwsgi"
    # Label Studio's Django project: uWSGI imports ``core.wsgi`` from here.
    app_dir: str = "/opt/label-studio/lib/python3.12/site-packages/label_studio"
    mlops_workload: str = "/opt/mlops/bin/mlops-workload"


ROCK = Binaries()


@dataclass(frozen=True)
class PostgreSQLDatabase:
    """Label Studio's PostgreSQL database; the password travels in ``secrets.env``."""

    host: str
    port: int
    name: str
    user: str
    password: str = field(repr=False)
    sslmode: str | None = None  # libpq's: verify-full with ``ca``, require with TLS alone
    ca: str | None = None


@dataclass(frozen=True)
class ServerSettings:
    """Everything the server's layer and files are derived from."""

    data_dir: str
    port: int
    admin_password: str = field(repr=False)
    admin_token: str = field(repr=False)
    secret_key: str = field(repr=False)
    processes: int = 1
    threads: int = 4
    metrics_port: int = 9103
    database: PostgreSQLDatabase | None = None
    bind_address: str = "0.0.0.0"  # noqa: S104 - reached through the pod's service or the host
    binaries: Binaries = field(default_factory=lambda: ROCK)
    tls: ServerTLS | None = field(default=None, repr=False)  # None: plain HTTP
    # Whether the server's start migrates the database (``label-studio init``): a unit's own
    # SQLite, or the leader's on PostgreSQL; the other units serve what the leader migrated.
    migrates: bool = True

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def tls_certificate_path(self) -> str:
        return f"{self.data_dir}/secrets/label-studio.crt"

    @property
    def tls_key_path(self) -> str:
        return f"{self.data_dir}/secrets/label-studio.key"

    @property
    def tls_ca_path(self) -> str:
        """The CA the workload's own clients verify Label Studio with (when it serves HTTPS)."""
        return f"{self.data_dir}/secrets/label-studio-ca.pem"

    @property
    def tls_files(self) -> tuple[str, ...]:
        """The files of HTTPS, the key first (removed when the server serves HTTP)."""
        return (self.tls_key_path, self.tls_certificate_path, self.tls_ca_path)

    @property
    def secrets_env_path(self) -> str:
        return f"{self.data_dir}/secrets/secrets.env"

    @property
    def postgresql_ca_path(self) -> str:
        return f"{self.data_dir}/secrets/postgresql-ca.pem"

    @property
    def media_root(self) -> str:
        """Where imported dataset versions' media live; Label Studio serves them from here."""
        return f"{self.data_dir}/media-root"

    @property
    def workspace_path(self) -> str:
        """The persistent working clone of the data registry used by imports and exports."""
        return f"{self.data_dir}/registry-workspace"

    @property
    def local_url(self) -> str:
        # The certificate names "localhost" (an address would be a SAN of every unit's).
        host = "localhost" if self.tls else "127.0.0.1"
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def jobs_dir(self) -> str:
        return f"{self.data_dir}/jobs"

    @property
    def agreement_path(self) -> str:
        """Each project's last measure of agreement (``mlops_charms.agreement``)."""
        return f"{self.data_dir}/agreement.json"

    @property
    def agreement_gate_path(self) -> str:
        """The export gate's threshold (empty: no gate), written for the metrics exporter."""
        return f"{self.data_dir}/agreement-gate"

    @property
    def health_url(self) -> str:
        return f"{self.local_url}/health"


def server_command(settings: ServerSettings) -> list[str]:
    """The uWSGI command line (no secrets in it); options follow upstream's uwsgi.ini.

    Plus HTTP/1.1 keep-alive in uWSGI's HTTP router. Without it the router closes every
    connection after one response without saying so (no ``Connection: close``), so a client
    that pools connections, as the official SDK does, sends its next request on a closed
    socket and gets "Server disconnected" or "Connection reset by peer". With it, a
    connection stays open between requests, and the router adds ``Connection: close`` to a
    response it cannot keep the connection open after (one without a length).
    """
    address = f"{settings.bind_address}:{settings.port}"
    # uWSGI's router serves HTTPS itself (built with OpenSSL): HTTPS only, nothing on plain HTTP.
    listen = (
        ["--https", f"{address},{settings.tls_certificate_path},{settings.tls_key_path}"]
        if settings.tls
        else ["--http", address]
    )
    return [
        settings.binaries.uwsgi,
        "--master",
        *listen,
        # Idle connections close after 75 s: later than pooling clients drop them (httpx,
        # the SDK's, after 5 s), so a client does not reuse one just as the server closes it.
        "--http-keepalive=75",
        "--chdir",
        settings.binaries.app_dir,
        "--module",
        "core.wsgi:application",
        "--processes",
        str(settings.processes),
        "--threads",
        str(settings.threads),
        "--need-app",
        "--lazy-apps",
        "--single-interpreter",
        "--enable-threads",
        "--die-on-term",
        # A worker still busy 20 s into a stop is killed by uWSGI itself (its default waits
        # 60 s): inside the machine unit's TimeoutStopSec (30 s), past which systemd kills
        # every process and fails the unit.
        "--worker-reload-mercy",
        "20",
        "--vacuum",
        "--buffer-size",
        "65535",
        "--http-timeout",
        "300",
        "--harakiri",
        "120",
        "--post-buffering",
        "4096",
        "--ignore-sigpipe",
        "--ignore-write-errors",
        "--disable-write-exception",
        "--disable-logging",
        "--log-5xx",
    ]


def environment(settings: ServerSettings) -> dict[str, str]:
    """The server's environment, without secrets."""
    env = {
        "DJANGO_SETTINGS_MODULE": "core.settings.label_studio",
        "LABEL_STUDIO_BASE_DATA_DIR": settings.data_dir,
        "LABEL_STUDIO_USERNAME": ADMIN_USERNAME,
        # The admin's fixed token works only as a legacy token.
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        # Otherwise the server asks PyPI for the latest version on every start.
        "LATEST_VERSION_CHECK": "false",
        # Nothing phones home. Label Studio reports errors to its vendor's Sentry by default
        # (with personal data), sends usage analytics from the server (tele.labelstud.io),
        # and its pages load Sentry and Google Analytics in the browser.
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
        "COLLECT_ANALYTICS": "false",
        "DO_NOT_TRACK": "1",
        "LOCAL_FILES_SERVING_ENABLED": "true",
        "LOCAL_FILES_DOCUMENT_ROOT": settings.media_root,
        "APP_WEBSERVER": "uwsgi",
    }
    if settings.database:
        env.update(
            {
                "DJANGO_DB": "default",
                "POSTGRE_HOST": settings.database.host,
                "POSTGRE_PORT": str(settings.database.port),
                "POSTGRE_NAME": settings.database.name,
                "POSTGRE_USER": settings.database.user,
            }
        )
        if settings.database.sslmode:
            env["PGSSLMODE"] = settings.database.sslmode  # libpq, under psycopg2
        if settings.database.ca:
            env["PGSSLROOTCERT"] = settings.postgresql_ca_path
    return env


def setup_steps(settings: ServerSettings) -> list[list[str]]:
    """The one-shot commands run, in order, before each start of the server.

    ``label-studio init`` applies migrations and creates the admin once; it is idempotent.
    Every ``label-studio`` command migrates first: a unit that must not migrate runs none.
    """
    steps = [["mkdir", "-p", settings.media_root]]
    if settings.migrates:
        steps.append([settings.binaries.label_studio, "init", "--quiet"])
    return steps


def database_mark(settings: ServerSettings) -> str | None:
    """What the leader records once it migrated the shared database: version and database.

    None with SQLite: each unit's own database is migrated by its own start.
    """
    database = settings.database
    if database is None:
        return None
    return f"{VERSION} {database.host}:{database.port}/{database.name}"


# Run by Label Studio's interpreter in its Django project: every migration of this release,
# each in its own transaction (PostgreSQL), so a failing one is rolled back and the ones
# before it stay applied, as the previous release's schema plus complete steps.
_MIGRATE = """\
import os
import tempfile

# The database's CA, if any, from the environment: the hook migrates before the server's
# files are written.
if os.environ.get("MLOPS_POSTGRESQL_CA"):
    with tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False) as ca:
        ca.write(os.environ["MLOPS_POSTGRESQL_CA"])
    os.environ["PGSSLROOTCERT"] = ca.name

import django

django.setup()
from django.core.management import call_command

call_command("migrate", interactive=False, verbosity=0)
"""


def migrate_command(settings: ServerSettings) -> list[str]:
    """The command that migrates the database to this release (run in ``app_dir``)."""
    python = str(PurePosixPath(settings.binaries.label_studio).parent / "python")
    return [python, "-c", _MIGRATE]


def migrate_environment(settings: ServerSettings) -> dict[str, str]:
    """The environment of ``migrate_command``: the server's, and the secrets it needs."""
    environment_ = {**environment(settings), "SECRET_KEY": settings.secret_key}
    if settings.database:
        environment_["POSTGRE_PASSWORD"] = settings.database.password
        if settings.database.ca:
            environment_.pop("PGSSLROOTCERT", None)
            environment_["MLOPS_POSTGRESQL_CA"] = settings.database.ca
    return environment_


def files(
    settings: ServerSettings,
    render_secrets: Callable[[Mapping[str, str]], str] = workload.secrets_env,
) -> dict[str, str]:
    """The files the server reads, by path: all of them mode 0600.

    ``render_secrets`` writes ``secrets.env`` in the substrate's syntax: shell ``export`` lines
    for Pebble's sourcing command, ``NAME='value'`` lines for a systemd ``EnvironmentFile``.
    """
    secret_env = {
        "LABEL_STUDIO_PASSWORD": settings.admin_password,
        "LABEL_STUDIO_USER_TOKEN": settings.admin_token,
        # Shared by every unit, so sessions survive a reschedule or a scale-out.
        "SECRET_KEY": settings.secret_key,
    }
    if settings.database:
        secret_env["POSTGRE_PASSWORD"] = settings.database.password
    rendered = {settings.secrets_env_path: render_secrets(secret_env)}
    if settings.database and settings.database.ca:
        rendered[settings.postgresql_ca_path] = settings.database.ca
    if settings.tls:
        rendered[settings.tls_certificate_path] = settings.tls.certificate
        rendered[settings.tls_key_path] = settings.tls.private_key
        rendered[settings.tls_ca_path] = settings.tls.ca
    return rendered


# Read only by ``label-studio init`` to create the admin (it leaves an existing one as it is):
# rotated through ``set_admin_credentials_command``, they are written without a restart.
READ_ONLY_TO_BOOTSTRAP = ("LABEL_STUDIO_PASSWORD", "LABEL_STUDIO_USER_TOKEN")


def restart_needed(before: Mapping[str, str | None], after: Mapping[str, str]) -> bool:
    """Whether the server must restart to read the files ``after`` over ``before``."""
    return rotation.restart_needed(before, after, read_only_to_bootstrap=READ_ONLY_TO_BOOTSTRAP)


# Run by Label Studio's interpreter in its Django project: the admin's password and legacy
# token become those of the environment (no secret on the command line). The token table is
# read on every request, so the old token is refused from the next one on.
_SET_ADMIN_CREDENTIALS = """\
import os

import django

django.setup()
from rest_framework.authtoken.models import Token
from users.models import User

user = User.objects.get(email=os.environ["MLOPS_ADMIN_USERNAME"])
user.set_password(os.environ["MLOPS_ADMIN_PASSWORD"])
user.save()
Token.objects.filter(user=user).delete()
Token.objects.create(user=user, key=os.environ["MLOPS_ADMIN_TOKEN"])
"""


def set_admin_credentials_command(settings: ServerSettings) -> list[str]:
    """The command that gives the admin ``settings``' password and token, in the database.

    Run in ``settings.binaries.app_dir`` with ``set_admin_credentials_environment``, as the
    user the server runs as, while the server runs (a few seconds: Django starts).
    """
    python = str(PurePosixPath(settings.binaries.label_studio).parent / "python")
    return [python, "-c", _SET_ADMIN_CREDENTIALS]


def set_admin_credentials_environment(settings: ServerSettings) -> dict[str, str]:
    """The environment of ``set_admin_credentials_command``: the server's, and the secrets."""
    environment_ = {
        **environment(settings),
        "SECRET_KEY": settings.secret_key,
        "MLOPS_ADMIN_USERNAME": ADMIN_USERNAME,
        "MLOPS_ADMIN_PASSWORD": settings.admin_password,
        "MLOPS_ADMIN_TOKEN": settings.admin_token,
    }
    if settings.database:
        environment_["POSTGRE_PASSWORD"] = settings.database.password
    return environment_


def metrics_exporter_command(settings: ServerSettings) -> list[str]:
    """The metrics exporter's command (``mlops-workload metrics labelling``).

    It reads Label Studio's counts with the admin's token, from ``LABEL_STUDIO_USER_TOKEN``
    in ``secrets.env``: a substrate runs it with that file sourced, as the server.
    """
    return [
        settings.binaries.mlops_workload,
        "metrics",
        "labelling",
        "--port",
        str(settings.metrics_port),
        "--data-dir",
        settings.data_dir,
        "--jobs-dir",
        settings.jobs_dir,
        "--label-studio-url",
        settings.local_url,
        "--agreement-file",
        settings.agreement_path,
        "--gate-threshold-file",
        settings.agreement_gate_path,
        # Over HTTPS, Label Studio verified with its CA.
        *(("--ca-file", settings.tls_ca_path) if settings.tls else ()),
    ]


def ready_probe_ca(settings: ServerSettings) -> str | None:
    """The CA file a readiness probe in the workload verifies Label Studio with, if HTTPS."""
    return settings.tls_ca_path if settings.tls else None


def is_healthy(settings: ServerSettings, timeout: float = 5.0) -> bool:
    """Whether Label Studio's ``/health`` answers OK (verified with its CA over HTTPS)."""
    return _client(settings, {}, timeout=timeout).is_healthy()


def _client(
    settings: ServerSettings, headers: dict[str, str], timeout: float = 10.0
) -> JSONClient:
    """A client of this unit's Label Studio, from the charm (the CA in memory, not a file)."""
    return JSONClient(
        settings.local_url,
        headers,
        service="Label Studio",
        timeout=timeout,
        ca=settings.tls.ca if settings.tls else None,
    )


# The line ``mlops-workload labelling import-version`` writes into the description of a project
# it feeds from a dataset version (mlops_workload.labelling.operations.METADATA_PREFIX).
IMPORTED_MARK = "mlops-labelling: "
# Projects one listing reads (Label Studio's largest page), newest first.
PROJECTS_LISTED = 100


@dataclass(frozen=True)
class ProjectCounts:
    """A project's answers as Label Studio counts them: every answer, and the skips among them."""

    title: str
    imported: bool  # fed from a dataset version by import-version (or its re-label sibling)
    annotations: int
    skipped_annotations: int


def project_counts(settings: ServerSettings) -> list[ProjectCounts]:
    """The newest ``PROJECTS_LISTED`` projects' answer counts, in one request.

    Raises ``RESTError`` (one line) when Label Studio refuses or cannot be reached.
    """
    client = _client(settings, {"Authorization": f"Token {settings.admin_token}"})
    answer = client.call(
        "GET",
        "/api/projects",
        {
            "page_size": PROJECTS_LISTED,
            # The fields answered, and the only counts Label Studio computes for each project.
            "include": "title,description,total_annotations_number,skipped_annotations_number",
        },
    )
    try:
        return [_project_counts(project) for project in answer.get("results") or []]
    except (AttributeError, KeyError, TypeError, ValueError):
        raise RESTError("Label Studio listed projects in an unknown form") from None


def _project_counts(project: dict) -> ProjectCounts:
    skipped = int(project.get("skipped_annotations_number") or 0)
    description = str(project.get("description") or "")
    return ProjectCounts(
        title=str(project["title"]),
        imported=any(line.startswith(IMPORTED_MARK) for line in description.splitlines()),
        # Label Studio's total leaves the skips out.
        annotations=int(project.get("total_annotations_number") or 0) + skipped,
        skipped_annotations=skipped,
    )


@dataclass(frozen=True)
class RegistryAccess:
    """How the workload reaches the data registry, with write access (from ``mlops_dataset``)."""

    git_url: str
    username: str = field(repr=False)
    password: str = field(repr=False)
    dvc_endpoint: str | None = None
    s3_access_key: str = field(default="", repr=False)
    s3_secret_key: str = field(default="", repr=False)
    ca: str | None = field(default=None, repr=False)  # PEM, when the registry serves HTTPS


def registry_ca(settings: ServerSettings, registry: RegistryAccess) -> ClientCA:
    """The registry's CA as the runs read it: a file in the data folder, and its variables."""
    return client_ca(settings.data_dir, registry=registry.ca)


def workload_environment(
    settings: ServerSettings, registry: RegistryAccess | None
) -> dict[str, str]:
    """The environment of ``mlops-workload labelling`` runs, credentials included.

    Where Label Studio (and the registry, when the command needs it) are; it goes to the
    exec, never to the plan.
    """
    env = {
        "HOME": settings.data_dir,
        # Nothing phones home: DVC's usage analytics, and any tool honouring DO_NOT_TRACK.
        "DVC_NO_ANALYTICS": "1",
        "DO_NOT_TRACK": "1",
        "LABEL_STUDIO_URL": settings.local_url,
        "LABEL_STUDIO_API_KEY": settings.admin_token,
        "MLOPS_LABELLING_MEDIA_ROOT": settings.media_root,
    }
    if settings.tls:
        # Its own variable: the job's other clients (git, DVC) verify the registry with its CA.
        env["LABEL_STUDIO_CA_FILE"] = settings.tls_ca_path
    if registry is None:
        return env
    env.update(
        {
            "MLOPS_REGISTRY_WORKSPACE": settings.workspace_path,
            "MLOPS_REGISTRY_URL": registry.git_url,
            "MLOPS_REGISTRY_USERNAME": registry.username,
            "MLOPS_REGISTRY_PASSWORD": registry.password,
            "AWS_ACCESS_KEY_ID": registry.s3_access_key,
            "AWS_SECRET_ACCESS_KEY": registry.s3_secret_key,
        }
    )
    if registry.dvc_endpoint:
        env["MLOPS_DVC_ENDPOINT_URL"] = registry.dvc_endpoint
    env.update(registry_ca(settings, registry).environment)
    return env


def labelling_command(settings: ServerSettings, command: str, *args: str) -> list[str]:
    """The ``mlops-workload labelling <command>`` command line the charm execs."""
    return [settings.binaries.mlops_workload, "labelling", command, *args]


# --- backups ---------------------------------------------------------------------------------

BACKUP_SERVICE = "labelling"
DATABASE_FILE = "label_studio.sqlite3"  # Label Studio's SQLite database in its data folder
MEDIA_DIR = "media"  # its uploads and exports (MEDIA_ROOT)


def backup_plan(settings: ServerSettings) -> BackupPlan:
    """What a backup of Label Studio holds (``mlops_charms.backup``); kept on the storage.

    The SQLite database (copied consistently while Label Studio runs) unless PostgreSQL holds
    the data, Label Studio's media (uploads, exports), the imported versions' media the server
    serves, and the stack's agreement record. Left out: the secrets (the charm writes them
    again), the registry's working clone (cloned again on the next import) and the jobs.
    """
    data_dir = settings.data_dir
    members = [
        f"{MEDIA_DIR}:optional",
        f"{settings.media_root.removeprefix(data_dir + '/')}:optional",
        "agreement.json:optional",
    ]
    excluded = [
        "secrets: rendered by the charm from its secrets",
        "registry-workspace, jobs: derived or transient",
    ]
    if settings.database is None:
        members.insert(0, f"{DATABASE_FILE}:sqlite,optional")
    else:
        excluded.append(
            f"the PostgreSQL database {settings.database.name} on {settings.database.host}: "
            "back it up with its own charm"
        )
    backups_dir = f"{data_dir}/backups"
    return BackupPlan(
        service=BACKUP_SERVICE,
        root=data_dir,
        members=tuple(members),
        backups_dir=backups_dir,
        destination=backups_dir,
        excluded=tuple(excluded),
        reset=(settings.workspace_path.removeprefix(data_dir + "/"),),
    )


# Run after a restore by Label Studio's own Python: migrate a database from an older release,
# then give the admin this deployment's password and API token (a restored database has the
# admin of the deployment that made the backup; ``label-studio init`` leaves an existing
# admin as it is). Reads everything from the environment; prints nothing secret.
_ADOPT_ADMIN = """\
import os
import django
django.setup()
from django.core.management import call_command
call_command("migrate", interactive=False, verbosity=0)
from rest_framework.authtoken.models import Token
from users.models import User
admin = User.objects.filter(email=os.environ["LABEL_STUDIO_USERNAME"]).first()
if admin is not None:
    admin.set_password(os.environ["LABEL_STUDIO_PASSWORD"])
    admin.save()
    Token.objects.filter(user=admin).update(key=os.environ["LABEL_STUDIO_USER_TOKEN"])
print("admin adopted" if admin is not None else "no admin in the restored database")
"""


def restore_steps(settings: ServerSettings) -> tuple[tuple[list[str], str], ...]:
    """What a restore job runs after the swap: migrations, this deployment's admin."""
    python = settings.binaries.label_studio.rsplit("/", 1)[0] + "/python"
    return (([python, "-c", _ADOPT_ADMIN], settings.binaries.app_dir),)


def restore_environment(settings: ServerSettings) -> dict[str, str]:
    """The restore job's environment (private: the job's env file): Label Studio's own."""
    secret_env = {
        "LABEL_STUDIO_PASSWORD": settings.admin_password,
        "LABEL_STUDIO_USER_TOKEN": settings.admin_token,
        "SECRET_KEY": settings.secret_key,
    }
    if settings.database:
        secret_env["POSTGRE_PASSWORD"] = settings.database.password
    return {**environment(settings), **secret_env, "HOME": settings.data_dir}
