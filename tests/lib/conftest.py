"""Real Pebble daemons for the tests of lib modules whose behaviour is Pebble's own.

The daemon is the one the workload tests start (tests/workload/processes.py): it skips a test
where pebble is not installed, and fails it where MLOPS_REQUIRE_WORKLOADS is set. A test that
changes the plan or the services gets a daemon of its own; commands and file operations,
which leave the daemon as they found it, share one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import ops
import pytest

from mlops_charms import workload
from tests.lib.real_pebble import container_on, pebble_binary
from tests.workload.processes import PebbleDaemon, run_pebble


@pytest.fixture
def pebble_daemon(tmp_path: Path) -> Iterator[PebbleDaemon]:
    with run_pebble(tmp_path) as daemon:
        yield daemon


@pytest.fixture
def real_container(pebble_daemon: PebbleDaemon) -> ops.Container:
    """The workload container of a charm, on a daemon of the test's own."""
    return container_on(pebble_daemon.client)


@pytest.fixture(scope="session")
def shared_pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PebbleDaemon]:
    with run_pebble(tmp_path_factory.mktemp("shared-pebble")) as daemon:
        yield daemon


@pytest.fixture
def exec_container(shared_pebble: PebbleDaemon) -> ops.Container:
    """A container for commands and files only: its plan and services are not the test's."""
    return container_on(shared_pebble.client)


@pytest.fixture
def local_pebble(
    pebble_daemon: PebbleDaemon, monkeypatch: pytest.MonkeyPatch
) -> workload.PebbleInContainer:
    """Juju's Pebble client and socket in the container, pointed at the test's daemon."""
    local = workload.PebbleInContainer(
        binary=pebble_binary(), socket=pebble_daemon.client.socket_path
    )
    monkeypatch.setattr(workload, "JUJU_PEBBLE", local)
    return local
