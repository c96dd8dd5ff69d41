"""A real data registry for the workload tests: Pebble runs the layer the charm plans.

An ``ops.testing`` run of the real charm (its charmcraft.yaml, with only the storage mount
location moved to a temporary folder, mounted with ``testing.Mount`` so the files it pushes
land on disk) produces the files, the bootstrap command and the Pebble layer. A real Pebble
runs the bootstrap and the layer: Apache httpd + git http-backend and two ``rclone serve s3``
endpoints. Only what this machine cannot have is substituted, as the labelling harness does:
the rock's and Juju's program and socket paths (``/bin/rclone``, ``/charm/bin/pebble``, ...)
become this machine's, and the rock's service user ``_daemon_`` becomes ``www-data``.

Dataset commands run through ``pebble exec`` with the settings the charm derives. Consumers
are plain ``git`` and ``dvc`` processes that know only what the charm published on their
``mlops-dataset`` relation: the databag's URLs and their Juju secret's content.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from ops import pebble, testing

from mlops_charms.dataset import DatasetProviderData
from tests.charm_testing import load_charm_module
from tests.workload.processes import (
    ExecResult,
    PebbleDaemon,
    free_port,
    missing,
    run_exec,
    run_pebble,
)

CHARM_ROOT = Path(__file__).resolve().parents[3] / "charms" / "data-versioning-k8s"
CHARM_SRC = CHARM_ROOT / "src"
if str(CHARM_SRC) not in sys.path:
    sys.path.insert(0, str(CHARM_SRC))

import registry  # noqa: E402

VENV_BIN = Path(sys.executable).parent
# Stands in for the rock's service user (_daemon_), which this machine does not have.
SERVICE_USER = "www-data"


charm = load_charm_module(CHARM_SRC, "data_versioning_k8s_charm")


@dataclass(frozen=True)
class Consumer:
    """A consumer application's view of the registry: its relation databag and its secret."""

    app: str
    registry_url: str
    remote_url: str
    remote_endpoint: str
    access: str
    username: str
    password: str
    s3_access_key: str
    s3_secret_key: str


User = registry.Credential | Consumer


def git(*args: str, cwd: Path | None = None, check: bool = True) -> str:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/false"}
    proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"git {args[0]} failed: {proc.stderr}")
    return proc.stdout if check else proc.stdout + proc.stderr


