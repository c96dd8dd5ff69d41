"""Real processes for the workload tests: a Pebble daemon, a PostgreSQL server, a systemd unit.

Each is started by the test on a free loopback port (there is no systemd here) and stopped
by its PID. A test skips, saying why, when a binary it needs is not installed; CI installs
them all (tools/install-test-deps.sh).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest
from ops import pebble

from tests.systemd_units import environment_file, systemd_words
from tests.workload.tls import ServerCertificate


def missing(reason: str) -> NoReturn:
    """Skip a test whose program is not installed, or fail it where every workload must run.

    CI sets MLOPS_REQUIRE_WORKLOADS=1, so a broken install cannot pass as a skipped test.
    """
    if os.environ.get("MLOPS_REQUIRE_WORKLOADS"):
        pytest.fail(f"required workload missing: {reason}")
    pytest.skip(reason)


def assert_systemd_verifies(path: Path) -> None:
    """``systemd-analyze verify`` accepts the unit file at ``path``.

    What it says about other units (this machine's own) does not count.
    """
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        missing("systemd-analyze is not installed")
    verified = subprocess.run(
        [analyze, "verify", "--man=no", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    problems = [line for line in verified.stderr.splitlines() if str(path) in line]
    assert verified.returncode == 0, f"{path.name}: {verified.stderr}"
    assert problems == [], path.name


# systemd's DefaultTimeoutStopSec, for a unit that does not set its own.
DEFAULT_TIMEOUT_STOP_SEC = 90
# systemd's default PATH for a service.
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"


def unit_environment(unit: Mapping[str, list[str]]) -> dict[str, str]:
    """The environment systemd gives a unit's commands: its user's, then its own settings.

    ``EnvironmentFile`` is read after ``Environment=`` and wins where both set a name.
    """
    (user,) = unit["User"]
    home = pwd.getpwnam(user).pw_dir
    return {
        "PATH": SYSTEMD_PATH,
        "HOME": home,
        "USER": user,
        "LOGNAME": user,
        **dict(systemd_words(line)[0].split("=", 1) for line in unit.get("Environment", [])),
        **{
            name: value
            for env_path in unit.get("EnvironmentFile", [])
            for name, value in environment_file(Path(env_path).read_text()).items()
        },
    }


@contextlib.contextmanager
def run_unit(
    unit: Mapping[str, list[str]],
    ready: str | Callable[[], bool],
    log_path: Path,
    ready_timeout: float = 240,
) -> Iterator[None]:
    """Run a rendered unit's ``unit_settings`` as systemd would, until it is ``ready``.

    Its ``ExecStartPre`` steps in order, then its ``ExecStart``, with its environment
    (``unit_environment``), as its ``User`` and ``Group`` in its ``WorkingDirectory``; stopped
    as systemd stops it: SIGTERM to the whole process group, SIGKILL after ``TimeoutStopSec``.
    ``ready``: a URL that answers 200, or a test. What the unit prints goes to ``log_path``, a
    file: a pipe that nobody reads fills up and blocks the server.
    """
    environment = unit_environment(unit)
    run = {
        "env": environment,
        "cwd": unit["WorkingDirectory"][0],
        "user": unit["User"][0],
        "group": unit.get("Group", [None])[0],
    }
    is_ready = functools.partial(answers_200, ready) if isinstance(ready, str) else ready
    with log_path.open("ab") as log:
        for line in unit.get("ExecStartPre", []):
            step = systemd_words(line)
            # systemd finds a command without a folder on its own fixed search path.
            step[0] = shutil.which(step[0], path=environment["PATH"]) or step[0]
            subprocess.run(step, **run, check=True, stdout=log, stderr=log, timeout=600)
        process = subprocess.Popen(
            systemd_words(unit["ExecStart"][0]),
            **run,
            start_new_session=True,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + ready_timeout
        while not is_ready():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{log_path.stem} is not ready:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.2)
        yield
    finally:
        stop_timeout = int(unit.get("TimeoutStopSec", [DEFAULT_TIMEOUT_STOP_SEC])[0])
        stop_process(process, stop_timeout, group=True)


def stop_process(process: subprocess.Popen, timeout: float, *, group: bool = False) -> None:
    """SIGTERM to ``process`` (or its whole process group), SIGKILL if it outlives ``timeout``.

    A server slow to stop is killed, as systemd and Pebble kill it, not left to fail the test
    it served; a warning says so.
    """
    send = functools.partial(os.killpg, process.pid) if group else process.send_signal
    send(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        process.wait(timeout=10)
        warnings.warn(f"{process.args!r} ignored SIGTERM for {timeout} s", stacklevel=2)


def answers_200(url: str, timeout: float = 2) -> bool:
    """``url`` answers 200 now, within ``timeout`` seconds."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status == 200
    except OSError:
        return False


@dataclass(frozen=True)
class ExecResult:
    """What one command run through Pebble exec gave back."""

    exit_code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> dict:
        return json.loads(self.stdout)


def run_exec(client: pebble.Client, command: list[str], **options) -> ExecResult:
    """Run ``command`` through Pebble exec (``options`` go to ``Client.exec``) and collect it."""
    process = client.exec(command, **options)
    try:
        stdout, stderr = process.wait_output()
    except pebble.ExecError as error:
        return ExecResult(error.exit_code, str(error.stdout or ""), str(error.stderr or ""))
    return ExecResult(0, stdout, stderr or "")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class PebbleDaemon:
    """A running ``pebble run`` and a client on its socket."""

    client: pebble.Client
    log_path: Path

    def wait_for_check(self, name: str, timeout: float = 120.0) -> pebble.CheckInfo:
        """Wait until Pebble's check ``name`` has succeeded at least once and is up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            checks = self.client.get_checks(names=[name])
            if checks and checks[0].status == pebble.CheckStatus.UP and checks[0].successes:
                return checks[0]
            time.sleep(0.5)
        raise AssertionError(f"check {name} not up after {timeout}s:\n{self.log_path.read_text()}")


def _answers(client: pebble.Client) -> bool:
    try:
        client.get_system_info()
    except (pebble.ConnectionError, pebble.APIError, FileNotFoundError, ConnectionError):
        return False
    return True


@contextlib.contextmanager
def run_pebble(tmp_path: Path) -> Iterator[PebbleDaemon]:
    """A real Pebble daemon whose services find this interpreter's tools on PATH."""
    binary = os.environ.get("PEBBLE_BIN") or shutil.which("pebble")
    if not binary:
        missing("pebble is not installed (tools/install-test-deps.sh builds it)")
    pebble_dir = tmp_path / "pebble"
    pebble_dir.mkdir()
    log_path = tmp_path / "pebble.log"
    env = {
        **os.environ,
        "PEBBLE": str(pebble_dir),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    # The tests' module path is not the workload's (a charm's src/ would shadow a package).
    env.pop("PYTHONPATH", None)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [binary, "run", "--create-dirs"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    socket_path = pebble_dir / ".pebble.socket"
    client = pebble.Client(socket_path=str(socket_path))
    deadline = time.monotonic() + 20
    # The socket file appears before Pebble accepts connections: wait until it answers.
    while not _answers(client):
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise AssertionError(f"pebble did not start:\n{log_path.read_text()}")
        time.sleep(0.02)
    try:
        yield PebbleDaemon(client=client, log_path=log_path)
    finally:
        try:
            client.stop_services([s.name for s in client.get_services() if s.is_running()])
        except (pebble.APIError, pebble.ChangeError, pebble.ConnectionError):
            pass
        stop_process(process, 15)


@dataclass(frozen=True)
class PostgreSQLServer:
    """A server that trusts local socket connections and wants passwords over TCP."""

    host: str
    port: int
    socket_dir: Path
    superuser: str
    bindir: Path

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` as the superuser and return psql's unaligned output."""
        result = subprocess.run(
            [
                str(self.bindir / "psql"),
                "-h",
                str(self.socket_dir),
                "-p",
                str(self.port),
                "-U",
                self.superuser,
                "-d",
                database,
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        return result.stdout.strip()


def _postgres_bindir() -> Path | None:
    """``PG_BINDIR``, else the newest server the distro's ``postgresql`` package installed.

    Debian 12's is 15, Ubuntu 24.04's 16: ``/usr/lib/postgresql/<major>/bin``.
    """
    installed = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda bindir: int(bindir.parent.name) if bindir.parent.name.isdigit() else -1,
        reverse=True,
    )
    candidates = [os.environ.get("PG_BINDIR", ""), *map(str, installed)]
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").exists():
            return Path(candidate)
    return None


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode:
        raise AssertionError(f"{command[-1]!r} failed: {result.stdout}{result.stderr}")


@contextlib.contextmanager
def run_postgresql(tls: ServerCertificate | None = None) -> Iterator[PostgreSQLServer]:
    """A PostgreSQL server from Debian's package: ``initdb`` + ``pg_ctl`` on a free port.

    With ``tls``, the server speaks TLS with that certificate (clients choose to verify it).
    """
    bindir = _postgres_bindir()
    if bindir is None:
        missing("PostgreSQL server binaries not installed (apt-get install postgresql)")
    run_as: list[str] = []
    owner: pwd.struct_passwd | None = None
    # Not under pytest's tmp dir: that is private to root, and the server may not be root.
    with tempfile.TemporaryDirectory(prefix="mlops-postgresql-") as base_name:
        base = Path(base_name)
        data_dir, socket_dir = base / "data", base / "socket"
        socket_dir.mkdir()
        if os.geteuid() == 0:
            # initdb refuses to run as root: run the server as Debian's postgres user.
            owner = pwd.getpwnam("postgres")
            for path in (base, socket_dir):
                os.chown(path, owner.pw_uid, owner.pw_gid)
            run_as = ["runuser", "-u", "postgres", "--"]
        port = free_port()
        _run(
            [
                *run_as,
                str(bindir / "initdb"),
                "-D",
                str(data_dir),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
            ]
        )
        options = f"-p {port} -k {socket_dir} -c listen_addresses=127.0.0.1"
        if tls is not None:
            # The server reads its key only if it owns it, mode 0600.
            for source, name in ((tls.cert, "server.crt"), (tls.key, "server.key")):
                copy = base / name
                copy.write_bytes(source.read_bytes())
                copy.chmod(0o600)
                if owner is not None:
                    os.chown(copy, owner.pw_uid, owner.pw_gid)
            options += f" -c ssl=on -c ssl_cert_file={base}/server.crt"
            options += f" -c ssl_key_file={base}/server.key"
        _run(
            [
                *run_as,
                str(bindir / "pg_ctl"),
                "-D",
                str(data_dir),
                "-w",
                "-l",
                str(base / "log"),
                "-o",
                options,
                "start",
            ]
        )
        try:
            yield PostgreSQLServer(
                host="127.0.0.1",
                port=port,
                socket_dir=socket_dir,
                superuser="postgres",
                bindir=bindir,
            )
        finally:
            subprocess.run(
                [*run_as, str(bindir / "pg_ctl"), "-D", str(data_dir), "-m", "immediate", "stop"],
                check=False,
                capture_output=True,
            )
