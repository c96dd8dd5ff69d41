"""Fixtures for the registry workload tests: one real registry per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.workload.registry.harness import RunningRegistry, start_registry


@pytest.fixture(scope="module")
def running_registry() -> Iterator[RunningRegistry]:
    with start_registry() as running:
        yield running