def dvc_env(user: User) -> dict[str, str]:
    """A consumer's environment: its S3 keys and nothing of the test's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID=user.s3_access_key,
        AWS_SECRET_ACCESS_KEY=user.s3_secret_key,
        DVC_NO_ANALYTICS="1",
    )
    return env


def dvc(*args: str, cwd: Path, user: User) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "dvc"), *args], cwd=cwd, env=dvc_env(user), capture_output=True, text=True
    )


def _binaries() -> registry.Binaries:
    wanted = {
        "apache2": "/usr/sbin/apache2",
        "git-http-backend": "/usr/lib/git-core/git-http-backend",
        "rclone": str(VENV_BIN / "rclone"),
        "dvc": str(VENV_BIN / "dvc"),
        "mlops-workload": str(VENV_BIN / "mlops-workload"),
    }
    for name, path in wanted.items():
        if not Path(path).exists():
            missing(f"{name} is not installed at {path} (see the registry test requirements)")
    pebble_binary = os.environ.get("PEBBLE_BIN") or shutil.which("pebble")
    if not pebble_binary:
        missing("pebble is not installed (tools/install-test-deps.sh builds it)")
    try:
        import bcrypt  # noqa: F401
    except ImportError:
        missing("bcrypt is not installed in this environment")
    return registry.Binaries(
        apache=wanted["apache2"],
        git_http_backend=wanted["git-http-backend"],
        rclone=wanted["rclone"],
        dvc=wanted["dvc"],
        mlops_workload=wanted["mlops-workload"],
        pebble=pebble_binary,
    )


def _owner() -> tuple[int, int]:
    if os.geteuid() != 0:
        return os.getuid(), os.getgid()
    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        missing(f"running as root needs the {SERVICE_USER} user to run the services")
    # dvc and mlops-workload run as the service user: this venv's interpreter must be
    # executable by it (a venv of a Python under /root is not).
    probe = subprocess.run(
        ["runuser", "-u", SERVICE_USER, "--", sys.executable, "-c", "import mlops_workload"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.fail(
            f"{SERVICE_USER} cannot run {sys.executable} with mlops_workload: create the test "
            f"venv from a system Python (/usr/bin/python3): {probe.stderr.strip()[-200:]}"
        )
    return entry.pw_uid, entry.pw_gid


def free_ports_in_a_row(count: int) -> int:
    """The first of ``count`` consecutive free loopback ports (s3-port and the two after)."""
    for _ in range(50):
        first = free_port()
        if first + count - 1 > 65535:
            continue
        with contextlib.ExitStack() as held:
            try:
                for port in range(first, first + count):
                    sock = held.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return first
    raise AssertionError(f"no {count} consecutive free ports")


# --- the charm's side: an ops.testing run of DataVersioningCharm ---------------------------


def charm_context(state_dir: Path) -> testing.Context:
    """The charm with its real metadata, except the storage mount points at ``state_dir``."""
    raw = yaml.safe_load((CHARM_ROOT / "charmcraft.yaml").read_text())
    raw["containers"]["registry"]["mounts"][0]["location"] = str(state_dir)
    meta = {
        key: raw[key]
        for key in ("name", "containers", "resources", "storage", "provides", "requires", "peers")
    }
    return testing.Context(
        charm.DataVersioningCharm, meta=meta, config=raw["config"], actions=raw["actions"]
    )


def consumer_relation(app: str, access: str | None = None) -> testing.Relation:
    """A consumer application on ``mlops-dataset`` asking for ``access``."""
    return testing.Relation(
        charm.DATASET_ENDPOINT,
        interface="mlops_dataset",
        remote_app_name=app,
        remote_app_data={"access": json.dumps(access)} if access else {},
    )


def charm_state(state_dir: Path, config: dict, relations=()) -> testing.State:
    """A leader unit whose container mounts ``state_dir`` and answers the charm's execs.

    The execs are mocks here: the bootstrap the charm asks for is replayed on the real
    Pebble afterwards, and the first ``list-versions`` finds no versions, as it would.
    """
    rock = registry.Binaries()
    container = testing.Container(
        charm.CONTAINER,
        can_connect=True,
        mounts={charm.STORAGE: testing.Mount(location=str(state_dir), source=state_dir)},
        execs={
            testing.Exec(["/bin/sh", "-c"], stdout="changed\n"),
            testing.Exec(
                [rock.mlops_workload, "dataset", "list-versions"], stdout='{"versions": []}\n'
            ),
        },
    )
    return testing.State(
        leader=True,
        config=config,
        containers={container},
        storages={testing.Storage(charm.STORAGE)},
        relations={testing.PeerRelation(charm.PEERS), *relations},
    )


def charm_settings(context: testing.Context, state: testing.State) -> registry.RegistrySettings:
    """The settings the charm derives from ``state`` (config, storage, secrets, relations)."""
    with context(context.on.start(), state) as manager:  # start: nothing is reconciled
        settings = manager.charm._ready_settings()
    assert settings is not None, "the charm has no settings: secrets missing?"
    return settings


def published_consumer(state: testing.State, relation: testing.Relation) -> Consumer:
    """What the charm published to one consumer: its databag and the secret granted to it."""
    databag = state.get_relation(relation.id).local_app_data
    data = DatasetProviderData.model_validate({k: json.loads(v) for k, v in databag.items()})
    (secret,) = [s for s in state.secrets if s.id == data.credentials_secret_id]
    assert relation.id in secret.remote_grants, "the consumer's secret is not granted to it"
    content = secret.latest_content or {}
    assert data.registry_url and data.remote_url and data.remote_endpoint and data.access
    return Consumer(
        app=relation.remote_app_name,
        registry_url=data.registry_url,
        remote_url=data.remote_url,
        remote_endpoint=data.remote_endpoint,
        access=data.access,
        username=content["username"],
        password=content["password"],
        s3_access_key=content["access-key"],
        s3_secret_key=content["secret-key"],
    )


# --- this machine's side: the charm's output, localized, given to the real Pebble ----------

BOOTSTRAP_PREFIX = ["/bin/sh", "-c"]


@dataclass(frozen=True)
class Localizer:
    """Replaces the rock's and Juju's paths and service user with this machine's."""

    paths: dict[str, str]
    user: str | None  # the charm's service user
    local_user: str | None  # None: not root, the services run as the test's user
    binaries: registry.Binaries
    pebble_socket: str

    def text(self, text: str) -> str:
        if not self.paths:
            return text
        # One pass, whole paths only: a local path may contain a rock path (.../bin/dvc).
        alternatives = "|".join(re.escape(p) for p in sorted(self.paths, key=len, reverse=True))
        pattern = re.compile(rf"(?<![\w./-])(?:{alternatives})(?![\w./-])")
        return pattern.sub(lambda match: self.paths[match.group(0)], text)

    def layer(self, layer: pebble.LayerDict) -> pebble.LayerDict:
        localized = json.loads(self.text(json.dumps(layer)))
        for service in localized.get("services", {}).values():
            for key in ("user", "group"):
                if service.get(key) == self.user:
                    if self.local_user:
                        service[key] = self.local_user
                    else:
                        service.pop(key)
        return localized

    def files(self, root: Path) -> None:
        """Localize every file the charm pushed under ``root`` (all text), in place."""
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                text = path.read_text(errors="surrogateescape")
                localized = self.text(text)
                if localized != text:
                    path.write_text(localized, errors="surrogateescape")

    def settings(self, settings: registry.RegistrySettings) -> registry.RegistrySettings:
        return dataclasses.replace(
            settings,
            binaries=self.binaries,
            pebble_socket=self.pebble_socket,
            service_user=self.local_user,
            service_group=self.local_user,
        )


