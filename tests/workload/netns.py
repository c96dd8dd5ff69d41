"""A Pebble with no way out, and proof of every connection its processes tried to make.

``run_isolated_pebble`` starts a real Pebble, as ``processes.run_pebble`` does, but inside a
network namespace that has only loopback, under ``strace -f`` recording every ``connect()``
of Pebble, of its services and of whatever runs through ``pebble exec`` (clients included), as
well as each process's program. Name lookups go to a stub DNS server on the namespace's
loopback that records the names asked and answers each with a TEST-NET-2 address of its own
(198.51.100.0/24): a process that wants to reach a host by name goes on to ``connect()`` to
that address, which the namespace cannot route, and the trace shows the attempt with its name.

``outside_connections`` reads the trace: every ``connect()`` to anything but loopback, an
AF_UNIX socket or the kernel (netlink) is an attempt to reach the outside.

Pebble starts with a small environment of its own (no CI markers, no telemetry switches, an
empty HOME), as in a container, so that the switches that count are those the charm's layer
and exec environments set, and nothing of the test's environment turns anything off.
Needs root (a network and a mount namespace) and the ``strace``, ``unshare`` and ``ip``
programs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import os
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ops import pebble

from tests.workload.processes import ExecResult, PebbleDaemon, missing, run_exec

DNS_ANSWER_NETWORK = "198.51.100"  # TEST-NET-2: documentation only, routed nowhere
# What a process started by Pebble finds in its environment (plus what its layer sets).
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_TRACED_CALLS = "connect,execve,clone,clone3,fork,vfork"


@dataclass(frozen=True)
class OutsideConnection:
    """One ``connect()`` to an address outside the machine."""

    pid: int
    program: str
    family: str
    address: str
    port: int | None
    name: str | None  # the name the process looked up to get the address, if any

    @property
    def target(self) -> str:
        return self.address if self.port is None else f"{self.address}:{self.port}"

    def __str__(self) -> str:
        looked_up = f" ({self.name})" if self.name else ""
        return f"pid {self.pid} [{self.program}] connect {self.family} {self.target}{looked_up}"


@dataclass
class IsolatedPebble(PebbleDaemon):
    """A ``PebbleDaemon`` in a loopback-only network namespace, its connections traced.

    Its records are read once it has ended (Pebble and every process it traced, detached
    ones included, so that late senders count), and are kept after its files are gone.
    """

    trace_path: Path
    dns_log_path: Path
    ended: bool = False
    trace: str = ""
    dns_log: str = ""

    def end(self) -> None:
        """Keep the records: everything traced has ended."""
        self.trace = self.trace_path.read_text(errors="replace")
        self.dns_log = self.dns_log_path.read_text(errors="replace")
        self.ended = True

    def names_looked_up(self) -> dict[str, str]:
        """Every name asked of the DNS stub, and the address it was given ("" if none)."""
        names: dict[str, str] = {}
        for line in self.dns_log.splitlines():
            name, _, address = line.partition(" ")
            names[name] = names.get(name) or address
        return names

    def outside_connections(self) -> list[OutsideConnection]:
        """Every ``connect()`` that went beyond this host."""
        assert self.ended, "read the trace once the isolated Pebble has ended"
        names = {address: name for name, address in self.names_looked_up().items() if address}
        return outside_connections(self.trace, names)

    def report(self) -> str:
        """The outside connections (alike ones counted once) and the names looked up."""
        found = Counter(dataclasses.replace(c, pid=0) for c in self.outside_connections())
        lines = [f"{found.total()} connect() beyond this host:"]
        lines += [
            f"  {count} x [{c.program}] {c.family} {c.target}" + (f" ({c.name})" if c.name else "")
            for c, count in found.most_common()
        ]
        names = sorted(self.names_looked_up())
        lines.append(f"names looked up: {', '.join(names) if names else 'none'}")
        return "\n".join(lines)

    def assert_nothing_left(self) -> None:
        """Fail, saying who tried to connect where, if anything tried to leave this host."""
        if self.outside_connections():
            raise AssertionError(self.report())


# --- reading the trace ------------------------------------------------------------------

_LINE = re.compile(r"^(?P<pid>\d+)\s+(?P<rest>.*)$")
_CONNECT = re.compile(r"^connect\(\d+, \{sa_family=(?P<family>\w+)(?:, (?P<address>.*?))?\}")
_INET = re.compile(r'sin_port=htons\((?P<port>\d+)\), sin_addr=inet_addr\("(?P<ip>[^"]+)"\)')
_INET6 = re.compile(r'sin6_port=htons\((?P<port>\d+)\).*?inet_pton\(AF_INET6, "(?P<ip>[^"]+)"')
_EXECVE = re.compile(r'^execve\("[^"]*", \[(?P<argv>.*?)\]?(?:, 0x|\.\.\.)')
_FORKED = re.compile(r"^(?:<\.\.\. )?(?:clone3?|v?fork)\b.*= (?P<child>\d+)$")
_EXEC_DONE = re.compile(r"^(?:<\.\.\. execve resumed>.*|execve\(.*)= 0$")
# Not the network: local sockets, a UDP socket's disconnect, the kernel.
_LOCAL_FAMILIES = {"AF_UNIX", "AF_LOCAL", "AF_UNSPEC", "AF_NETLINK"}


def _program(argv: str) -> str:
    """The first words of an execve's argv, short enough for a message."""
    words = re.findall(r'"((?:[^"\\]|\\.)*)"', argv)
    return " ".join(word if len(word) < 60 else f"{word[:57]}..." for word in words[:3]) or "?"


