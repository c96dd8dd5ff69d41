"""The DVC data registry workload: git smart HTTP, the S3 front of the DVC remote, their health.

The core of the registry, shared by data-versioning-k8s (Pebble) and data-versioning (systemd);
nothing here knows about Juju or the substrate. The charm turns config, relations and secrets
into ``RegistrySettings``; this module turns those into the files the servers read, the servers
(``services``: command, user) a substrate adapter runs as Pebble services or systemd units, the
bootstrap script, and the jobs (``JobSpec``) that cut versions, validate pushed ones and move
the remote's objects.

- git: ``git http-backend`` behind Apache httpd (prefork + mod_cgi) with HTTP basic auth.
  Every registry user may fetch; only users in the ``writers`` group may push (a reader's
  push gets 403, so git does not discard the reader's stored credentials). An ``update`` hook
  refuses any change to an existing tag: versions are immutable.
- The DVC remote is always the registry's own S3 endpoint, ``s3://dvc`` on ``s3-port``:
  Apache sends reads (GET, HEAD) to a read-only ``rclone serve s3`` that knows every user's
  keys, and writes to a read-write one that knows only the writers' keys; a reader's write
  gets S3's ``AccessDenied``. Both serve the unit's storage, or an external bucket (the
  ``s3`` relation) through rclone, so no consumer ever holds the external bucket's keys and
  the remote consumers use never changes when the objects move.
- A metrics exporter (``mlops-workload metrics registry``) runs beside them on ``metrics-port``:
  Apache's ``mod_status`` (loopback only), each rclone server's own metrics (a unix socket),
  the versions, sizes, storage and jobs (``mlops_charms.registry_observability``).
- A git ``post-receive`` hook tells the charm when tags are pushed (``settings.notify``: a
  Pebble notice on Kubernetes, a systemd path unit on a machine); the charm validates the new
  versions in a job.

Secrets never appear in a Pebble plan, a unit file or a command line: passwords are stored only
as bcrypt hashes, and S3 keys travel in ``s3.env`` (mode 0600) sourced by the services' commands.

HTTPS (``settings.tls``, from the ``certificates`` relation): Apache (mod_ssl) serves both the git
port and the S3 front over TLS only, with the certificate and key in ``conf`` (mode 0600). The
rclone servers stay plain HTTP: they listen on 127.0.0.1 only, behind the S3 front, and the jobs
reach the read-write one there. The exporter reads mod_status over ``https://localhost``,
verifying with the CA.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from mlops_charms import workload
from mlops_charms.backup import BackupPlan, s3_destination
from mlops_charms.jobs import JobSpec

if TYPE_CHECKING:
    # Only its type: the registry's core does not need the tls-certificates library.
    from mlops_charms.tls import ServerTLS

GIT_SERVICE = "git-http"
S3_SERVICE = "s3"
S3_READ_ONLY_SERVICE = "s3-read-only"
METRICS_SERVICE = "metrics"
NOTICE_KEY = "mlops-stack.dev/registry/tags-pushed"
REPOSITORY_NAME = "registry.git"
REMOTE_NAME = "storage"
# The bucket consumers see, whatever holds the objects (the unit's storage or external S3).
DVC_BUCKET = "dvc"
WRITERS_GROUP = "writers"
STORAGE_TARGET = "the unit's storage"  # where a move of the objects goes when not a bucket
NO_ANALYTICS = {"DVC_NO_ANALYTICS": "1", "DO_NOT_TRACK": "1"}
# Modules Apache loads (mod_unixd and mod_log_config are built into Debian's and Ubuntu's
# binary); prefork + mod_cgi keeps one CGI model and no cgid socket.
_APACHE_MODULES = (
    ("mpm_prefork_module", "mod_mpm_prefork.so"),
    ("authz_core_module", "mod_authz_core.so"),
    ("authz_host_module", "mod_authz_host.so"),
    ("authz_user_module", "mod_authz_user.so"),
    ("authz_groupfile_module", "mod_authz_groupfile.so"),
    ("authn_core_module", "mod_authn_core.so"),
    ("authn_file_module", "mod_authn_file.so"),
    ("auth_basic_module", "mod_auth_basic.so"),
    ("alias_module", "mod_alias.so"),
    ("cgi_module", "mod_cgi.so"),
    ("env_module", "mod_env.so"),
    ("mime_module", "mod_mime.so"),
    ("rewrite_module", "mod_rewrite.so"),
    ("proxy_module", "mod_proxy.so"),
    ("proxy_http_module", "mod_proxy_http.so"),
    ("status_module", "mod_status.so"),
)
# Only with a certificate: mod_ssl, and the session cache it wants (apache2-bin ships both).
_APACHE_TLS_MODULES = (
    ("socache_shmcb_module", "mod_socache_shmcb.so"),
    ("ssl_module", "mod_ssl.so"),
)
_BCRYPT_ALPHABET = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_ACCESS_DENIED = """<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>AccessDenied</Code><Message>Access Denied: these credentials may only read \
the DVC remote</Message></Error>
"""


@dataclass(frozen=True)
class Credential:
    """A registry user: git basic auth, and its own S3 key pair for the DVC remote."""

    username: str
    password: str = field(repr=False)
    access_key: str = ""
    secret_key: str = field(default="", repr=False)
    write: bool = False


@dataclass(frozen=True)
class ExternalBucket:
    """An external S3 bucket that holds the DVC remote's objects (from the ``s3`` relation)."""

    bucket: str
    path: str
    endpoint: str | None
    region: str | None
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    ca_chain: str | None = field(default=None, repr=False)
    path_style: bool | None = None

    @property
    def location(self) -> str:
        """Where the objects are: two buckets with the same location hold the same objects."""
        path = self.path.strip("/")
        return f"{self.endpoint or 's3'}/{self.bucket}{'/' + path if path else ''}"

    def rclone_remote(self, name: str) -> dict[str, str]:
        """An rclone remote ``name`` for this bucket, as environment variables."""
        prefix = f"RCLONE_CONFIG_{name.upper()}_"
        variables = {
            "TYPE": "s3",
            "PROVIDER": "Other" if self.endpoint else "AWS",
            "ACCESS_KEY_ID": self.access_key,
            "SECRET_ACCESS_KEY": self.secret_key,
        }
        if self.endpoint:
            variables["ENDPOINT"] = self.endpoint
        if self.region:
            variables["REGION"] = self.region
        if self.path_style is not None:
            variables["FORCE_PATH_STYLE"] = "true" if self.path_style else "false"
        return {prefix + key: value for key, value in variables.items()}

    def rclone_path(self, name: str) -> str:
        path = self.path.strip("/")
        return f"{name}:{self.bucket}{'/' + path if path else ''}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ExternalBucket | None:
        """The bucket recorded by ``to_json``; None when the text is not one."""
        try:
            return cls(**json.loads(text))
        except (TypeError, ValueError):
            return None


