"""More than one unit: only shared stores may serve behind the one Kubernetes Service.

SQLite and artifacts on a unit's storage are per unit: until the database and S3 are related,
every unit is Blocked, a non-leader does not serve (its ready check then takes it out of the
Service) and the leader keeps serving what it has.
"""

from __future__ import annotations

import dataclasses

import pytest
from ops import pebble, testing

from tests.tracking_testing import (
    INTERNAL_URL,
    database_relation,
    database_secret,
    s3_relation,
    s3_secret,
)

NEEDS_DATABASE = "scale-out needs the database relation: SQLite is per unit"
NEEDS_S3 = "scale-out needs s3-credentials: artifacts are per unit"


@pytest.fixture
def db_secret() -> testing.Secret:
    return database_secret()


@pytest.fixture
def keys_secret() -> testing.Secret:
    return s3_secret()


@pytest.fixture
def stores(db_secret, keys_secret) -> dict:
    """What ``make_state`` needs for a unit on PostgreSQL and S3."""
    return {
        "relations": {database_relation(db_secret), s3_relation(keys_secret)},
        "secrets": {db_secret, keys_secret},
    }


@pytest.fixture
def database_only(db_secret) -> dict:
    return {"relations": {database_relation(db_secret)}, "secrets": {db_secret}}


def serving(state: testing.State) -> bool:
    return state.get_container("mlflow").service_statuses.get("mlflow") == (
        pebble.ServiceStatus.ACTIVE
    )


@pytest.fixture
def running_non_leader(ctx, make_state) -> testing.State:
    """A non-leader unit that served on its own SQLite while the app had one unit."""
    return ctx.run(ctx.on.config_changed(), make_state(leader=False))


# --- status ------------------------------------------------------------------------------

SCALE_OUT_PROBLEMS = {
    "leader, no database": (True, "no stores", NEEDS_DATABASE),
    "non-leader, no database": (False, "no stores", NEEDS_DATABASE),
    "leader, no s3": (True, "database only", NEEDS_S3),
    "non-leader, no s3": (False, "database only", NEEDS_S3),
}


@pytest.mark.parametrize(
    ("leader", "related", "reason"), SCALE_OUT_PROBLEMS.values(), ids=SCALE_OUT_PROBLEMS.keys()
)
def test_every_unit_of_a_scaled_out_app_without_shared_stores_is_blocked(
    ctx, make_state, database_only, leader, related, reason
):
    relations = database_only if related == "database only" else {}
    state = make_state(leader=leader, planned_units=2, **relations)
    assert ctx.run(ctx.on.update_status(), state).unit_status == testing.BlockedStatus(reason)


@pytest.mark.parametrize("leader", [True, False], ids=["leader", "non-leader"])
def test_scaled_out_units_on_shared_stores_are_active(ctx, make_state, stores, leader):
    state = make_state(leader=leader, planned_units=3, **stores)
    assert ctx.run(ctx.on.update_status(), state).unit_status == testing.ActiveStatus(
        f"serving at {INTERNAL_URL}"
    )


# --- who serves --------------------------------------------------------------------------


def test_leader_of_a_scaled_out_app_without_shared_stores_keeps_serving(ctx, make_state):
    state_out = ctx.run(ctx.on.config_changed(), make_state(planned_units=2))
    assert serving(state_out)


def test_new_non_leader_without_shared_stores_never_starts_mlflow(ctx, make_state, pebble_calls):
    state_out = ctx.run(ctx.on.config_changed(), make_state(leader=False, planned_units=2))
    assert not serving(state_out)
    assert pebble_calls == []


def test_non_leader_stops_serving_when_the_app_scales_out_on_sqlite(
    ctx, running_non_leader, pebble_calls
):
    state_out = ctx.run(
        ctx.on.config_changed(), dataclasses.replace(running_non_leader, planned_units=2)
    )
    assert not serving(state_out)
    assert pebble_calls == ["stop"]


def test_non_leader_stops_serving_when_the_app_scales_out_without_s3(
    ctx, make_state, database_only, pebble_calls
):
    running = ctx.run(ctx.on.config_changed(), make_state(leader=False, **database_only))
    pebble_calls.clear()

    state_out = ctx.run(ctx.on.update_status(), dataclasses.replace(running, planned_units=2))

    assert not serving(state_out)
    assert pebble_calls == ["stop"]


def test_stopped_non_leader_is_not_restarted_by_later_hooks(ctx, running_non_leader, pebble_calls):
    stopped = ctx.run(
        ctx.on.config_changed(), dataclasses.replace(running_non_leader, planned_units=2)
    )
    pebble_calls.clear()

    state_out = ctx.run(ctx.on.update_status(), stopped)

    assert not serving(state_out)
    assert pebble_calls == []


def test_non_leader_serves_again_once_the_app_is_back_to_one_unit(
    ctx, running_non_leader, pebble_calls
):
    stopped = ctx.run(
        ctx.on.config_changed(), dataclasses.replace(running_non_leader, planned_units=2)
    )
    pebble_calls.clear()

    state_out = ctx.run(ctx.on.update_status(), dataclasses.replace(stopped, planned_units=1))

    assert serving(state_out)
    assert pebble_calls == ["start"]


def test_non_leader_serves_once_the_shared_stores_are_related(ctx, make_state, stores):
    stopped = ctx.run(ctx.on.config_changed(), make_state(leader=False, planned_units=2))
    (database,) = [r for r in stores["relations"] if r.endpoint == "database"]
    state_in = dataclasses.replace(
        stopped, relations=stores["relations"], secrets={*stopped.secrets, *stores["secrets"]}
    )

    state_out = ctx.run(ctx.on.relation_changed(database), state_in)

    assert serving(state_out)