def _is_local(address: str) -> bool:
    """Whether ``address`` is this host: loopback, or the unspecified address.

    As a destination, 0.0.0.0 and :: mean this host (Apache wakes its own listeners so).
    """
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return any(i.is_loopback or i.is_unspecified for i in (ip, mapped) if i is not None)


def _outside(family: str, detail: str) -> tuple[str, int | None] | None:
    """The address and port of a connect() that left the machine, or None."""
    if family in _LOCAL_FAMILIES:
        return None
    match = _INET.search(detail) if family == "AF_INET" else _INET6.search(detail)
    if family in ("AF_INET", "AF_INET6") and match:
        if _is_local(match["ip"]):
            return None
        return match["ip"], int(match["port"])
    return detail or "?", None  # an unknown family: report it rather than guess


def outside_connections(
    trace: str, names: dict[str, str] | None = None
) -> list[OutsideConnection]:
    """The ``connect()`` calls in ``trace`` (``strace -f`` output) that went beyond this host.

    Each is named after the program its process (or the nearest ancestor that ran one) ran;
    ``names`` maps the stub DNS's answers back to the names looked up.
    """
    names = names or {}
    parents: dict[int, int] = {}
    programs: dict[int, str] = {}
    pending: dict[int, str] = {}
    found: list[OutsideConnection] = []
    for line in trace.splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        pid, rest = int(match["pid"]), match["rest"]
        if forked := _FORKED.match(rest):
            parents[int(forked["child"])] = pid
        elif rest.startswith("execve("):
            execve = _EXECVE.match(rest)
            pending[pid] = _program(execve["argv"]) if execve else "?"
        if _EXEC_DONE.match(rest) and pid in pending:
            programs[pid] = pending.pop(pid)
        connect = _CONNECT.match(rest)
        if not connect:
            continue
        outside = _outside(connect["family"], connect["address"] or "")
        if outside:
            address, port = outside
            found.append(
                OutsideConnection(
                    pid=pid,
                    program=_program_of(pid, programs, parents),
                    family=connect["family"],
                    address=address,
                    port=port,
                    name=names.get(address),
                )
            )
    return found