def localizer(
    settings: registry.RegistrySettings, local: registry.Binaries, socket_path: str
) -> Localizer:
    """The substitutions from the charm's ``settings`` to this machine."""
    rock = settings.binaries
    paths = {
        getattr(rock, f.name): getattr(local, f.name)
        for f in dataclasses.fields(registry.Binaries)
        if getattr(rock, f.name) != getattr(local, f.name)
    }
    if settings.pebble_socket != socket_path:
        paths[settings.pebble_socket] = socket_path
    return Localizer(
        paths=paths,
        user=settings.service_user,
        local_user=SERVICE_USER if os.geteuid() == 0 else None,
        binaries=local,
        pebble_socket=socket_path,
    )


@dataclass
class RunningRegistry:
    """The registry under test and the handles the tests need.

    ``settings`` are the charm's own, with this machine's paths and service user;
    ``writer`` is the charm's registry user (from its secret), the operator's view;
    ``reader`` and ``labelling`` are consumers that know only what the charm published.
    """

    settings: registry.RegistrySettings
    daemon: PebbleDaemon
    base: Path
    writer: registry.Credential
    reader: Consumer
    labelling: Consumer
    context: testing.Context
    state: testing.State
    relations: dict[str, testing.Relation]
    localize: Localizer
    bootstraps: list[ExecResult] = dataclasses.field(default_factory=list)

    @property
    def client(self) -> pebble.Client:
        return self.daemon.client

    def exec_as_service(self, command: list[str], environment: dict[str, str]) -> ExecResult:
        """Run a command in the "container" as the service user, via Pebble exec."""
        return run_exec(
            self.client,
            command,
            environment=environment,
            user=self.settings.service_user,
            group=self.settings.service_group,
            working_dir=self.settings.state_dir,
            timeout=300,
        )

    def workload(self, command: str, *args: str) -> ExecResult:
        """Run ``mlops-workload dataset <command>`` as the charm does."""
        return self.exec_as_service(
            registry.dataset_command(self.settings, command, *args),
            registry.workload_environment(self.settings),
        )

    def source_dir(self, name: str) -> Path:
        """A directory the service user can read, to hold a version's source files."""
        path = self.base / "sources" / name
        path.mkdir(parents=True)
        return path

    def tag_names(self) -> set[str]:
        """The tags the server has, read over HTTP with the writer's credentials."""
        out = git("ls-remote", "--tags", self.url_for(self.writer))
        return {line.split("refs/tags/")[1] for line in out.splitlines() if "^{}" not in line}

    def url_for(self, user: User, password: str | None = None) -> str:
        """The registry's git URL with ``user``'s credentials (a consumer's: as published)."""
        url = user.registry_url if isinstance(user, Consumer) else self.settings.git_url
        scheme, rest = url.split("://", 1)
        secret = user.password if password is None else password
        return f"{scheme}://{user.username}:{secret}@{rest}"

    def run_charm(self, event, state: testing.State) -> testing.State:
        """One more hook of the charm; the real Pebble then gets what it changed."""
        seen = len(self.context.exec_history.get(charm.CONTAINER, []))
        out = self.context.run(event, state)
        self.apply(out, self.context.exec_history.get(charm.CONTAINER, [])[seen:])
        return out

    def apply(self, state: testing.State, execs: list) -> None:
        """Do on this machine what one charm run did in its (mocked) container.

        The pushed files are on disk already (the storage is a ``testing.Mount``): they get
        this machine's paths and the service user as owner, as Pebble gives a pushed file
        its ``user``. The bootstraps the charm exec'd run for real, with the charm's command
        and environment (its other execs only read). Then the charm's layer is added and
        replanned, and the services the charm stops are stopped.
        """
        # The charm pushes only under conf_dir (and makes the state dir itself).
        conf = Path(self.settings.conf_dir)
        self.localize.files(conf)
        chown_tree(conf)
        os.chown(self.settings.state_dir, *_owner())
        for args in execs:
            if args.command[:2] != BOOTSTRAP_PREFIX:
                continue
            assert args.user == self.localize.user, f"the charm ran the bootstrap as {args.user}"
            result = self.exec_as_service(
                [self.localize.text(part) for part in args.command],
                {k: self.localize.text(v) for k, v in args.environment.items()},
            )
            assert result.exit_code == 0, f"the charm's bootstrap failed: {result.stderr}"
            self.bootstraps.append(result)
        layer = self.localize.layer(
            state.get_container(charm.CONTAINER).layers["registry"].to_dict()
        )
        self.client.add_layer("registry", layer, combine=True)
        self.client.replan_services()
        derived = charm_settings(self.context, state)
        unwanted = registry.stopped_services(derived)
        if unwanted:
            self.client.stop_services(unwanted)
        for name, check in layer.get("checks", {}).items():
            if check.get("startup") != "disabled":
                self.daemon.wait_for_check(name, timeout=60)
        self.state = state
        self.settings = self.localize.settings(derived)
        self.reader = published_consumer(state, self.relations["training"])
        self.labelling = published_consumer(state, self.relations["labelling"])


