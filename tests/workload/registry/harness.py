"""A real data registry for the workload tests: the charm itself runs it on a real Pebble.

``PebbleBackedCharm`` (tests/workload/pebble_backed.py) runs hooks of the real charm whose
``registry`` container is a real Pebble daemon: the charm pushes its files to the test's
storage folder, execs the real bootstrap, and its layer runs Apache httpd + git http-backend and
two ``rclone serve s3`` servers as the rock's user ``_daemon_``. Only the rock's program paths
become this machine's (``mlops_charms.registry.ROCK``), and Juju's Pebble client path this
daemon's.

Consumers are plain ``git`` and ``dvc`` processes that know only what the charm published on
their ``mlops-dataset`` relation: the databag's URLs and their Juju secret's content.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import ops
import pytest
from ops import pebble, testing

from mlops_charms import registry, registry_server
from mlops_charms.dataset import DatasetProviderData
from tests.charm_testing import load_charm_module
from tests.workload.pebble_backed import PebbleBackedCharm, shared_folder
from tests.workload.processes import ExecResult, PebbleDaemon, free_port, missing, run_exec

CHARM_ROOT = Path(__file__).resolve().parents[3] / "charms" / "data-versioning-k8s"
CHARM_SRC = CHARM_ROOT / "src"
if str(CHARM_SRC) not in sys.path:
    sys.path.insert(0, str(CHARM_SRC))


VENV_BIN = Path(sys.executable).parent
charm = load_charm_module(CHARM_SRC, "data_versioning_k8s_charm")
SERVICE_USER = charm.DataVersioningCharm.service_user


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
    latest_version: str | None = None
    pinned_version: str | None = None


@dataclass(frozen=True)
class Operator:
    """The charm's own registry user (its secret): what an operator could use."""

    username: str
    password: str
    s3_access_key: str
    s3_secret_key: str


User = Consumer | Operator


def git(*args: str, cwd: Path | None = None, check: bool = True, env=None) -> str:
    base = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/false"}
    proc = subprocess.run(
        ["git", *args], cwd=cwd, env={**base, **(env or {})}, capture_output=True, text=True
    )
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


def local_binaries() -> registry.Binaries:
    """The programs of this machine, in place of the rock's."""
    wanted = {
        "apache": "/usr/sbin/apache2",
        "git_http_backend": "/usr/lib/git-core/git-http-backend",
        "rclone": str(VENV_BIN / "rclone"),
        "dvc": str(VENV_BIN / "dvc"),
        "mlops_workload": str(VENV_BIN / "mlops-workload"),
    }
    for name, path in wanted.items():
        if not Path(path).exists():
            missing(f"{name} is not installed at {path} (see the registry test requirements)")
    if not (os.environ.get("PEBBLE_BIN") or shutil.which("pebble")):
        missing("pebble is not installed (tools/install-test-deps.sh builds it)")
    return registry.Binaries(**wanted)