@dataclass(frozen=True)
class Binaries:
    """Where the workload's programs are: by default, in the rock (rocks/data-registry)."""

    apache: str = "/usr/sbin/apache2"
    apache_modules: str = "/usr/lib/apache2/modules"
    git_http_backend: str = "/usr/lib/git-core/git-http-backend"
    rclone: str = "/bin/rclone"
    dvc: str = "/bin/dvc"
    mlops_workload: str = "/bin/mlops-workload"


ROCK = Binaries()


@dataclass(frozen=True)
class RegistrySettings:
    """Everything the registry's files, servers and jobs are derived from."""

    state_dir: str
    public_host: str
    users: tuple[Credential, ...]
    git_port: int = 8080
    s3_port: int = 9000
    metrics_port: int = 9102
    bind_address: str = ""
    # The bucket the services serve now; None: the unit's storage.
    backend: ExternalBucket | None = None
    # PEM certificates rclone trusts for external buckets (a private CA), if any.
    trusted_ca: str | None = field(default=None, repr=False)
    service_user: str | None = None
    service_group: str | None = None
    binaries: Binaries = field(default_factory=lambda: ROCK)
    # What the post-receive hook runs, with ``tags=v1 v2`` appended, when tags are pushed;
    # empty: the substrate watches the repository's tags itself.
    tags_notify: tuple[str, ...] = ()
    # The unit's certificate: Apache serves HTTPS only; None: plain HTTP.
    tls: ServerTLS | None = field(default=None, repr=False)

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def s3_write_port(self) -> int:
        return self.s3_port + 1

    @property
    def s3_read_port(self) -> int:
        return self.s3_port + 2

    @property
    def repository_path(self) -> str:
        return f"{self.state_dir}/git/{REPOSITORY_NAME}"

    @property
    def workspace_path(self) -> str:
        # In a folder of its own: the workspace's lock file sits next to it.
        return f"{self.state_dir}/workspace/registry"

    @property
    def s3_root(self) -> str:
        """The embedded remote's root: one folder per bucket, ``dvc`` holding the objects."""
        return f"{self.state_dir}/s3"

    @property
    def conf_dir(self) -> str:
        return f"{self.state_dir}/conf"

    @property
    def run_dir(self) -> str:
        return f"{self.state_dir}/run"

    @property
    def jobs_dir(self) -> str:
        return f"{self.state_dir}/jobs"

    @property
    def backups_dir(self) -> str:
        """Backups kept on the unit's storage (when the DVC remote is not a bucket)."""
        return f"{self.state_dir}/backups"

    @property
    def home_dir(self) -> str:
        return f"{self.state_dir}/home"

    @property
    def ca_file(self) -> str:
        return f"{self.conf_dir}/s3-ca.pem"

    @property
    def tls_certificate_file(self) -> str:
        return f"{self.conf_dir}/tls.crt"

    @property
    def tls_key_file(self) -> str:
        return f"{self.conf_dir}/tls.key"

    @property
    def tls_ca_file(self) -> str:
        """The CA of the registry's own certificate: what the exporter verifies Apache with."""
        return f"{self.conf_dir}/tls-ca.pem"

    @property
    def tls_files(self) -> tuple[str, ...]:
        """The files of HTTPS, the key first (removed when the registry serves HTTP)."""
        return (self.tls_key_file, self.tls_certificate_file, self.tls_ca_file)

    @property
    def local_git_base(self) -> str:
        """Apache's git port as the workload calls it (``localhost``: in the certificate)."""
        host = "localhost" if self.tls else "127.0.0.1"
        return f"{self.scheme}://{host}:{self.git_port}"

    @property
    def directories(self) -> tuple[str, ...]:
        """The folders the service user owns, made by the charm (the mount root may be root's)."""
        return (
            self.conf_dir,
            f"{self.conf_dir}/htdocs",
            f"{self.conf_dir}/hooks",
            f"{self.state_dir}/git",
            self.run_dir,
            f"{self.s3_root}/{DVC_BUCKET}",
            f"{self.state_dir}/workspace",
            self.jobs_dir,
            self.home_dir,
            self.backups_dir,
        )

    @property
    def pinned_version_path(self) -> str:
        """The pinned version (empty: none), written by the leader for the metrics exporter."""
        return f"{self.conf_dir}/pinned-version"

    def rclone_metrics_socket(self, read_only: bool) -> str:
        """Where an S3 server serves rclone's own metrics (a unix socket: no port to own)."""
        return f"{self.run_dir}/rclone-{'ro' if read_only else 'rw'}.metrics.sock"

    @property
    def git_url(self) -> str:
        """The registry's git URL as consumers use it."""
        return f"{self.scheme}://{self.public_host}:{self.git_port}/{REPOSITORY_NAME}"

    @property
    def remote_url(self) -> str:
        """The DVC remote's URL, the same for every consumer and every backend."""
        return f"s3://{DVC_BUCKET}"

    @property
    def remote_endpoint(self) -> str:
        """The DVC remote's S3 endpoint as consumers reach it."""
        return f"{self.scheme}://{self.public_host}:{self.s3_port}"

    @property
    def local_endpoint(self) -> str:
        """The S3 endpoint the workload itself writes to (the read-write server)."""
        return f"http://127.0.0.1:{self.s3_write_port}"

    @property
    def writers(self) -> tuple[Credential, ...]:
        return tuple(user for user in self.users if user.write)


