"""Helpers for the lib tests that run on a real Pebble daemon (see conftest.py)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from typing import TypeVar

import ops
from ops import pebble
from ops.jujucontext import JujuContext

from tests.workload.processes import PebbleDaemon

T = TypeVar("T")


def pebble_binary() -> str:
    """The pebble the daemon runs (``run_pebble`` finds it the same way)."""
    return os.environ.get("PEBBLE_BIN") or shutil.which("pebble") or "pebble"


def container_on(client: pebble.Client, name: str = "workload") -> ops.Container:
    """An ``ops.Container`` whose Pebble is ``client``, as a charm's is on Juju's socket."""
    context = JujuContext._from_dict({"JUJU_VERSION": "3.6.4", "JUJU_UNIT_NAME": "demo/0"})
    return ops.Container(name, ops.model._ModelBackend(juju_context=context), client)


def custom_notices(daemon: PebbleDaemon, key: str) -> list[pebble.Notice]:
    """The custom notices ``key`` recorded in ``daemon``, whoever recorded them."""
    return daemon.client.get_notices(
        types=[pebble.NoticeType.CUSTOM], keys=[key], users=pebble.NoticesUsers.ALL
    )


def change_kinds(daemon: PebbleDaemon) -> list[str]:
    """The kinds of the service changes Pebble made, oldest first (check runs left out)."""
    changes = daemon.client.get_changes(select=pebble.ChangeState.ALL)
    ordered = sorted(changes, key=lambda change: int(change.id))
    return [change.kind for change in ordered if "check" not in change.kind]


def running(daemon: PebbleDaemon) -> set[str]:
    """The names of the services running now."""
    return {service.name for service in daemon.client.get_services() if service.is_running()}


def poll(predicate: Callable[[], T], timeout: float, what: str) -> T:
    """Poll ``predicate`` every 50 ms until it returns something true."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)
