"""Pebble layer pieces every workload of the stack uses the same way.

A service's secrets live in a 0600 env file that its command sources before it execs the
server, so neither the Pebble plan nor the process list ever holds a password.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ops.pebble import CheckDict, ServiceDict


@dataclass(frozen=True)
class PebbleInContainer:
    """Where a workload container finds Pebble's client and socket (Juju mounts both)."""

    binary: str = "/charm/bin/pebble"
    socket: str = "/charm/container/pebble.socket"

    def notify_command(self, key: str, *data: str) -> list[str]:
        """The command that records the custom notice ``key`` (with ``k=v`` data)."""
        return ["env", f"PEBBLE_SOCKET={self.socket}", self.binary, "notify", key, *data]


# Juju's paths; the workload tests point them at a Pebble of their own.
JUJU_PEBBLE = PebbleInContainer()


@dataclass(frozen=True)
class ReadyNotice:
    """Record the Pebble notice ``key`` once ``url`` answers (polled with ``python``)."""

    url: str
    key: str
    python: str = "python3"
    attempts: int = 600
    ca_file: str | None = None  # an https URL's CA: the server is verified with it alone

    def watcher(self) -> str:
        """A shell fragment that polls in the background and leaves the shell's job at once."""
        probe = shlex.join(_url_probe(self.url, self.python, self.ca_file))
        notify = shlex.join(JUJU_PEBBLE.notify_command(self.key))
        loop = (
            f"i=0; until {probe}; do i=$((i+1)); "
            f"[ $i -ge {self.attempts} ] && exit 1; sleep 1; done; {notify}"
        )
        return f"{{ ( {loop} ) >/dev/null 2>&1 & }}"


def secrets_env(values: Mapping[str, str]) -> str:
    """The content of a secrets env file: one shell-quoted ``export`` per variable."""
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in values.items())


def service_sourcing_secrets(
    *,
    summary: str,
    secrets_env_path: str,
    command: Sequence[str],
    environment: Mapping[str, str],
    before: Sequence[Sequence[str]] = (),
    ready_notice: ReadyNotice | None = None,
) -> ServiceDict:
    """A service that sources ``secrets_env_path``, runs ``before`` in order, then execs.

    With ``ready_notice``, a background watcher records that Pebble notice once the server
    answers, so the charm acts on a started server at once rather than at the next
    update-status (a Pebble check reports recovery only after a failure).
    """
    steps = [f". {shlex.quote(secrets_env_path)}", *(shlex.join(step) for step in before)]
    if ready_notice is not None:
        steps.append(ready_notice.watcher())
    launch = " && ".join([*steps, f"exec {shlex.join(command)}"])
    return {
        "override": "replace",
        "summary": summary,
        "command": shlex.join(["/bin/sh", "-c", launch]),
        "startup": "enabled",
        "environment": dict(environment),
    }


def http_ready_check(url: str) -> CheckDict:
    """A readiness check on an HTTP health endpoint, the same cadence for every workload."""
    return {**_READY_CHECK, "http": {"url": url}}


def https_ready_check(url: str, ca_file: str, python: str = "python3") -> CheckDict:
    """A readiness check on an HTTPS health endpoint whose server ``ca_file`` verifies.

    Pebble's own http check trusts only the system's CAs: the stack's CA is a private one,
    so the workload's Python asks instead, with that CA alone.
    """
    return {**_READY_CHECK, "exec": {"command": shlex.join(_url_probe(url, python, ca_file))}}


def _url_probe(url: str, python: str, ca_file: str | None) -> list[str]:
    """A command that succeeds when ``url`` answers 2xx (verified with ``ca_file``, if given)."""
    script = "import sys, urllib.request as u; u.urlopen(sys.argv[1], timeout=2)"
    # Python's default TLS context reads SSL_CERT_FILE: this probe trusts that CA only.
    trust = ["env", f"SSL_CERT_FILE={ca_file}"] if ca_file else []
    return [*trust, python, "-c", script, url]


def tcp_ready_check(port: int, host: str = "127.0.0.1") -> CheckDict:
    """A readiness check that a server accepts connections (one without a health URL)."""
    return {**_READY_CHECK, "tcp": {"host": host, "port": port}}


_READY_CHECK: CheckDict = {
    "override": "replace",
    "level": "ready",
    "period": "10s",
    "timeout": "3s",
    "threshold": 3,
}