def _listen(settings: RegistrySettings, port: int) -> str:
    return f"{settings.bind_address}:{port}" if settings.bind_address else str(port)


# --- files -----------------------------------------------------------------------------------


def users_fingerprint(users: tuple[Credential, ...]) -> str:
    """A digest of who may log in, to render the (slow) bcrypt file only when users change."""
    digest = hashlib.sha256()
    for user in sorted(users, key=lambda u: u.username):
        digest.update(f"{user.username}\0{user.password}\0{user.write}\0".encode())
    return digest.hexdigest()


def _bcrypt_salt(username: str, password: str) -> bytes:
    # Derived from the credential so that rendering is deterministic: unchanged users give
    # an unchanged file.
    digest = hashlib.sha256(f"mlops-registry\0{username}\0{password}".encode()).digest()
    chars = "".join(_BCRYPT_ALPHABET[byte % 64] for byte in digest[:21])
    return f"$2y$08${chars}e".encode()


def htpasswd(users: tuple[Credential, ...]) -> str:
    """The htpasswd file: one bcrypt hash per user (about 15 ms each)."""
    import bcrypt  # only the hooks that write the file pay for it

    lines = []
    for user in users:
        hashed = bcrypt.hashpw(user.password.encode(), _bcrypt_salt(user.username, user.password))
        lines.append(f"{user.username}:{hashed.decode()}\n")
    return "".join(lines)


