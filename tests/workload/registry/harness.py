"""A real data registry for the workload tests: Pebble runs the layer registry.py renders.

Pebble (a real daemon) runs Apache httpd + git http-backend and two ``rclone serve s3``
endpoints; the bootstrap and every dataset command run through ``pebble exec`` as the
service user, as the charm runs them. Consumers are plain ``git`` and ``dvc`` processes
that know only the credentials a consumer would be given.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from ops import pebble

from tests.workload.processes import PebbleDaemon, free_port, missing, run_pebble

CHARM_SRC = Path(__file__).resolve().parents[3] / "charms" / "data-versioning-k8s" / "src"
sys.path.insert(0, str(CHARM_SRC))

import registry  # noqa: E402

VENV_BIN = Path(sys.executable).parent
SERVICE_USER = "www-data"


@dataclass(frozen=True)
class WorkloadResult:
    """What one ``mlops-workload`` run gave back."""

    exit_code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> dict:
        return json.loads(self.stdout)


@dataclass
class RunningRegistry:
    """The registry under test and the handles the tests need."""

    settings: registry.RegistrySettings
    daemon: PebbleDaemon
    base: Path
    writer: registry.Credential
    reader: registry.Credential
    labelling: registry.Credential

    @property
    def client(self) -> pebble.Client:
        return self.daemon.client

    def exec_as_service(self, command: list[str], environment: dict[str, str]) -> WorkloadResult:
        """Run a command in the "container" as the service user, via Pebble exec."""
        user = SERVICE_USER if os.geteuid() == 0 else None
        process = self.client.exec(
            command,
            environment=environment,
            user=user,
            group=user,
            working_dir=self.settings.state_dir,
            timeout=300,
        )
        try:
            stdout, stderr = process.wait_output()
        except pebble.ExecError as exc:
            return WorkloadResult(exc.exit_code, str(exc.stdout or ""), str(exc.stderr or ""))
        return WorkloadResult(0, stdout, stderr or "")

    def workload(self, command: str, *args: str) -> WorkloadResult:
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

    def url_for(self, user: registry.Credential, password: str | None = None) -> str:
        host = f"{self.settings.public_host}:{self.settings.git_port}"
        secret = user.password if password is None else password
        return f"http://{user.username}:{secret}@{host}/{registry.REPOSITORY_NAME}"


def git(*args: str, cwd: Path | None = None, check: bool = True) -> str:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/false"}
    proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"git {args[0]} failed: {proc.stderr}")
    return proc.stdout if check else proc.stdout + proc.stderr


def dvc_env(user: registry.Credential) -> dict[str, str]:
    """A consumer's environment: its S3 keys and nothing of the test's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID=user.s3_access_key,
        AWS_SECRET_ACCESS_KEY=user.s3_secret_key,
        DVC_NO_ANALYTICS="1",
    )
    return env


def dvc(*args: str, cwd: Path, user: registry.Credential) -> subprocess.CompletedProcess[str]:
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


def write_files(settings: registry.RegistrySettings, owner: tuple[int, int]) -> None:
    """Write the rendered files as the charm pushes them: content, mode, owner."""
    for path, (content, mode) in registry.files(settings).items():
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.chown(target.parent, *owner)
        target.write_text(content)
        target.chmod(mode)
        os.chown(target, *owner)


def wait_until_up(daemon: PebbleDaemon, settings: registry.RegistrySettings) -> None:
    for check in (
        registry.GIT_READY_CHECK,
        registry.S3_READY_CHECK,
        registry.S3_READ_ONLY_READY_CHECK,
    ):
        daemon.wait_for_check(check, timeout=60)


@contextlib.contextmanager
def start_registry() -> Iterator[RunningRegistry]:
    binaries = _binaries()
    owner = _owner()
    # Not under pytest's tmp_path: its 0700 folders would hide the files from the service user.
    base = Path(tempfile.mkdtemp(prefix="registry-test-"))
    base.chmod(0o755)
    state = base / "state"
    state.mkdir()
    (base / "sources").mkdir()
    os.chown(state, *owner)
    os.chown(base / "sources", *owner)
    writer = registry.Credential("registry", secrets.token_urlsafe(24), write=True)
    labelling = registry.Credential("labelling", secrets.token_urlsafe(24), write=True)
    reader = registry.Credential("training", secrets.token_urlsafe(24), write=False)
    try:
        with run_pebble(base) as daemon:
            (base / "pebble").chmod(0o755)
            root = os.geteuid() == 0
            settings = registry.RegistrySettings(
                state_dir=str(state),
                public_host="127.0.0.1",
                users=(writer, labelling, reader),
                git_port=free_port(),
                s3_port=free_port(),
                s3_read_only_port=free_port(),
                s3_read_only_backend_port=free_port(),
                bind_address="127.0.0.1",
                service_user=SERVICE_USER if root else None,
                service_group=SERVICE_USER if root else None,
                pebble_socket=str(base / "pebble" / ".pebble.socket"),
                binaries=binaries,
            )
            write_files(settings, owner)
            running = RunningRegistry(settings, daemon, base, writer, reader, labelling)
            boot = running.exec_as_service(
                registry.bootstrap_command(settings), {"HOME": settings.state_dir}
            )
            assert boot.exit_code == 0, boot.stderr
            daemon.client.add_layer("registry", registry.layer(settings), combine=True)
            daemon.client.replan_services()
            wait_until_up(daemon, settings)
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
