"""The DVC data registry workload: git smart HTTP, the embedded S3 remote, their health.

Nothing here knows about Juju. The charm turns config, relations and secrets into
``RegistrySettings``; this module turns those into the files the servers read, the
Pebble layer that runs them, the bootstrap script run once in the container and the
``mlops-workload`` commands that cut versions.

- git: ``git http-backend`` behind Apache httpd (prefork + mod_cgi) with HTTP basic
  auth. Every registry user may fetch; only users in the ``writers`` group may push.
- DVC remote: by default ``rclone serve s3`` over the unit's storage, twice: a
  read-write endpoint that knows only the writers' keys, and a ``--read-only`` one
  that knows only the readers' keys, on loopback behind Apache, which passes it GET
  and HEAD only (rclone's read-only mode stalls on a PUT instead of refusing it).
  So a read-only consumer cannot change data either. External S3 replaces both.
- A git ``post-receive`` hook records a Pebble notice when tags are pushed; the
  charm sees it as ``pebble-custom-notice`` and validates the new versions.

Secrets never appear in the Pebble plan or a command line: passwords are stored only
as bcrypt hashes, and S3 keys travel in ``s3.env`` (mode 0600) sourced by the command.
"""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from ops.pebble import LayerDict

GIT_SERVICE = "git-http"
S3_SERVICE = "s3"
S3_READ_ONLY_SERVICE = "s3-read-only"
GIT_READY_CHECK = "git-http-ready"
S3_READY_CHECK = "s3-ready"
S3_READ_ONLY_READY_CHECK = "s3-read-only-ready"
NOTICE_KEY = "mlops-stack.dev/registry/tags-pushed"
REPOSITORY_NAME = "registry.git"
REMOTE_NAME = "storage"
WRITERS_GROUP = "writers"
# Modules Apache loads (mod_unixd and mod_log_config are built into Debian's and
# Ubuntu's binary); prefork + mod_cgi keeps one CGI model and no cgid socket.
_APACHE_MODULES = (
    ("mpm_prefork_module", "mod_mpm_prefork.so"),
    ("authz_core_module", "mod_authz_core.so"),
    ("authz_user_module", "mod_authz_user.so"),
    ("authz_groupfile_module", "mod_authz_groupfile.so"),
    ("authn_core_module", "mod_authn_core.so"),
    ("authn_file_module", "mod_authn_file.so"),
    ("auth_basic_module", "mod_auth_basic.so"),
    ("alias_module", "mod_alias.so"),
    ("cgi_module", "mod_cgi.so"),
    ("env_module", "mod_env.so"),
    ("proxy_module", "mod_proxy.so"),
    ("proxy_http_module", "mod_proxy_http.so"),
)
_BCRYPT_ALPHABET = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


@dataclass(frozen=True)
class Credential:
    """A registry user: git basic auth, and S3 keys for the embedded remote."""

    username: str
    password: str
    write: bool = False

    @property
    def s3_access_key(self) -> str:
        return self.username

    @property
    def s3_secret_key(self) -> str:
        return self.password


@dataclass(frozen=True)
class ExternalRemote:
    """An external S3 bucket as the DVC remote (from the ``s3`` relation)."""

    bucket: str
    path: str
    endpoint: str | None
    region: str | None
    access_key: str
    secret_key: str

    @property
    def url(self) -> str:
        path = self.path.strip("/")
        return f"s3://{self.bucket}/{path}" if path else f"s3://{self.bucket}"


@dataclass(frozen=True)
class Binaries:
    """Where the workload's programs are (the rock's paths by default)."""

    apache: str = "/usr/sbin/apache2"
    apache_modules: str = "/usr/lib/apache2/modules"
    git_http_backend: str = "/usr/lib/git-core/git-http-backend"
    rclone: str = "/bin/rclone"
    dvc: str = "/bin/dvc"
    mlops_workload: str = "/bin/mlops-workload"
    # Juju mounts its Pebble client and socket into every workload container.
    pebble: str = "/charm/bin/pebble"