def htgroup(users: tuple[Credential, ...]) -> str:
    """The group file: who may push."""
    writers = " ".join(user.username for user in users if user.write)
    return f"{WRITERS_GROUP}: {writers}\n"


def httpd_conf(settings: RegistrySettings) -> str:
    """Apache's whole configuration: git http-backend with basic auth, the S3 front, health."""
    # Guarded: a module built into the binary cannot be loaded again.
    modules = "\n".join(
        f"<IfModule !{name}>\n    LoadModule {name} {settings.binaries.apache_modules}/{so}\n"
        "</IfModule>"
        for name, so in (*_APACHE_MODULES, *(_APACHE_TLS_MODULES if settings.tls else ()))
    )
    conf, run = settings.conf_dir, settings.run_dir
    receive_pack = (
        '"%{QUERY_STRING} =~ /service=git-receive-pack/ '
        '|| %{REQUEST_URI} =~ m#/git-receive-pack$#"'
    )
    return f"""# Rendered by the data-versioning charm; changes are overwritten.
ServerRoot {run}
{modules}
Listen {_listen(settings, settings.git_port)}
ServerName {settings.public_host}
PidFile {run}/httpd.pid
Mutex file:{run} default
TypesConfig /dev/null
# Piped through cat, which inherits the service manager's pipes (Pebble's, or systemd's
# journal): a non-root Apache cannot reopen them.
ErrorLog "|/bin/cat"
LogFormat "%h %u \\"%r\\" %>s %b" registry
CustomLog "|/bin/cat" registry
StartServers 2
MaxRequestWorkers 32
Timeout 600
DocumentRoot {conf}/htdocs
{_tls_server(settings)}
<Directory />
    AllowOverride None
    Require all denied
</Directory>

Alias /healthz {conf}/htdocs/healthz
<Location /healthz>
    Require all granted
</Location>

# Apache's counters for the metrics exporter, which runs next to it: loopback only.
ExtendedStatus On
<Location /server-status>
    SetHandler server-status
    Require ip 127.0.0.1 ::1
</Location>

SetEnv GIT_PROJECT_ROOT {settings.state_dir}/git
SetEnv GIT_HTTP_EXPORT_ALL 1
ScriptAlias /{REPOSITORY_NAME}/ {settings.binaries.git_http_backend}/{REPOSITORY_NAME}/
<Directory {settings.binaries.git_http_backend.rsplit("/", 1)[0]}>
    Options +ExecCGI
    Require all granted
</Directory>
<Location /{REPOSITORY_NAME}/>
    AuthType Basic
    AuthName "data registry"
    AuthBasicProvider file
    AuthUserFile {conf}/htpasswd
    AuthGroupFile {conf}/htgroup
    # A known user who may not push gets 403, not a new password prompt.
    AuthzSendForbiddenOnFailure On
    <If {receive_pack}>
        Require group {WRITERS_GROUP}
    </If>
    <Else>
        Require valid-user
    </Else>
</Location>
{_s3_front(settings)}"""


def _tls_directives(settings: RegistrySettings, indent: str = "") -> str:
    """A server's (or virtual host's) HTTPS: the certificate and key files; none without TLS."""
    if settings.tls is None:
        return ""
    lines = (
        "SSLEngine on",
        f"SSLCertificateFile {settings.tls_certificate_file}",
        f"SSLCertificateKeyFile {settings.tls_key_file}",
    )
    return "".join(f"{indent}{line}\n" for line in lines)


def _tls_server(settings: RegistrySettings) -> str:
    """The main server's HTTPS (the git port) and what mod_ssl needs once per server."""
    if settings.tls is None:
        return ""
    return f"""# HTTPS only: the certificate from the certificates relation.
SSLSessionCache shmcb:{settings.run_dir}/ssl-sessions(512000)
SSLProtocol -all +TLSv1.2 +TLSv1.3
{_tls_directives(settings)}"""


