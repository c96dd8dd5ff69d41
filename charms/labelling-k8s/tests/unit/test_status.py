"""Every status the unit can reach."""

from __future__ import annotations

from labelling_testing import dataset_relation, registry_secret
from ops import testing


def test_active_with_the_registry_related(ctx, make_state):
    secret = registry_secret()
    relation = dataset_relation(secret)
    state = ctx.run(ctx.on.update_status(), make_state(relations={relation}, secrets={secret}))
    assert state.unit_status == testing.ActiveStatus(
        "serving at http://labelling-k8s.mlops.svc.cluster.local:8080"
    )


def test_active_alone_says_no_registry_is_related(ctx, make_state):
    state = ctx.run(ctx.on.update_status(), make_state())
    assert state.unit_status == testing.ActiveStatus(
        "serving at http://labelling-k8s.mlops.svc.cluster.local:8080; no data registry related"
    )


def test_waiting_while_label_studio_starts(ctx, make_state, healthy):
    healthy["up"] = False
    state = ctx.run(ctx.on.update_status(), make_state())
    assert state.unit_status == testing.WaitingStatus("waiting for Label Studio to become ready")


def test_waiting_for_pebble(ctx, make_state, make_container):
    state_in = make_state(container=make_container(can_connect=False))
    state = ctx.run(ctx.on.update_status(), state_in)
    assert state.unit_status == testing.WaitingStatus(
        "waiting for Pebble in the label-studio container"
    )


def test_a_follower_without_a_database_is_blocked(ctx, make_state):
    state = ctx.run(ctx.on.update_status(), make_state(leader=False))
    assert state.unit_status == testing.BlockedStatus(
        "scale-out needs the database relation: SQLite is per unit"
    )


def test_waiting_for_database_credentials(ctx, make_state):
    relation = testing.Relation("database", remote_app_name="postgresql-k8s")
    state = ctx.run(ctx.on.relation_changed(relation), make_state(relations={relation}))
    assert state.unit_status == testing.WaitingStatus("waiting for database credentials")
