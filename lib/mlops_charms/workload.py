"""Pebble layer pieces every workload of the stack uses the same way.

A service's secrets live in a 0600 env file that its command sources before it execs the
server, so neither the Pebble plan nor the process list ever holds a password.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ops.pebble import CheckDict, ServiceDict


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
) -> ServiceDict:
    """A service that sources ``secrets_env_path``, runs ``before`` in order, then execs."""
    steps = [f". {shlex.quote(secrets_env_path)}", *(shlex.join(step) for step in before)]
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
    return {
        "override": "replace",
        "level": "ready",
        "period": "10s",
        "timeout": "3s",
        "threshold": 3,
        "http": {"url": url},
    }