@dataclass(frozen=True)
class RegistrySettings:
    """Everything the registry's files, layer and commands are derived from."""

    state_dir: str
    public_host: str
    users: tuple[Credential, ...]
    git_port: int = 8080
    s3_port: int = 9000
    s3_read_only_port: int = 9001
    s3_read_only_backend_port: int = 9002
    bind_address: str = ""
    bucket: str = "dvc"
    external_remote: ExternalRemote | None = None
    service_user: str | None = None
    service_group: str | None = None
    pebble_socket: str = "/charm/container/pebble.socket"
    binaries: Binaries = field(default_factory=Binaries)

    @property
    def repository_path(self) -> str:
        return f"{self.state_dir}/git/{REPOSITORY_NAME}"

    @property
    def workspace_path(self) -> str:
        return f"{self.state_dir}/workspace"

    @property
    def s3_root(self) -> str:
        return f"{self.state_dir}/s3"

    @property
    def conf_dir(self) -> str:
        return f"{self.state_dir}/conf"

    @property
    def run_dir(self) -> str:
        return f"{self.state_dir}/run"

    @property
    def embedded_s3(self) -> bool:
        return self.external_remote is None

    @property
    def git_url(self) -> str:
        """The registry's git URL as consumers use it."""
        return f"http://{self.public_host}:{self.git_port}/{REPOSITORY_NAME}"

    def remote_url(self) -> str:
        """The DVC remote's URL (``s3://bucket[/path]``)."""
        if self.external_remote:
            return self.external_remote.url
        return f"s3://{self.bucket}"

    def remote_endpoint(self, *, write: bool) -> str | None:
        """The S3 endpoint a consumer with or without write access uses."""
        if self.external_remote:
            return self.external_remote.endpoint
        port = self.s3_port if write else self.s3_read_only_port
        return f"http://{self.public_host}:{port}"

    @property
    def local_endpoint(self) -> str | None:
        """The S3 endpoint the workload itself writes to."""
        if self.external_remote:
            return self.external_remote.endpoint
        return f"http://127.0.0.1:{self.s3_port}"


def _listen(settings: RegistrySettings, port: int) -> str:
    return f"{settings.bind_address}:{port}" if settings.bind_address else str(port)


def _bcrypt_salt(username: str, password: str) -> bytes:
    # Derived from the credential so that rendering is deterministic: unchanged users
    # give an unchanged file, and the charm does not rewrite it on every hook.
    digest = hashlib.sha256(f"mlops-registry\0{username}\0{password}".encode()).digest()
    chars = "".join(_BCRYPT_ALPHABET[byte % 64] for byte in digest[:21])
    return f"$2y$08${chars}e".encode()