def _program_of(pid: int, programs: dict[int, str], parents: dict[int, int]) -> str:
    seen = set()
    while pid not in programs and pid in parents and pid not in seen:
        seen.add(pid)
        pid = parents[pid]
    return programs.get(pid, "?")


# --- the stub DNS server ----------------------------------------------------------------


def _question(packet: bytes) -> tuple[str, int, int]:
    """The name, type and end offset of a DNS query's first question."""
    labels, offset = [], 12
    while packet[offset]:
        length = packet[offset]
        labels.append(packet[offset + 1 : offset + 1 + length].decode("ascii", "replace"))
        offset += 1 + length
    qtype = struct.unpack("!H", packet[offset + 1 : offset + 3])[0]
    return ".".join(labels).lower(), qtype, offset + 5


def serve_dns(log_path: Path, ready_path: Path) -> None:
    """Answer every A query on 127.0.0.1:53 with an address of its own; log each name."""
    answers: dict[str, str] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 53))
        ready_path.touch()
        while True:
            packet, client = server.recvfrom(4096)
            try:
                name, qtype, end = _question(packet)
            except (IndexError, struct.error):
                continue
            answer = b""
            address = ""
            if qtype == 1:  # A; AAAA and the rest get no answer
                address = answers.setdefault(
                    name, f"{DNS_ANSWER_NETWORK}.{len(answers) % 254 + 1}"
                )
                answer = (
                    b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton(address)
                )
            with log_path.open("a") as log:
                log.write(f"{name} {address}\n")
            header = packet[:2] + b"\x81\x80" + struct.pack("!HHHH", 1, 1 if answer else 0, 0, 0)
            server.sendto(header + packet[12:end] + answer, client)


# --- the isolated Pebble ----------------------------------------------------------------


def _require_tools() -> dict[str, str]:
    if os.geteuid() != 0:
        missing("a network namespace needs root (unshare --net --mount)")
    tools = {}
    for name in ("unshare", "strace", "ip", "mount"):
        path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
        if not path:
            missing(f"{name} is not installed (apt-get install strace iproute2 util-linux)")
        tools[name] = path
    binary = os.environ.get("PEBBLE_BIN") or shutil.which("pebble")
    if not binary:
        missing("pebble is not installed (tools/install-test-deps.sh builds it)")
    tools["pebble"] = binary
    return tools


def pebble_environment(pebble_dir: Path, home: Path) -> dict[str, str]:
    """Pebble's own environment, which its services and execs start from: a container's."""
    return {
        "PEBBLE": str(pebble_dir),
        "PATH": f"{Path(sys.executable).parent}:{BASE_PATH}",
        "HOME": str(home),
        "LANG": "C.UTF-8",
    }


def _launch_script(tools: dict[str, str], names: dict[str, Path]) -> str:
    q = shlex.quote
    repo_root = Path(__file__).resolve().parents[2]
    stub = [
        "env",
        f"PYTHONPATH={repo_root}",
        sys.executable,
        "-m",
        "tests.workload.netns",
        "serve-dns",
    ]
    strace = [
        tools["strace"],
        "-f",
        "-qq",
        "--seccomp-bpf",
        "-e",
        "signal=none",
        "-e",
        f"trace={_TRACED_CALLS}",
        "-s",
        "256",
        "-o",
        str(names["trace"]),
    ]
    # The traced shell writes its pid (Pebble's, once it execs) so that the test can stop it.
    pebble_run = (
        f"echo $$ > {q(str(names['pebble_pid']))}; exec {q(tools['pebble'])} run --create-dirs"
    )
    return "\n".join(
        [
            "set -eu",
            f"{q(tools['mount'])} --bind {q(str(names['resolv']))} /etc/resolv.conf",
            f"{q(tools['ip'])} link set lo up",
            f"{shlex.join(stub)} {q(str(names['dns_log']))} {q(str(names['dns_ready']))} &",
            f"echo $! > {q(str(names['dns_pid']))}",
            f"while [ ! -e {q(str(names['dns_ready']))} ]; do sleep 0.05; done",
            f"exec {shlex.join(strace)} /bin/sh -c {q(pebble_run)}",
        ]
    )