def _s3_front(settings: RegistrySettings) -> str:
    """The DVC remote's endpoint: reads to the read-only server, writes to the writers' one."""
    readers = [u.access_key for u in settings.users if not u.write and u.access_key]
    refuse_readers = (
        f"""    RewriteCond %{{HTTP:Authorization}} "Credential=({"|".join(readers)})/"
    RewriteCond %{{REQUEST_METHOD}} "!^(GET|HEAD)$"
    RewriteRule ^ - [F]
"""
        if readers
        else ""
    )
    # The raw path (THE_REQUEST) and the raw query string reach rclone unchanged: the
    # request's S3 signature covers them.
    raw_path = 'RewriteCond %{THE_REQUEST} "^\\S+ (/[^?\\s]*)"'
    return f"""
Listen {_listen(settings, settings.s3_port)}
<VirtualHost *:{settings.s3_port}>
{_tls_directives(settings, "    ")}    ProxyPreserveHost On
    ProxyRequests Off
    AllowEncodedSlashes NoDecode
    Alias /.registry/access-denied.xml {settings.conf_dir}/htdocs/access-denied.xml
    <Location /.registry/>
        ForceType application/xml
        Require all granted
    </Location>
    <Location />
        Require all granted
    </Location>
    # A reader's write gets S3's own error, which S3 clients can show.
    ErrorDocument 403 /.registry/access-denied.xml
    RewriteEngine On
    RewriteRule ^/\\.registry/ - [L]
{refuse_readers}    RewriteCond %{{REQUEST_METHOD}} "^(GET|HEAD)$"
    {raw_path}
    RewriteRule ^ http://127.0.0.1:{settings.s3_read_port}%1 [P,NE]
    {raw_path}
    RewriteRule ^ http://127.0.0.1:{settings.s3_write_port}%1 [P,NE]
</VirtualHost>
"""


def s3_env(settings: RegistrySettings) -> str:
    """What the S3 services read, as shell exports: key pairs, and the external bucket.

    The read-write server knows the writers' keys only; the read-only one knows all.
    """
    if not settings.writers:
        # rclone without keys serves anonymously: never render that.
        raise ValueError("the DVC remote needs at least one writer")

    def keys(users: tuple[Credential, ...]) -> str:
        return ",".join(f'"{u.access_key},{u.secret_key}"' for u in users)

    environment = {
        "RCLONE_AUTH_KEY": keys(settings.writers),
        "RCLONE_READ_ONLY_AUTH_KEY": keys(settings.users),
    }
    environment |= _trust(settings)
    if settings.backend is not None:
        environment |= settings.backend.rclone_remote("external")
        # One folder, `dvc`, mapped onto the bucket (and path) that holds the objects.
        environment["RCLONE_CONFIG_FRONT_TYPE"] = "combine"
        environment["RCLONE_CONFIG_FRONT_UPSTREAMS"] = (
            f"{DVC_BUCKET}={settings.backend.rclone_path('external')}"
        )
    return workload.secrets_env(environment)


def post_receive_hook(settings: RegistrySettings) -> str:
    """The git hook that tells the charm that tags arrived (``settings.tags_notify``)."""
    if not settings.tags_notify:
        return """#!/bin/sh
# Rendered by the data-versioning charm: the charm watches refs/tags itself.
exit 0
"""
    notify = shlex.join(settings.tags_notify)
    return f"""#!/bin/sh
# Rendered by the data-versioning charm: tell the charm when tags are pushed.
tags=""
while read -r old new ref; do
    case "$ref" in refs/tags/*) tags="$tags ${{ref#refs/tags/}}" ;; esac
done
[ -z "$tags" ] && exit 0
{notify} "tags=${{tags# }}" >/dev/null 2>&1 \\
    || echo "registry: could not notify the charm of:$tags" >&2
exit 0
"""


def update_hook() -> str:
    """The git hook that keeps tags immutable (denyNonFastForwards covers branches only)."""
    return """#!/bin/sh
# Rendered by the data-versioning charm: a version, once pushed, never changes.
case "$1" in
refs/tags/*)
    if [ "$2" != 0000000000000000000000000000000000000000 ]; then
        echo "registry: $1 exists; versions are immutable, push a new one" >&2
        exit 1
    fi
    ;;
esac
exit 0
"""


def files(settings: RegistrySettings) -> dict[str, tuple[str, int]]:
    """The files the servers read, by path: (content, mode). htpasswd is apart (slow)."""
    conf = settings.conf_dir
    rendered = {
        f"{conf}/httpd.conf": (httpd_conf(settings), 0o644),
        f"{conf}/htgroup": (htgroup(settings.users), 0o644),
        f"{conf}/htdocs/healthz": ("ok\n", 0o644),
        f"{conf}/htdocs/access-denied.xml": (_ACCESS_DENIED, 0o644),
        f"{conf}/hooks/post-receive": (post_receive_hook(settings), 0o755),
        f"{conf}/hooks/update": (update_hook(), 0o755),
        f"{conf}/s3.env": (s3_env(settings), 0o600),
        f"{conf}/bootstrap.sh": (bootstrap_script(settings), 0o644),
    }
    if settings.trusted_ca:
        rendered[settings.ca_file] = (settings.trusted_ca, 0o644)
    if settings.tls:
        # Secret files, like s3.env: Apache reads them as the service user.
        rendered[settings.tls_certificate_file] = (settings.tls.certificate, 0o600)
        rendered[settings.tls_key_file] = (settings.tls.private_key, 0o600)
        rendered[settings.tls_ca_file] = (settings.tls.ca, 0o644)
    return rendered