def service_owner() -> tuple[int, int]:
    """The rock's service user, which must exist here and run this venv's programs."""
    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        missing(f"the rock's user {SERVICE_USER} does not exist (install-test-deps adds it)")
    if os.geteuid() != 0:
        pytest.skip("the registry's services run as another user: run the tests as root")
    probe = subprocess.run(
        ["runuser", "-u", SERVICE_USER, "--", sys.executable, "-c", "import mlops_workload"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.fail(
            f"{SERVICE_USER} cannot run {sys.executable}: create the test venv from a "
            f"system Python (/usr/bin/python3): {probe.stderr.strip()[-200:]}"
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


def consumer_relation(app: str, access: str | None = None) -> testing.Relation:
    """A consumer application on ``mlops-dataset`` asking for ``access``."""
    return testing.Relation(
        registry_server.DATASET_ENDPOINT,
        interface="mlops_dataset",
        remote_app_name=app,
        remote_app_data={"access": json.dumps(access)} if access else {},
    )


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
        latest_version=data.latest_version,
        pinned_version=data.pinned_version,
    )


@dataclass
class RunningRegistry:
    """The registry under test, run by the charm, and the handles the tests need.

    ``settings`` are the charm's own; ``writer`` is the charm's registry user (from its
    secret), the operator's view; ``reader`` and ``labelling`` are consumers that know only
    what the charm published.
    """

    unit: PebbleBackedCharm
    base: Path
    state: testing.State
    relations: dict[str, testing.Relation]
    settings: registry.RegistrySettings = dataclasses.field(init=False)
    writer: Operator = dataclasses.field(init=False)
    reader: Consumer = dataclasses.field(init=False)
    labelling: Consumer = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.refresh(self.state)

    @property
    def client(self) -> pebble.Client:
        return self.unit.containers[charm.CONTAINER].client

    @property
    def daemon(self) -> PebbleDaemon:
        daemon = self.unit.containers[charm.CONTAINER].daemon
        assert daemon is not None
        return daemon

    @property
    def context(self) -> testing.Context:
        return self.unit.context

    @property
    def objects(self) -> Path:
        """The embedded remote's objects: the bucket folder consumers know as s3://dvc."""
        return Path(self.settings.s3_root) / registry.DVC_BUCKET

    def refresh(self, state: testing.State) -> None:
        """Take the charm's State after a hook: its settings, users and published data."""
        self.state = state
        self.settings = charm_settings(self.unit, state)
        (writer_secret,) = [s for s in state.secrets if s.label == registry_server.REGISTRY_SECRET]
        content = writer_secret.latest_content or writer_secret.tracked_content
        self.writer = Operator(
            content["username"], content["password"], content["access-key"], content["secret-key"]
        )
        present = {relation.id for relation in state.relations}
        if "training" in self.relations and self.relations["training"].id in present:
            self.reader = published_consumer(state, self.relations["training"])
        if "labelling" in self.relations and self.relations["labelling"].id in present:
            self.labelling = published_consumer(state, self.relations["labelling"])

    def run_charm(self, event, state: testing.State | None = None) -> testing.State:
        """One more hook of the charm on the real Pebble."""
        out = self.unit.run(event, self.state if state is None else state)
        self.refresh(out)
        return out

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
        """Run ``mlops-workload dataset <command>`` with the charm's environment."""
        return self.exec_as_service(
            registry.dataset_command(self.settings, command, *args),
            registry.workload_environment(self.settings),
        )

    def source_dir(self, name: str) -> Path:
        """A folder on the registry's storage (where create-version sources live)."""
        path = Path(self.settings.state_dir) / "uploads" / name
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


def charm_settings(unit: PebbleBackedCharm, state: testing.State) -> registry.RegistrySettings:
    """The settings the charm derives from ``state`` (config, storage, secrets, relations)."""
    with unit.charm(state) as live:
        settings = live._ready_settings()
    assert settings is not None, "the charm has no settings: secrets missing?"
    return settings


def registry_unit(
    base: Path,
    charm_class: type[ops.CharmBase] | None = None,
    charm_root: Path = CHARM_ROOT,
    registry_module: ModuleType = registry,
) -> PebbleBackedCharm:
    """The data-versioning charm with its container on a real Pebble under ``base``.

    By default the current charm; a previous release's (tests/previous_release.py) with its
    folder and its own ``mlops_charms.registry``, whose ``ROCK`` its code reads.
    """
    binaries = registry_module.Binaries(**dataclasses.asdict(local_binaries()))
    service_owner()
    return PebbleBackedCharm(
        charm_class or charm.DataVersioningCharm,
        charm_root,
        base,
        rock_paths={registry_module: binaries},
    )


def first_state(unit: PebbleBackedCharm, relations=(), **config) -> testing.State:
    """A leader unit, before its first hook, with free ports and the given relations."""
    config = {
        "public-host": "127.0.0.1",
        "git-port": free_port(),
        "s3-port": free_ports_in_a_row(3),
        "metrics-port": free_port(),
        **config,
    }
    return testing.State(
        leader=True,
        config=config,
        containers={unit.container_state(charm.CONTAINER)},
        storages=unit.storages(),
        relations={testing.PeerRelation(registry_server.PEERS), *relations},
    )


def deploy(unit: PebbleBackedCharm, state: testing.State) -> testing.State:
    """The hooks of a new unit, in Juju's order, until the registry serves."""
    container = state.get_container(charm.CONTAINER)
    storage = next(iter(state.storages))
    for event in (
        unit.context.on.install(),
        unit.context.on.storage_attached(storage),
        unit.context.on.leader_elected(),
        unit.context.on.config_changed(),
        unit.context.on.start(),
        unit.context.on.pebble_ready(container),
    ):
        state = unit.run(event, state)
    for relation in state.relations:
        if relation.endpoint == registry_server.DATASET_ENDPOINT:
            state = unit.run(unit.context.on.relation_joined(relation), state)
            state = unit.run(unit.context.on.relation_changed(relation), state)
    unit.containers[charm.CONTAINER].wait_for_checks(timeout=60)
    return state


@contextlib.contextmanager
def start_registry() -> Iterator[RunningRegistry]:
    """The registry as the charm runs it after deploy, with a reader and a writer consumer."""
    with shared_folder("registry-test-") as base:
        unit = registry_unit(base)
        relations = {
            "training": consumer_relation("training"),
            "labelling": consumer_relation("labelling", "write"),
        }
        unit.start()
        try:
            state = deploy(unit, first_state(unit, relations.values()))
            yield RunningRegistry(unit=unit, base=base, state=state, relations=relations)
        finally:
            unit.stop()


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
    """Give a tree to the rock's service user (the registry's jobs read sources as it)."""
    owner = service_owner()
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
