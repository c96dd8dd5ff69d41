"""mlops-dataset: write access to the data registry, asked for by the leader."""

from __future__ import annotations

import dataclasses

import pytest
from ops import testing

from tests.labelling_testing import dataset_relation, registry_secret

ACTIVE_ALONE = (
    "serving at http://labelling-k8s.mlops.svc.cluster.local:8080; no data registry related"
)


def test_the_leader_asks_the_registry_for_write_access(ctx, make_state):
    relation = dataset_relation()
    state = ctx.run(ctx.on.relation_created(relation), make_state(relations={relation}))
    assert state.get_relation(relation.id).local_app_data == {"access": '"write"'}


def test_a_new_leader_asks_for_write_access_on_the_existing_relation(ctx, make_state):
    relation = dataset_relation()
    state = ctx.run(ctx.on.leader_elected(), make_state(relations={relation}))
    assert state.get_relation(relation.id).local_app_data == {"access": '"write"'}


def test_a_follower_leaves_the_request_to_the_leader(ctx, make_state):
    relation = dataset_relation()
    state = ctx.run(
        ctx.on.relation_created(relation), make_state(leader=False, relations={relation})
    )
    assert state.get_relation(relation.id).local_app_data == {}


def test_a_registry_that_has_not_granted_write_access_yet_is_waited_for(ctx, make_state):
    secret = registry_secret()
    relation = dataset_relation(secret, access="read")
    state = ctx.run(
        ctx.on.relation_changed(relation), make_state(relations={relation}, secrets={secret})
    )
    assert state.unit_status == testing.WaitingStatus("mlops-dataset: waiting for write access")
    assert state.get_relation(relation.id).local_app_data == {"access": '"write"'}


def test_the_registry_s_write_grant_makes_the_unit_active(ctx, make_state):
    secret = registry_secret()
    read_only = dataset_relation(secret, access="read")
    waiting = ctx.run(
        ctx.on.relation_changed(read_only), make_state(relations={read_only}, secrets={secret})
    )
    granted = dataclasses.replace(
        waiting.get_relation(read_only.id),
        remote_app_data={**read_only.remote_app_data, "access": '"write"'},
    )
    state = ctx.run(
        ctx.on.relation_changed(granted), dataclasses.replace(waiting, relations={granted})
    )
    assert state.unit_status == testing.ActiveStatus(
        "serving at http://labelling-k8s.mlops.svc.cluster.local:8080"
    )


@pytest.mark.parametrize(
    ("remote_app_data", "reason"),
    [
        ({"registry_url": '"http://x"', "latest_version": '"latest"'}, "latest_version"),
        ({"remote_url": '"http://not-s3"'}, "remote_url"),
        ({"access": '"admin"'}, "access"),
        ({"registry_url": "not json"}, ""),
    ],
)
def test_malformed_registry_data_blocks_with_the_reason(ctx, make_state, remote_app_data, reason):
    relation = testing.Relation(
        "mlops-dataset", remote_app_name="data-versioning-k8s", remote_app_data=remote_app_data
    )
    state = ctx.run(ctx.on.relation_changed(relation), make_state(relations={relation}))
    assert isinstance(state.unit_status, testing.BlockedStatus)
    assert state.unit_status.message.startswith(
        f"mlops-dataset: invalid data from data-versioning-k8s: {reason}"
    )
    assert "\n" not in state.unit_status.message


def test_a_registry_that_has_not_answered_yet_is_waited_for(ctx, make_state):
    relation = dataset_relation()
    state = ctx.run(ctx.on.relation_changed(relation), make_state(relations={relation}))
    assert state.unit_status == testing.WaitingStatus("waiting for the data registry")


def test_an_unreadable_credentials_secret_blocks(ctx, make_state):
    relation = dataset_relation(registry_secret())  # the secret was never granted
    state = ctx.run(ctx.on.relation_changed(relation), make_state(relations={relation}))
    assert state.unit_status == testing.BlockedStatus(
        "mlops-dataset: credentials secret not readable"
    )


def test_credentials_without_a_git_user_block(ctx, make_state):
    secret = testing.Secret({"access-key": "k", "secret-key": "s"})
    relation = dataset_relation(secret)
    state = ctx.run(
        ctx.on.relation_changed(relation), make_state(relations={relation}, secrets={secret})
    )
    assert state.unit_status == testing.BlockedStatus("mlops-dataset: credentials lack a git user")


def test_removing_the_registry_leaves_label_studio_serving_alone(ctx, make_state):
    secret = registry_secret()
    relation = dataset_relation(secret)
    state = ctx.run(
        ctx.on.relation_broken(relation), make_state(relations={relation}, secrets={secret})
    )
    assert state.unit_status == testing.ActiveStatus(ACTIVE_ALONE)
