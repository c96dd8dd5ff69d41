"""Fixtures for the training workload tests: one registry, one MLflow, one Label Studio a session.

Label Studio's database is migrated (about a minute of one core, once per session) in the
background while the registry and MLflow start, so that it is ready when the relabel test
starts Label Studio.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.workload.labelling.harness import (
    RunningLabelStudio,
    label_studio,
    migrated_database,
    run_label_studio,
)
from tests.workload.pebble_backed import shared_folder
from tests.workload.training.harness import TrainingStack, start_stack


def _migrate() -> None:
    # A missing Label Studio is reported where it is started, in the test's own thread.
    with contextlib.suppress(BaseException):
        migrated_database()


MIGRATION = threading.Thread(target=_migrate, name="label-studio-migration", daemon=True)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Migrate Label Studio's database in the background if a test will start Label Studio."""
    if any("labelling" in getattr(item, "fixturenames", ()) for item in session.items):
        MIGRATION.start()


@pytest.fixture(scope="session")
def stack() -> Iterator[TrainingStack]:
    with start_stack() as running:
        yield running


@dataclass
class Labelling:
    """Label Studio as the labelling charm runs it, with its registry access (write)."""

    server: RunningLabelStudio
    access: label_studio.RegistryAccess

    def labelling(self, command: str, *args: str):
        """``mlops-workload labelling <command> ...`` through Pebble exec, as the charm runs it."""
        return self.server.labelling(self.access, command, *args)


@pytest.fixture(scope="session")
def labelling(stack: TrainingStack) -> Iterator[Labelling]:
    if MIGRATION.is_alive():
        MIGRATION.join()
    consumer = stack.registry.labelling
    access = label_studio.RegistryAccess(
        git_url=consumer.registry_url,
        username=consumer.username,
        password=consumer.password,
        dvc_endpoint=consumer.remote_endpoint,
        s3_access_key=consumer.s3_access_key,
        s3_secret_key=consumer.s3_secret_key,
    )
    with shared_folder("training-labelling-") as base, run_label_studio(Path(base)) as server:
        yield Labelling(server, access)