def restart_files(settings: RegistrySettings) -> frozenset[str]:
    """The rendered files the servers read only at start: a change needs a restart.

    Apache reads htpasswd and htgroup on every request; its config, its certificate and key,
    and the S3 keys only at start.
    """
    return frozenset(
        {
            f"{settings.conf_dir}/httpd.conf",
            f"{settings.conf_dir}/s3.env",
            settings.tls_certificate_file,
            settings.tls_key_file,
        }
    )


def _trust(settings: RegistrySettings) -> dict[str, str]:
    """Rclone's environment for trusting a private CA (its --ca-cert flag)."""
    return {"RCLONE_CA_CERT": settings.ca_file} if settings.trusted_ca else {}


# --- the servers -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Service:
    """One server of the registry, as a substrate runs it (as ``settings.service_user``)."""

    name: str
    summary: str
    command: tuple[str, ...]
    port: int
    # Ready when this URL answers (HTTP), else when the port accepts connections.
    ready_url: str | None = None


def _rclone_command(settings: RegistrySettings, *, read_only: bool) -> tuple[str, ...]:
    port = settings.s3_read_port if read_only else settings.s3_write_port
    root = "front:" if settings.backend is not None else settings.s3_root
    args = [
        settings.binaries.rclone,
        "serve",
        "s3",
        root,
        "--addr",
        f"127.0.0.1:{port}",
        "--config",
        f"{settings.conf_dir}/rclone.conf",
        "--cache-dir",
        f"{settings.run_dir}/rclone-{port}",
        # Short: the read-only server must see new objects at once (0s stalls uploads).
        "--dir-cache-time",
        "1s",
        "--log-level",
        "NOTICE",
        "--metrics-addr",
        f"unix://{settings.rclone_metrics_socket(read_only)}",
    ]
    if read_only:
        args.append("--read-only")
    keys = "$RCLONE_READ_ONLY_AUTH_KEY" if read_only else "$RCLONE_AUTH_KEY"
    env = shlex.quote(f"{settings.conf_dir}/s3.env")
    # rclone refuses to start while its last run's metrics socket is still there.
    stale = shlex.quote(settings.rclone_metrics_socket(read_only))
    launch = f". {env} && rm -f -- {stale} && RCLONE_AUTH_KEY={keys} exec {shlex.join(args)}"
    return ("/bin/sh", "-c", launch)


def metrics_exporter_command(settings: RegistrySettings) -> tuple[str, ...]:
    """The metrics exporter's command (``mlops-workload metrics registry``): no secrets."""
    command = [
        settings.binaries.mlops_workload,
        "metrics",
        "registry",
        "--port",
        str(settings.metrics_port),
        "--state-dir",
        settings.state_dir,
        "--repository",
        settings.repository_path,
        "--objects-dir",
        f"{settings.s3_root}/{DVC_BUCKET}",
        "--health-url",
        f"{settings.local_git_base}/healthz",
        "--status-url",
        f"{settings.local_git_base}/server-status?auto",
        "--rclone-socket",
        f"read-write={settings.rclone_metrics_socket(read_only=False)}",
        "--rclone-socket",
        f"read-only={settings.rclone_metrics_socket(read_only=True)}",
        "--pinned-version-file",
        settings.pinned_version_path,
    ]
    if settings.tls:
        command += ["--ca-file", settings.tls_ca_file]
    return tuple(command)


