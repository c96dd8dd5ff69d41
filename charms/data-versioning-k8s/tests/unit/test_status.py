"""The unit's status: every precondition that is not met says so; the most severe one wins.

Statuses that belong to one concern are tested there too: the remote's moves (test_remote),
bad consumer and s3-integrator data (test_relations, test_remote).
"""

from __future__ import annotations

import pytest
from ops import pebble, testing
from registry_testing import bootstrap_exec, with_container

import charm
from tests.registry_status_cases import BOOTSTRAP_ERROR, StatusCases


class TestStatus(StatusCases):
    """The statuses data-versioning shares (tests/registry_status_cases.py)."""


def test_waiting_for_pebble(ctx, make_state, make_container):
    out = ctx.run(ctx.on.update_status(), make_state(container=make_container(can_connect=False)))
    assert out.unit_status == testing.WaitingStatus("waiting for Pebble in the registry container")


# --- the bootstrap -------------------------------------------------------------------------------


@pytest.fixture
def bootstrap_failed(ctx, make_state, make_container) -> testing.State:
    container = make_container(bootstrap_exec(fail=BOOTSTRAP_ERROR))
    return ctx.run(ctx.on.pebble_ready(container), make_state(container=container))


def test_a_failed_bootstrap_blocks_with_its_reason(bootstrap_failed):
    assert bootstrap_failed.unit_status == testing.BlockedStatus(
        f"registry bootstrap failed: {BOOTSTRAP_ERROR}"
    )


def test_a_failed_bootstrap_blocks_in_the_hook_that_ran_it(bootstrap_failed):
    assert isinstance(bootstrap_failed.unit_status, testing.BlockedStatus)
    assert bootstrap_failed.unit_status.message.endswith(f"bootstrap failed: {BOOTSTRAP_ERROR}")


def test_a_failed_bootstrap_stays_blocked_between_hooks(ctx, bootstrap_failed):
    ctx.run(ctx.on.action("list-jobs"), bootstrap_failed)
    out = ctx.run(ctx.on.action("list-jobs"), bootstrap_failed)
    assert out.unit_status == testing.BlockedStatus(
        f"registry bootstrap failed: {BOOTSTRAP_ERROR}"
    )


# --- the services --------------------------------------------------------------------------------


def test_services_not_running_show_as_starting(ctx, deployed):
    # An action does not reconcile: the status tells what Pebble shows.
    state = deployed()
    statuses = {**state.get_container(charm.CONTAINER).service_statuses}
    statuses["git-http"] = pebble.ServiceStatus.ERROR
    out = ctx.run(ctx.on.action("list-jobs"), with_container(state, service_statuses=statuses))
    assert out.unit_status == testing.MaintenanceStatus("starting the registry")


def test_a_hook_starts_services_that_stopped(ctx, deployed):
    state = deployed()
    statuses = {**state.get_container(charm.CONTAINER).service_statuses}
    statuses["s3-read-only"] = pebble.ServiceStatus.INACTIVE
    out = ctx.run(ctx.on.update_status(), with_container(state, service_statuses=statuses))
    assert out.get_container(charm.CONTAINER).service_statuses["s3-read-only"] == (
        pebble.ServiceStatus.ACTIVE
    )
    assert out.unit_status == testing.ActiveStatus("no versions yet")
