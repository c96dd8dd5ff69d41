"""Fixtures that start real processes for the workload tests (see processes.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.workload.processes import PebbleDaemon, PostgreSQLServer, run_pebble, run_postgresql


@pytest.fixture
def pebble_daemon(tmp_path: Path) -> Iterator[PebbleDaemon]:
    with run_pebble(tmp_path) as daemon:
        yield daemon


@pytest.fixture(scope="session")
def postgresql_server() -> Iterator[PostgreSQLServer]:
    with run_postgresql() as server:
        yield server