@contextlib.contextmanager
def start_registry() -> Iterator[RunningRegistry]:
    """The registry as the charm configures it on its first hook, run by a real Pebble."""
    binaries = _binaries()
    owner = _owner()
    # Not under pytest's tmp_path: its 0700 folders would hide the files from the service user.
    base = Path(tempfile.mkdtemp(prefix="registry-test-"))
    base.chmod(0o755)
    state_dir = base / "state"
    state_dir.mkdir()
    (base / "sources").mkdir()
    os.chown(base / "sources", *owner)
    config = {
        "public-host": "127.0.0.1",
        "git-port": free_port(),
        "s3-port": free_ports_in_a_row(3),
    }
    relations = {
        "training": consumer_relation("training"),
        "labelling": consumer_relation("labelling", "write"),
    }
    context = charm_context(state_dir)
    state = context.run(
        context.on.config_changed(), charm_state(state_dir, config, relations.values())
    )
    execs = list(context.exec_history.get(charm.CONTAINER, []))
    assert [a for a in execs if a.command[:2] == BOOTSTRAP_PREFIX], "no bootstrap by the charm"
    derived = charm_settings(context, state)
    (writer_secret,) = [s for s in state.secrets if s.label == charm.REGISTRY_SECRET]
    writer = registry.Credential(
        writer_secret.tracked_content["username"],
        writer_secret.tracked_content["password"],
        write=True,
    )
    try:
        with run_pebble(base) as daemon:
            (base / "pebble").chmod(0o755)
            socket_path = str(base / "pebble" / ".pebble.socket")
            localize = localizer(derived, binaries, socket_path)
            running = RunningRegistry(
                settings=localize.settings(derived),
                daemon=daemon,
                base=base,
                writer=writer,
                reader=published_consumer(state, relations["training"]),
                labelling=published_consumer(state, relations["labelling"]),
                context=context,
                state=state,
                relations=relations,
                localize=localize,
            )
            running.apply(state, execs)
            yield running
    finally:
        shutil.rmtree(base, ignore_errors=True)


def make_files(directory: Path, count: int, size: int, seed: str) -> dict[str, bytes]:
    """Write ``count`` files of distinct content; return {relative path: bytes}."""
    contents = {}
    for i in range(count):
        relative = f"part-{i % 3}/item-{i:04d}.bin"
        data = (f"{seed}:{i}:".encode() + secrets.token_bytes(size))[:size]
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        contents[relative] = data
    return contents


def chown_tree(path: Path) -> None:
    owner = _owner()
    for root, dirs, names in os.walk(path):
        for name in [*dirs, *names]:
            os.chown(Path(root) / name, *owner)
    os.chown(path, *owner)


def read_tree(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()