def htpasswd(users: tuple[Credential, ...]) -> str:
    """The htpasswd file: one bcrypt hash per user."""
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
    """Apache's whole configuration: git http-backend with basic auth, a health URL."""
    # Guarded: a module built into the binary cannot be loaded again.
    modules = "\n".join(
        f"<IfModule !{name}>\n    LoadModule {name} {settings.binaries.apache_modules}/{so}\n"
        "</IfModule>"
        for name, so in _APACHE_MODULES
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
# Piped through cat, which inherits Pebble's pipes: a non-root Apache cannot reopen them.
ErrorLog "|/bin/cat"
LogFormat "%h %u \\"%r\\" %>s %b" registry
CustomLog "|/bin/cat" registry
StartServers 2
MaxRequestWorkers 32
Timeout 600
DocumentRoot {conf}/htdocs

<Directory />
    AllowOverride None
    Require all denied
</Directory>

Alias /healthz {conf}/htdocs/healthz
<Location /healthz>
    Require all granted
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
    <If {receive_pack}>
        Require group {WRITERS_GROUP}
    </If>
    <Else>
        Require valid-user
    </Else>
</Location>
{_read_only_s3_vhost(settings)}"""


def _read_only_s3_vhost(settings: RegistrySettings) -> str:
    if not settings.embedded_s3:
        return ""
    return f"""
# Read-only S3: readers' requests reach the read-only rclone only if they cannot write.
Listen {_listen(settings, settings.s3_read_only_port)}
<VirtualHost *:{settings.s3_read_only_port}>
    ProxyPreserveHost On
    ProxyPass / http://127.0.0.1:{settings.s3_read_only_backend_port}/ nocanon
    <Location />
        <LimitExcept GET HEAD>
            Require all denied
        </LimitExcept>
        <Limit GET HEAD>
            Require all granted
        </Limit>
    </Location>
</VirtualHost>
"""


def s3_env(settings: RegistrySettings) -> str:
    """The secrets the S3 services read, as shell exports: rclone's key pairs.

    The read-write server knows the writers' keys only; the read-only one knows all.
    """
    writers = [u for u in settings.users if u.write]
    if not writers:
        # rclone without keys serves anonymously: never render that.
        raise ValueError("the embedded S3 remote needs at least one writer")

    def keys(users: list[Credential]) -> str:
        return ",".join(f'"{u.s3_access_key},{u.s3_secret_key}"' for u in users)

    return (
        f"export RCLONE_AUTH_KEY={shlex.quote(keys(writers))}\n"
        f"export RCLONE_READ_ONLY_AUTH_KEY={shlex.quote(keys(list(settings.users)))}\n"
    )


def post_receive_hook(settings: RegistrySettings) -> str:
    """The git hook that tells the charm (through a Pebble notice) that tags arrived."""
    notify = shlex.join([settings.binaries.pebble, "notify", NOTICE_KEY])
    return f"""#!/bin/sh
# Rendered by the data-versioning charm: record a Pebble notice when tags are pushed.
tags=""
while read -r old new ref; do
    case "$ref" in refs/tags/*) tags="$tags ${{ref#refs/tags/}}" ;; esac
done
[ -z "$tags" ] && exit 0
PEBBLE_SOCKET={shlex.quote(settings.pebble_socket)} {notify} "tags=${{tags# }}" >/dev/null 2>&1 \\
    || echo "registry: could not notify the charm of:$tags" >&2
exit 0
"""


def files(settings: RegistrySettings) -> dict[str, tuple[str, int]]:
    """The files the servers read, by path: (content, mode)."""
    conf = settings.conf_dir
    rendered = {
        f"{conf}/httpd.conf": (httpd_conf(settings), 0o644),
        f"{conf}/htpasswd": (htpasswd(settings.users), 0o640),
        f"{conf}/htgroup": (htgroup(settings.users), 0o644),
        f"{conf}/htdocs/healthz": ("ok\n", 0o644),
        f"{conf}/post-receive": (post_receive_hook(settings), 0o755),
    }
    if settings.embedded_s3:
        rendered[f"{conf}/s3.env"] = (s3_env(settings), 0o600)
    return rendered


def _rclone_command(settings: RegistrySettings, *, read_only: bool) -> str:
    port = settings.s3_read_only_backend_port if read_only else settings.s3_port
    # rclone wants host:port; ":port" is every interface (a bare port is refused).
    addr = f"127.0.0.1:{port}" if read_only else f"{settings.bind_address}:{port}"
    args = [
        settings.binaries.rclone,
        "serve",
        "s3",
        settings.s3_root,
        "--addr",
        addr,
        "--config",
        f"{settings.conf_dir}/rclone.conf",
        "--cache-dir",
        f"{settings.run_dir}/rclone-{port}",
        # Short: the read-only server must see new objects at once (0s stalls uploads).
        "--dir-cache-time",
        "1s",
        "--log-level",
        "NOTICE",
    ]
    if read_only:
        args.append("--read-only")
    keys = "$RCLONE_READ_ONLY_AUTH_KEY" if read_only else "$RCLONE_AUTH_KEY"
    env = shlex.quote(f"{settings.conf_dir}/s3.env")
    launch = f". {env} && RCLONE_AUTH_KEY={keys} exec {shlex.join(args)}"
    return shlex.join(["/bin/sh", "-c", launch])


def _service(
    settings: RegistrySettings, summary: str, command: str, *, enabled: bool = True
) -> dict:
    service = {
        "override": "replace",
        "summary": summary,
        "command": command,
        "startup": "enabled" if enabled else "disabled",
    }
    if settings.service_user:
        service["user"] = settings.service_user
        service["group"] = settings.service_group or settings.service_user
    return service


def _check(url_or_port: str | int, *, enabled: bool = True) -> dict:
    check: dict = {
        "override": "replace",
        "level": "ready",
        "startup": "enabled" if enabled else "disabled",
        "period": "10s",
        "timeout": "3s",
        "threshold": 3,
    }
    if isinstance(url_or_port, int):
        check["tcp"] = {"host": "127.0.0.1", "port": url_or_port}
    else:
        check["http"] = {"url": url_or_port}
    return check


def layer(settings: RegistrySettings) -> LayerDict:
    """The Pebble layer: the git server, the S3 endpoints and the checks of all three.

    With an external remote the S3 services stay in the layer but disabled, so that a
    replan stops the embedded servers that were running before the switch.
    """
    apache = shlex.join(
        [settings.binaries.apache, "-f", f"{settings.conf_dir}/httpd.conf", "-DFOREGROUND"]
    )
    embedded = settings.embedded_s3
    services = {
        GIT_SERVICE: _service(settings, "git smart HTTP (Apache httpd)", apache),
        S3_SERVICE: _service(
            settings,
            "DVC remote, read-write (rclone serve s3)",
            _rclone_command(settings, read_only=False),
            enabled=embedded,
        ),
        S3_READ_ONLY_SERVICE: _service(
            settings,
            "DVC remote, read-only (rclone serve s3)",
            _rclone_command(settings, read_only=True),
            enabled=embedded,
        ),
    }
    checks = {
        GIT_READY_CHECK: _check(f"http://127.0.0.1:{settings.git_port}/healthz"),
        S3_READY_CHECK: _check(settings.s3_port, enabled=embedded),
        S3_READ_ONLY_READY_CHECK: _check(settings.s3_read_only_backend_port, enabled=embedded),
    }
    return cast(
        "LayerDict", {"summary": "DVC data registry", "services": services, "checks": checks}
    )


def stopped_services(settings: RegistrySettings) -> list[str]:
    """Services that must not run (a replan does not stop a service it merely disables)."""
    return [] if settings.embedded_s3 else [S3_SERVICE, S3_READ_ONLY_SERVICE]


def bootstrap_script(settings: RegistrySettings) -> str:
    """A shell script, run in the container as the service user, that makes the registry.

    It is idempotent: it creates the bare repository and the first commit (``dvc init``
    plus the remote's config) once, installs the hook, and commits a remote change only
    when the committed DVC config differs from the settings. Before it points the registry
    at an external remote, it copies the embedded remote's objects there (``rclone copy``,
    which skips what is already present), so no version loses its data; if the copy fails,
    the script fails before the change is committed. It never deletes data.
    """
    q = shlex.quote
    endpoint = settings.remote_endpoint(write=False)
    remote_config = [
        f"{q(settings.binaries.dvc)} remote add --force --default {REMOTE_NAME} "
        f"{q(settings.remote_url())}"
    ]
    if endpoint:
        remote_config.append(
            f"{q(settings.binaries.dvc)} remote modify {REMOTE_NAME} endpointurl {q(endpoint)}"
        )
    if settings.external_remote and settings.external_remote.region:
        remote_config.append(
            f"{q(settings.binaries.dvc)} remote modify {REMOTE_NAME} region "
            f"{q(settings.external_remote.region)}"
        )
    bucket_dir = (
        f"mkdir -p {q(settings.s3_root)}/{q(settings.bucket)}" if settings.embedded_s3 else ":"
    )
    copy_step = _copy_embedded_objects(settings)
    return f"""set -eu
export DVC_NO_ANALYTICS=1 GIT_TERMINAL_PROMPT=0
export GIT_AUTHOR_NAME=mlops-registry GIT_AUTHOR_EMAIL=registry@mlops.invalid
export GIT_COMMITTER_NAME=mlops-registry GIT_COMMITTER_EMAIL=registry@mlops.invalid
repo={q(settings.repository_path)}
mkdir -p "$(dirname "$repo")" {q(settings.run_dir)} {q(settings.conf_dir)}
{bucket_dir}
{copy_step}
if [ ! -f "$repo/HEAD" ]; then
    rm -rf "$repo.new"
    git init --quiet --bare --initial-branch=main "$repo.new"
    mv "$repo.new" "$repo"
fi
git -C "$repo" config http.receivepack true
git -C "$repo" config receive.denyDeletes true
git -C "$repo" config receive.denyNonFastForwards true
install -m 0755 {q(settings.conf_dir)}/post-receive "$repo/hooks/post-receive"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
if git -C "$repo" rev-parse --quiet --verify refs/heads/main >/dev/null; then
    git clone --quiet --branch main "$repo" registry
    cd registry
else
    git init --quiet --initial-branch=main registry
    cd registry
    {q(settings.binaries.dvc)} init --quiet
    git remote add origin "$repo"
fi
{chr(10).join(remote_config)}
git add .dvc/config
if ! git diff --cached --quiet || ! git rev-parse --quiet --verify HEAD >/dev/null; then
    git commit --quiet -m "Registry: DVC remote {settings.remote_url()}"
    git push --quiet origin HEAD:refs/heads/main
    echo changed
fi
"""


def _copy_embedded_objects(settings: RegistrySettings) -> str:
    """Shell lines copying the embedded remote's objects to the external one, if any."""
    remote = settings.external_remote
    if remote is None:
        return ":"
    q = shlex.quote
    source = f"{settings.s3_root}/{settings.bucket}/files"
    destination = f"external:{remote.url.removeprefix('s3://')}/files"
    # An rclone remote defined in the environment; keys come from AWS_* (env_auth).
    variables = {
        "RCLONE_CONFIG_EXTERNAL_TYPE": "s3",
        "RCLONE_CONFIG_EXTERNAL_PROVIDER": "Other" if remote.endpoint else "AWS",
        "RCLONE_CONFIG_EXTERNAL_ENV_AUTH": "true",
    }
    if remote.endpoint:
        variables["RCLONE_CONFIG_EXTERNAL_ENDPOINT"] = remote.endpoint
    if remote.region:
        variables["RCLONE_CONFIG_EXTERNAL_REGION"] = remote.region
    assignments = " ".join(f"{name}={q(value)}" for name, value in variables.items())
    copy = shlex.join(
        [
            settings.binaries.rclone,
            "copy",
            "--config",
            f"{settings.conf_dir}/rclone.conf",
            source,
            destination,
        ]
    )
    return f"""if [ -d {q(source)} ]; then
    {assignments} {copy}
fi"""


def bootstrap_command(settings: RegistrySettings) -> list[str]:
    """The command the charm execs to run ``bootstrap_script``."""
    return ["/bin/sh", "-c", bootstrap_script(settings)]


def workload_environment(settings: RegistrySettings) -> dict[str, str]:
    """The environment of ``mlops-workload`` runs: where the registry is, the S3 keys."""
    environment = {
        "MLOPS_REGISTRY_WORKSPACE": settings.workspace_path,
        "MLOPS_REGISTRY_URL": settings.repository_path,
        "DVC_NO_ANALYTICS": "1",
        "HOME": settings.state_dir,
    }
    if settings.local_endpoint:
        environment["MLOPS_DVC_ENDPOINT_URL"] = settings.local_endpoint
    if settings.external_remote:
        environment["AWS_ACCESS_KEY_ID"] = settings.external_remote.access_key
        environment["AWS_SECRET_ACCESS_KEY"] = settings.external_remote.secret_key
        if settings.external_remote.region:
            environment["AWS_DEFAULT_REGION"] = settings.external_remote.region
    else:
        writer = next((u for u in settings.users if u.write), None)
        if writer:
            environment["AWS_ACCESS_KEY_ID"] = writer.s3_access_key
            environment["AWS_SECRET_ACCESS_KEY"] = writer.s3_secret_key
    return environment


def dataset_command(settings: RegistrySettings, command: str, *args: str) -> list[str]:
    """The ``mlops-workload dataset <command>`` command line the charm execs."""
    return [settings.binaries.mlops_workload, "dataset", command, *args]
