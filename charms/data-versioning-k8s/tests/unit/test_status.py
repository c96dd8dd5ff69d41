"""The unit's status: every precondition that is not met says so; the most severe one wins.

Statuses that belong to one concern are tested there too: the remote's moves (test_remote),
bad consumer and s3-integrator data (test_relations, test_remote).
"""

from __future__ import annotations

import dataclasses

import pytest
from ops import pebble, testing
from registry_testing import (
    bootstrap_exec,
    consumer_relation,
    integrator_2,
    push_tags,
    with_container,
)

import charm

BAD_CONFIG = {
    "bucket": ({"bucket": "Datasets_2"}, "bucket: must be 3-63 lowercase letters, digits or '-'"),
    "short bucket": ({"bucket": "ab"}, "bucket: must be 3-63 lowercase letters, digits or '-'"),
    "git-port": ({"git-port": 80}, "git-port: must be between 1024 and 65535"),
    "s3-port": ({"s3-port": 65534}, "s3-port: must be between 1024 and 65533"),
    "git-port on s3-port + 2": (
        {"git-port": 9002},
        "git-port: must not be s3-port, s3-port + 1 or s3-port + 2",
    ),
    "public-host wildcard": (
        {"public-host": "*.example.com"},
        "public-host: must be a DNS name or an IP address",
    ),
    "public-host with a port": (
        {"public-host": "registry:8080"},
        "public-host: must be a DNS name or an IP address",
    ),
    "approach": ({"approach": "both"}, "approach: must be model-centric, data-centric or empty"),
}


@pytest.mark.parametrize(("config", "problem"), BAD_CONFIG.values(), ids=BAD_CONFIG.keys())
def test_bad_config_blocks_naming_the_option_and_plans_nothing(
    ctx, make_state, data_dir, config, problem
):
    out = ctx.run(ctx.on.config_changed(), make_state(config=config))
    assert out.unit_status == testing.BlockedStatus(f"invalid config: {problem}")
    assert out.get_container(charm.CONTAINER).plan.services == {}
    assert out.opened_ports == frozenset()
    assert list(data_dir.iterdir()) == []


@pytest.mark.parametrize(
    "config",
    [
        {"public-host": "10.0.0.7"},
        {"public-host": "registry.example.com"},
        {"approach": "data-centric"},
    ],
)
def test_good_config_is_active(ctx, make_state, config):
    state = make_state(config=config)
    out = ctx.run(ctx.on.pebble_ready(state.get_container(charm.CONTAINER)), state)
    assert out.unit_status == testing.ActiveStatus("no versions yet")


def test_bad_config_wins_over_every_other_status(ctx, make_state, make_container):
    relation, keys = integrator_2(bucket="a/b")
    state = make_state(
        config={"git-port": 80},
        relations=[relation, consumer_relation("admin")],
        secrets=[keys],
        planned_units=2,
    )
    out = ctx.run(ctx.on.config_changed(), state)
    assert out.unit_status == testing.BlockedStatus(
        "invalid config: git-port: must be between 1024 and 65535"
    )


def test_more_than_one_unit_blocks(ctx, make_state):
    out = ctx.run(ctx.on.config_changed(), make_state(planned_units=2))
    assert out.unit_status == testing.BlockedStatus(
        "scale to 1 unit: the registry's git server is a single writer"
    )


def test_a_second_unit_is_blocked_too(ctx, make_state):
    out = ctx.run(ctx.on.config_changed(), make_state(leader=False, planned_units=2))
    assert out.unit_status == testing.BlockedStatus(
        "scale to 1 unit: the registry's git server is a single writer"
    )


def test_waiting_for_pebble(ctx, make_state, make_container):
    out = ctx.run(ctx.on.update_status(), make_state(container=make_container(can_connect=False)))
    assert out.unit_status == testing.WaitingStatus("waiting for Pebble in the registry container")


def test_a_non_leader_waits_for_the_leader_to_create_the_secrets(ctx, make_state):
    state = dataclasses.replace(make_state(leader=False), secrets=frozenset())
    out = ctx.run(ctx.on.pebble_ready(state.get_container(charm.CONTAINER)), state)
    assert out.unit_status == testing.WaitingStatus("waiting for the leader to create the secrets")
    assert out.get_container(charm.CONTAINER).plan.services == {}


# --- the bootstrap -------------------------------------------------------------------------------

BOOTSTRAP_ERROR = "fatal: could not create leading directories: No space left on device"


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


def test_the_leaders_failed_bootstrap_shows_on_the_other_units(ctx, make_state):
    state = make_state(leader=False, peer_data={charm.BOOTSTRAP_ERROR_KEY: BOOTSTRAP_ERROR})
    out = ctx.run(ctx.on.update_status(), state)
    assert out.unit_status == testing.BlockedStatus(
        f"registry bootstrap failed: {BOOTSTRAP_ERROR}"
    )


def test_a_non_leader_does_not_show_the_leaders_move_failure(ctx, make_state):
    state = make_state(leader=False, peer_data={charm.MOVE_ERROR_KEY: "Failed to copy"})
    out = ctx.run(ctx.on.update_status(), state)
    assert out.unit_status == testing.ActiveStatus("no versions yet")


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


# --- active --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tags", "known", "message"),
    [
        ((), {}, "no versions yet"),
        (("v1", "v2"), {charm.LATEST_KEY: "v2"}, "latest v2"),
        (("v1", "v2"), {charm.LATEST_KEY: "v2", charm.PINNED_KEY: "v1"}, "latest v2; pinned v1"),
        (
            ("v1", "v2", "v3", "v4"),
            {charm.LATEST_KEY: "v2", charm.PINNED_KEY: "v1", charm.INVALID_KEY: "v3 v4"},
            "latest v2; pinned v1; invalid (data missing): v3, v4",
        ),
        (
            ("v1",),
            {charm.INVALID_KEY: "v1"},
            "no versions yet; invalid (data missing): v1",
        ),
    ],
)
def test_active_says_which_versions_consumers_use(ctx, make_state, data_dir, tags, known, message):
    push_tags(data_dir, *tags)
    state = make_state(peer_data=known)
    out = ctx.run(ctx.on.pebble_ready(state.get_container(charm.CONTAINER)), state)
    assert out.unit_status == testing.ActiveStatus(message)
