"""Every status the unit can reach, and which one wins when several apply."""

from __future__ import annotations

import dataclasses

import ops
import pytest
from ops import testing
from tracking_testing import (
    INGRESS_URL,
    INTERNAL_URL,
    consumer_relation,
    database_relation,
    database_secret,
    ingress_relation,
    s3_relation,
    s3_secret,
)

BAD_CONFIG = {
    "port below 1024": ("port", 80),
    "port above 65535": ("port", 65536),
    "no workers": ("workers", 0),
    "too many workers": ("workers", 17),
    "blank default experiment": ("default-experiment", "   "),
    "unknown permission": ("default-permission", "OWNER"),
    "empty allowed host": ("allowed-hosts", "mlflow.example.org,,other.example.org"),
    "allowed host with a space": ("allowed-hosts", "mlflow example.org"),
}


def status_after(ctx, state: testing.State, event=None) -> ops.StatusBase:
    return ctx.run(event or ctx.on.update_status(), state).unit_status


@pytest.mark.parametrize(("option", "value"), BAD_CONFIG.values(), ids=BAD_CONFIG.keys())
def test_bad_config_blocks_naming_the_option(ctx, make_state, option, value):
    status = status_after(ctx, make_state(config={option: value}), ctx.on.config_changed())
    assert isinstance(status, testing.BlockedStatus)
    assert status.message.startswith(f"invalid config: {option}: ")


def test_bad_config_outranks_a_missing_pebble(ctx, make_state, container):
    offline = dataclasses.replace(container, can_connect=False)
    state = make_state(containers={offline}, config={"workers": 0})
    assert status_after(ctx, state) == testing.BlockedStatus(
        "invalid config: workers: must be between 1 and 16"
    )


def test_unit_waits_for_pebble(ctx, make_state, container):
    offline = dataclasses.replace(container, can_connect=False)
    assert status_after(ctx, make_state(containers={offline})) == testing.WaitingStatus(
        "waiting for Pebble in the mlflow container"
    )


def test_non_leader_waits_for_the_leaders_admin_secret(ctx, make_state):
    state = make_state(leader=False, admin_secret_exists=False)
    assert status_after(ctx, state) == testing.WaitingStatus(
        "waiting for the leader to create the admin secret"
    )


def test_unit_waits_for_database_credentials(ctx, make_state):
    relation = database_relation()
    state = make_state(relations={relation})
    assert status_after(ctx, state, ctx.on.relation_changed(relation)) == testing.WaitingStatus(
        "waiting for database credentials"
    )


def test_unit_waits_for_s3_credentials(ctx, make_state):
    relation = s3_relation()
    state = make_state(relations={relation})
    assert status_after(ctx, state, ctx.on.relation_changed(relation)) == testing.WaitingStatus(
        "waiting for S3 credentials"
    )


def test_malformed_database_data_blocks_with_the_reason(ctx, make_state):
    secret = database_secret()
    relation = database_relation(secret, endpoints="no-port-here")
    state = make_state(relations={relation}, secrets={secret})
    assert status_after(ctx, state, ctx.on.relation_changed(relation)) == testing.BlockedStatus(
        "database provider sent bad endpoints 'no-port-here'"
    )


def test_malformed_s3_data_blocks_with_the_reason(ctx, make_state):
    secret = s3_secret()
    relation = s3_relation(secret, bucket="a/b")
    state = make_state(relations={relation}, secrets={secret})
    assert status_after(ctx, state, ctx.on.relation_changed(relation)) == testing.BlockedStatus(
        "S3 provider sent a bad bucket name 'a/b'"
    )


@pytest.mark.parametrize(
    "databag",
    [{"ingress": "not json"}, {"ingress": '{"url": "ftp://example.com/"}'}, {"ingress": "{}"}],
    ids=["not JSON", "not http", "no url"],
)
def test_malformed_ingress_data_blocks(ctx, make_state, databag):
    relation = ingress_relation(databag=databag)
    status = status_after(ctx, make_state(relations={relation}), ctx.on.relation_changed(relation))
    assert isinstance(status, testing.BlockedStatus)
    assert status.message.startswith("ingress: ingress provider data ")


def test_malformed_consumer_data_blocks_naming_the_consumer(ctx, make_state):
    relation = consumer_relation("trainer", databag={"experiment": '"  "'})
    status = status_after(ctx, make_state(relations={relation}), ctx.on.relation_changed(relation))
    assert isinstance(status, testing.BlockedStatus)
    assert status.message.startswith("mlops-tracking: invalid data from trainer: experiment")


def test_non_leader_without_database_is_blocked(ctx, make_state):
    assert status_after(ctx, make_state(leader=False)) == testing.BlockedStatus(
        "scale-out needs the database relation: SQLite is per unit"
    )


def test_non_leader_with_database_is_active(ctx, make_state):
    secret = database_secret()
    state = make_state(leader=False, relations={database_relation(secret)}, secrets={secret})
    assert status_after(ctx, state) == testing.ActiveStatus(f"serving at {INTERNAL_URL}")


def test_unit_waits_for_mlflow_to_become_ready(ctx, make_state, mlflow):
    mlflow.healthy = False
    assert status_after(ctx, make_state()) == testing.WaitingStatus(
        "waiting for MLflow to become ready"
    )


def test_ready_server_is_active_with_its_in_cluster_url(ctx, make_state):
    assert status_after(ctx, make_state()) == testing.ActiveStatus(f"serving at {INTERNAL_URL}")


def test_active_status_follows_the_port_option(ctx, make_state):
    state = make_state(config={"port": 8080})
    assert status_after(ctx, state) == testing.ActiveStatus(
        "serving at http://tracking-k8s.mlops.svc.cluster.local:8080"
    )


def test_active_status_shows_the_ingress_url(ctx, make_state):
    state = make_state(relations={ingress_relation()})
    assert status_after(ctx, state) == testing.ActiveStatus(f"serving at {INGRESS_URL}")


def test_leader_is_active_after_creating_the_admin_secret_in_the_same_hook(ctx, make_state):
    state = make_state(admin_secret_exists=False)
    status = status_after(ctx, state, ctx.on.config_changed())
    assert status == testing.ActiveStatus(f"serving at {INTERNAL_URL}")


def test_blocked_outranks_waiting(ctx, make_state, mlflow):
    mlflow.healthy = False
    relation = ingress_relation(databag={"ingress": "not json"})
    status = status_after(ctx, make_state(relations={relation}))
    assert isinstance(status, testing.BlockedStatus)
