"""Real processes for the workload tests: a Pebble daemon and a PostgreSQL server.

Each is started by the test on a free loopback port (there is no systemd here) and stopped
by its PID. A test skips, saying why, when a binary it needs is not installed; CI installs
them all (tools/install-test-deps.sh).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest
from ops import pebble

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
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


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