def services(settings: RegistrySettings) -> tuple[Service, ...]:
    """Apache (git and the S3 front), the two S3 servers and the metrics exporter.

    Each with how it shows it is ready.
    """
    apache = (settings.binaries.apache, "-f", f"{settings.conf_dir}/httpd.conf", "-DFOREGROUND")
    return (
        Service(
            GIT_SERVICE,
            "git smart HTTP and the S3 front (Apache)",
            apache,
            settings.git_port,
            # Over HTTPS, a check could not verify the private CA: the port accepting will do.
            ready_url=None if settings.tls else f"{settings.local_git_base}/healthz",
        ),
        Service(
            S3_SERVICE,
            "DVC remote, read-write (rclone serve s3)",
            _rclone_command(settings, read_only=False),
            settings.s3_write_port,
        ),
        Service(
            S3_READ_ONLY_SERVICE,
            "DVC remote, read-only (rclone serve s3)",
            _rclone_command(settings, read_only=True),
            settings.s3_read_port,
        ),
        Service(
            METRICS_SERVICE,
            "Prometheus metrics of the registry, without auth (mlops-workload metrics)",
            metrics_exporter_command(settings),
            settings.metrics_port,
        ),
    )


# --- the repository --------------------------------------------------------------------------


def bootstrap_script(settings: RegistrySettings) -> str:
    """A shell script, run as the service user where the servers run, that makes the registry.

    Idempotent and quick (no data moves): it creates the bare repository and the first
    commit (``dvc init`` plus the remote's config) once, installs the hooks, and commits a
    change of the remote's public endpoint when there is one. It prints the commit it leaves.
    """
    q = shlex.quote
    dvc = q(settings.binaries.dvc)
    exports = " ".join(f"{k}={v}" for k, v in NO_ANALYTICS.items())
    subject = f"Registry: DVC remote {settings.remote_url} at {settings.remote_endpoint}"
    return f"""set -eu
export {exports} GIT_TERMINAL_PROMPT=0
export GIT_AUTHOR_NAME=mlops-registry GIT_AUTHOR_EMAIL=registry@mlops.invalid
export GIT_COMMITTER_NAME=mlops-registry GIT_COMMITTER_EMAIL=registry@mlops.invalid
repo={q(settings.repository_path)}
if [ ! -f "$repo/HEAD" ]; then
    rm -rf "$repo.new"
    git init --quiet --bare --initial-branch=main "$repo.new"
    mv "$repo.new" "$repo"
fi
git -C "$repo" config http.receivepack true
git -C "$repo" config receive.denyDeletes true
git -C "$repo" config receive.denyNonFastForwards true
for hook in post-receive update; do
    install -m 0755 {q(settings.conf_dir)}/hooks/$hook "$repo/hooks/$hook"
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
if git -C "$repo" rev-parse --quiet --verify refs/heads/main >/dev/null; then
    git clone --quiet --branch main "$repo" registry
    cd registry
else
    git init --quiet --initial-branch=main registry
    cd registry
    {dvc} init --quiet
    git remote add origin "$repo"
fi
# Committed: consumers' own dvc sends no analytics either.
{dvc} config core.analytics false
{dvc} remote add --force --default {REMOTE_NAME} {q(settings.remote_url)}
{dvc} remote modify {REMOTE_NAME} endpointurl {q(settings.remote_endpoint)}
git add .dvc/config
if ! git diff --cached --quiet || ! git rev-parse --quiet --verify HEAD >/dev/null; then
    git commit --quiet -m {q(subject)}
    git push --quiet origin HEAD:refs/heads/main
fi
git rev-parse HEAD
"""


def bootstrap_command(settings: RegistrySettings) -> list[str]:
    """The command the charm execs to run the pushed ``bootstrap.sh``."""
    return ["/bin/sh", f"{settings.conf_dir}/bootstrap.sh"]


def bootstrap_fingerprint(settings: RegistrySettings) -> str:
    """What a successful bootstrap was run for: rerun it whenever this changes."""
    text = bootstrap_script(settings) + post_receive_hook(settings) + update_hook()
    return hashlib.sha256(text.encode()).hexdigest()


def bootstrap_environment(settings: RegistrySettings) -> dict[str, str]:
    """The bootstrap's environment: a home of its own (the mount root may be root's)."""
    return {"HOME": settings.home_dir, **NO_ANALYTICS}


# --- jobs ------------------------------------------------------------------------------------


def workload_environment(settings: RegistrySettings) -> dict[str, str]:
    """The environment of ``mlops-workload`` runs: where the registry is, the writer's keys."""
    writer = settings.writers[0]
    return {
        "MLOPS_REGISTRY_WORKSPACE": settings.workspace_path,
        "MLOPS_REGISTRY_URL": settings.repository_path,
        "MLOPS_DVC_ENDPOINT_URL": settings.local_endpoint,
        "AWS_ACCESS_KEY_ID": writer.access_key,
        "AWS_SECRET_ACCESS_KEY": writer.secret_key,
        "HOME": settings.home_dir,
        **NO_ANALYTICS,
    }


