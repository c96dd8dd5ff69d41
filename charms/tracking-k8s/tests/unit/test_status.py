"""Every status the unit can reach, and which one wins when several apply."""

from __future__ import annotations

import dataclasses

import pytest
from ops import testing

from tests.tracking_status_cases import StatusCases, status_after
from tests.tracking_testing import (
    CONSUMER_TAG,
    INGRESS_URL,
    INTERNAL_URL,
    consumer_relation,
    database_relation,
    database_secret,
    database_tls_secret,
    ingress_relation,
    s3_relation,
    s3_secret,
)


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


def test_malformed_database_data_blocks_with_the_reason(ctx, make_state):
    secret = database_secret()
    relation = database_relation(secret, endpoints="no-port-here")
    state = make_state(relations={relation}, secrets={secret})
    assert status_after(ctx, state, ctx.on.relation_changed(relation)) == testing.BlockedStatus(
        "database provider sent bad endpoints 'no-port-here'"
    )


def test_bad_database_ca_blocks_with_the_reason(ctx, make_state):
    secret, tls = database_secret(), database_tls_secret(ca="not a certificate")
    relation = database_relation(secret, tls_secret=tls)
    state = make_state(relations={relation}, secrets={secret, tls})
    assert status_after(ctx, state, ctx.on.relation_changed(relation)) == testing.BlockedStatus(
        "database provider sent a bad tls-ca"
    )


def test_missing_database_tls_secret_blocks(ctx, make_state):
    secret = database_secret()
    not_granted = database_tls_secret()
    relation = database_relation(secret, tls_secret=not_granted)
    state = make_state(relations={relation}, secrets={secret})
    assert status_after(ctx, state, ctx.on.relation_changed(relation)) == testing.BlockedStatus(
        "database TLS secret not found"
    )


BAD_S3_DATA = {
    "bucket": ({"bucket": "a/b"}, "S3 provider sent a bad bucket name 'a/b'"),
    "tls-ca-chain": (
        {"tls-ca-chain": '["not a certificate"]'},
        "S3 provider sent a bad tls-ca-chain",
    ),
    "s3-uri-style": ({"s3-uri-style": "dns"}, "S3 provider sent a bad s3-uri-style 'dns'"),
}


@pytest.mark.parametrize(("changes", "reason"), BAD_S3_DATA.values(), ids=BAD_S3_DATA.keys())
def test_malformed_s3_data_blocks_with_the_reason(ctx, make_state, changes, reason):
    secret = s3_secret()
    relation = s3_relation(secret, **changes)
    state = make_state(relations={relation}, secrets={secret})
    assert status_after(ctx, state, ctx.on.relation_changed(relation)) == testing.BlockedStatus(
        reason
    )


@pytest.mark.parametrize(
    "databag",
    [
        {"ingress": "not json"},
        {"ingress": '{"url": "ftp://example.com/"}'},
        {"ingress": "{}"},
        {"ingress": '{"url": "http://*.example.com/"}'},
        {"ingress": '{"url": "http://a.example.com,b.example.com/"}'},
    ],
    ids=["not JSON", "not http", "no url", "wildcard host", "list of hosts"],
)
def test_malformed_ingress_data_blocks(ctx, make_state, databag):
    relation = ingress_relation(databag=databag)
    status = status_after(ctx, make_state(relations={relation}), ctx.on.relation_changed(relation))
    assert isinstance(status, testing.BlockedStatus)
    assert status.message.startswith("ingress: ingress provider data ")


def test_wildcard_ingress_host_blocks_naming_the_host_problem(ctx, make_state):
    relation = ingress_relation("http://*.example.com/mlops-tracking-k8s")
    status = status_after(ctx, make_state(relations={relation}), ctx.on.relation_changed(relation))
    assert status == testing.BlockedStatus(
        "ingress: ingress provider data is malformed: ingress.url: "
        "Value error, url's host is not a DNS name or an IP address"
    )


def test_consumer_asking_for_a_foreign_experiment_blocks_naming_it(ctx, make_state, mlflow):
    mlflow.add_experiment("fraud", {CONSUMER_TAG: "labeller"})
    relation = consumer_relation("trainer", experiment="fraud")
    status = status_after(ctx, make_state(relations={relation}), ctx.on.relation_changed(relation))
    assert status == testing.BlockedStatus(
        "mlops-tracking trainer: experiment 'fraud' exists and is not this application's: "
        "ask for another"
    )


def test_consumer_the_server_refuses_to_provision_blocks_naming_it(ctx, make_state, mlflow):
    mlflow.fail("users/create", "database is locked")
    relation = consumer_relation("trainer", experiment="fraud")
    status = status_after(ctx, make_state(relations={relation}), ctx.on.relation_changed(relation))
    assert status == testing.BlockedStatus(
        "mlops-tracking trainer: MLflow refused the request (500): database is locked"
    )


def test_consumer_problem_clears_once_provisioning_succeeds(ctx, make_state, mlflow):
    mlflow.fail("users/create", "database is locked")
    relation = consumer_relation("trainer", experiment="fraud")
    blocked = ctx.run(ctx.on.relation_changed(relation), make_state(relations={relation}))
    del mlflow.failures["users/create"]

    assert status_after(ctx, blocked) == testing.ActiveStatus(f"serving at {INTERNAL_URL}")


def test_non_leader_of_a_single_unit_app_is_active_on_sqlite(ctx, make_state):
    assert status_after(ctx, make_state(leader=False)) == testing.ActiveStatus(
        f"serving at {INTERNAL_URL}"
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


class TestStatus(StatusCases):
    """The shared status cases, on tracking-k8s."""