def _answers(client: pebble.Client) -> bool:
    try:
        client.get_system_info()
    except pebble.ConnectionError:
        return False
    return True


def _signal(pid_file: Path, signum: int) -> None:
    with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
        os.kill(int(pid_file.read_text().strip()), signum)


@contextlib.contextmanager
def run_isolated_pebble(tmp_path: Path) -> Iterator[IsolatedPebble]:
    """A real Pebble in a loopback-only network namespace, its processes' connects traced.

    The same layout as ``processes.run_pebble`` (``tmp_path``/pebble, ``pebble.log``), so a
    harness that calls ``run_pebble(base)`` can be given this one instead.
    """
    tools = _require_tools()
    pebble_dir = tmp_path / "pebble"
    pebble_dir.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    names = {
        "trace": tmp_path / "connect.trace",
        "resolv": tmp_path / "resolv.conf",
        "dns_log": tmp_path / "dns-queries.log",
        "dns_ready": tmp_path / "dns.ready",
        "dns_pid": tmp_path / "dns.pid",
        "pebble_pid": tmp_path / "pebble.pid",
    }
    names["resolv"].write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
    names["dns_log"].touch()
    log_path = tmp_path / "pebble.log"
    environment = pebble_environment(pebble_dir, home)
    script = _launch_script(tools, names)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [tools["unshare"], "--net", "--mount", "/bin/sh", "-c", script],
            env=environment,
            cwd=home,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    client = pebble.Client(socket_path=str(pebble_dir / ".pebble.socket"))
    deadline = time.monotonic() + 30
    # Until Pebble answers: its socket file exists from bind(), before it listens.
    while not _answers(client):
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            _signal(names["dns_pid"], signal.SIGKILL)
            raise AssertionError(f"isolated pebble did not start:\n{log_path.read_text()}")
        time.sleep(0.05)
    daemon = IsolatedPebble(
        client=client, log_path=log_path, trace_path=names["trace"], dns_log_path=names["dns_log"]
    )
    try:
        yield daemon
    finally:
        try:
            client.stop_services([s.name for s in client.get_services() if s.is_running()])
        except (pebble.APIError, pebble.ChangeError, pebble.ConnectionError):
            pass
        _signal(names["pebble_pid"], signal.SIGTERM)
        # strace ends once Pebble and every process it traces have ended, and the stub DNS
        # server (its child, not traced) has too.
        _signal(names["dns_pid"], signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            _signal(names["pebble_pid"], signal.SIGKILL)
            process.kill()
            process.wait(timeout=10)
        daemon.end()


def exec_in(
    daemon: PebbleDaemon, command: list[str], environment: dict[str, str], **options
) -> ExecResult:
    """Run ``command`` through Pebble exec, so in the namespace and under the tracer."""
    return run_exec(daemon.client, command, environment=environment, **options)


def probe_outside_connect(daemon: IsolatedPebble) -> None:
    """Run a tiny process that connects out, by address and by name.

    It connects to 192.0.2.1:443 (TEST-NET-1) and to telemetry.example.com:443, which the
    stub DNS answers with a TEST-NET-2 address: the trace must show both.
    """
    probe = (
        "import socket\n"
        "for host in ('192.0.2.1', 'telemetry.example.com'):\n"
        "    try:\n"
        "        socket.create_connection((host, 443), timeout=2).close()\n"
        "    except OSError:\n"
        "        pass\n"
    )
    result = exec_in(daemon, [sys.executable, "-c", probe], {}, timeout=30)
    assert result.exit_code == 0, result.stderr


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve-dns"]:
        serve_dns(Path(sys.argv[2]), Path(sys.argv[3]))