def dataset_command(settings: RegistrySettings, command: str, *args: str) -> list[str]:
    """The ``mlops-workload dataset <command>`` command line."""
    return [settings.binaries.mlops_workload, "dataset", command, *args]


def dataset_job(
    settings: RegistrySettings, command: str, *args: str, params: dict[str, str]
) -> JobSpec:
    """A job running ``mlops-workload dataset <command>``; ``params`` are what list-jobs shows."""
    return JobSpec(
        kind=command,
        command=dataset_command(settings, command, *args),
        params=params,
        environment=workload_environment(settings),
        working_dir=settings.state_dir,
    )


def move_objects_job(
    settings: RegistrySettings, source: ExternalBucket | None, target: ExternalBucket | None
) -> JobSpec:
    """A job copying every object of the remote from ``source`` to ``target``, then checking.

    None is the unit's storage. The copy skips what is there already and deletes nothing;
    ``rclone check`` fails the job unless every source object is in the target, identical.
    """
    environment = {"HOME": settings.home_dir, **_trust(settings)}
    paths = []
    for name, bucket in (("source", source), ("target", target)):
        if bucket is None:
            paths.append(f"{settings.s3_root}/{DVC_BUCKET}")
        else:
            environment |= bucket.rclone_remote(name)
            paths.append(bucket.rclone_path(name))
    # Bounded retries: an unreachable bucket fails the job in seconds, not hours.
    rclone = [
        settings.binaries.rclone,
        "--config",
        f"{settings.conf_dir}/rclone.conf",
        "--retries",
        "2",
        "--low-level-retries",
        "3",
        "--contimeout",
        "15s",
    ]
    # Listing first: rclone reports an unreachable or untrusted bucket clearly only there.
    reach = [
        shlex.join([*rclone, "--log-level", "ERROR", "lsf", "--max-depth", "1", path])
        + " >/dev/null"
        for path, bucket in zip(paths, (source, target), strict=True)
        if bucket is not None
    ]
    copy = shlex.join([*rclone, "copy", *paths])
    check = shlex.join([*rclone, "check", "--one-way", *paths])
    destination = target.location if target else STORAGE_TARGET
    result = shlex.quote(json.dumps({"target": destination}))
    return JobSpec(
        kind="move-remote",
        command=["/bin/sh", "-c", " && ".join([*reach, copy, check, f"echo {result}"])],
        params={"to": destination},
        environment=environment,
        working_dir=settings.state_dir,
    )


# --- backups ---------------------------------------------------------------------------------

BACKUP_SERVICE = "data-versioning"


def backup_plan(settings: RegistrySettings, app: str) -> BackupPlan:
    """What a backup of the registry holds and where it goes (``mlops_charms.backup``).

    The bare git repository always; the DVC remote's objects when they are on the unit's
    storage. With an external bucket the objects stay in it (backed up with the bucket) and
    the backups go to it, under ``backups/<app>/``. The rendered files (``conf``: they hold
    keys, and the charm writes them again), the working clone, the jobs and the runtime files
    are left out. A restore deletes the working clone and the bootstrap's mark: the next
    reconcile bootstraps again (the hooks and the remote's endpoint of this deployment).
    """
    root = settings.state_dir
    members = [settings.repository_path.removeprefix(root + "/")]
    excluded = [
        "conf: rendered by the charm from its config and secrets",
        "workspace, jobs, run, home: derived or transient",
    ]
    if settings.backend is None:
        members.append(f"{settings.s3_root.removeprefix(root + '/')}/{DVC_BUCKET}")
        destination, environment = settings.backups_dir, {}
    else:
        bucket = settings.backend
        excluded.append(
            f"the DVC objects in {bucket.location}: they stay in that bucket, backed up with it"
        )
        destination, environment = s3_destination(
            app,
            bucket=bucket.bucket,
            endpoint=bucket.endpoint,
            region=bucket.region,
            access_key=bucket.access_key,
            secret_key=bucket.secret_key,
            path_style=bucket.path_style,
            ca_file=settings.ca_file if settings.trusted_ca else None,
        )
    return BackupPlan(
        service=BACKUP_SERVICE,
        root=root,
        members=tuple(members),
        backups_dir=settings.backups_dir,
        destination=destination,
        environment=environment,
        excluded=tuple(excluded),
        packages=("dvc",),
        reset=(
            settings.workspace_path.removeprefix(root + "/"),
            f"{settings.conf_dir.removeprefix(root + '/')}/bootstrap.done",
        ),
    )
