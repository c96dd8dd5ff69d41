"""HTTPS: the unit's certificate over ``certificates``, MLflow serving HTTPS only with it.

A ``TestCA`` (tests/tls_provider.py) answers the unit's request as a tls-certificates provider
does, with really signed certificates.
"""

from __future__ import annotations

import dataclasses
import json
import stat

import ops
import pytest
from ops import testing

from tests.tls_provider import TestCA, issued_in, requested_names
from tests.tracking_action_cases import run_action
from tests.tracking_testing import (
    ADMIN_PASSWORD,
    DATA_DIR,
    SERVICE_HOST,
    consumer_relation,
    environment,
    option,
    server_args,
    stored,
)

HTTPS_URL = f"https://{SERVICE_HOST}:5000"
CERTIFICATE = f"{DATA_DIR}/secrets/server-certificate.pem"
KEY = f"{DATA_DIR}/secrets/server-key.pem"
CA = f"{DATA_DIR}/secrets/server-ca.pem"


@pytest.fixture
def ca() -> TestCA:
    return TestCA()


def requested(ctx, state: testing.State, ca: TestCA) -> testing.State:
    """``state`` related to ``ca``, after the unit sent its request (nothing issued yet)."""
    certificates = ca.relation()
    state = dataclasses.replace(state, relations={*state.relations, certificates})
    return ctx.run(ctx.on.relation_created(certificates), state)


def issued(ctx, state: testing.State, ca: TestCA) -> testing.State:
    """``state`` (its request sent) after ``ca`` issued the certificate: the unit reconciled."""
    state, relation = issued_in(ca, state)
    return ctx.run(ctx.on.relation_changed(relation), state)


@pytest.fixture
def https(ctx, make_state, ca) -> testing.State:
    """The unit serving HTTPS with the certificate ``ca`` issued."""
    return issued(ctx, requested(ctx, make_state(), ca), ca)


def plan_text(state: testing.State) -> str:
    return str(state.get_container("mlflow").plan.to_dict())


def test_a_related_unit_keeps_plain_http_while_it_waits_for_its_certificate(ctx, make_state, ca):
    planned = ctx.run(
        ctx.on.config_changed(), make_state(config={"allowed-hosts": "mlflow.example.org"})
    )
    state = requested(ctx, planned, ca)

    assert state.unit_status == ops.WaitingStatus("waiting for a certificate over certificates")
    assert "--uvicorn-opts" not in server_args(state)
    (relation,) = [r for r in state.relations if r.endpoint == "certificates"]
    assert isinstance(relation, testing.Relation)
    names, _addresses = requested_names(relation)
    # The service's names, allowed-hosts, and localhost: the unit's own probes use it.
    assert {SERVICE_HOST, "mlflow.example.org", "localhost"} <= names


def test_the_issued_certificate_makes_mlflow_serve_https_only(ctx, make_state, ca, data_dir):
    state = requested(ctx, make_state(), ca)
    assert isinstance(state.unit_status, ops.WaitingStatus)

    state = issued(ctx, state, ca)

    assert state.unit_status == ops.ActiveStatus(f"serving at {HTTPS_URL}")
    uvicorn = option(server_args(state), "--uvicorn-opts").split()
    assert option(uvicorn, "--ssl-certfile") == CERTIFICATE
    assert option(uvicorn, "--ssl-keyfile") == KEY
    for path in (CERTIFICATE, KEY, CA):
        assert stat.S_IMODE(stored(data_dir, path).stat().st_mode) == 0o600
    assert stored(data_dir, CA).read_text() == ca.ca_pem
    assert "PRIVATE KEY" in stored(data_dir, KEY).read_text()
    assert "PRIVATE KEY" not in plan_text(state)


def test_the_unit_probes_and_calls_mlflow_over_https_verified_with_the_ca(https, mlflow, ca):
    plan = https.get_container("mlflow").plan
    check = plan.checks["mlflow-ready"].to_dict()
    assert "http" not in check
    assert "https://localhost:5000/health" in check["exec"]["command"]
    assert CA in check["exec"]["command"]
    metrics = plan.services["mlflow-metrics"].command
    assert "https://localhost:5000/health" in metrics and CA in metrics
    # The charm's admin client: localhost (a name of the certificate), the CA alone trusted.
    assert mlflow.clients[-1][0] == "https://localhost:5000"
    assert mlflow.client_cas[-1] == ca.ca_pem


def test_a_consumer_gets_the_https_uri_and_the_ca(ctx, https, ca):
    consumer = consumer_relation("trainer", experiment="fraud")
    state = dataclasses.replace(https, relations={*https.relations, consumer})

    state = ctx.run(ctx.on.relation_changed(consumer), state)

    published = state.get_relation(consumer.id).local_app_data
    assert json.loads(published["tracking_uri"]) == HTTPS_URL
    assert json.loads(published["ca"]) == ca.ca_pem
    assert "PRIVATE KEY" not in str(published)


def test_get_admin_credentials_gives_the_https_url_and_the_ca(ctx, https, ca):
    results = run_action(ctx, https, "get-admin-credentials")
    assert results == {
        "username": "admin",
        "password": ADMIN_PASSWORD,
        "url": HTTPS_URL,
        "ca": ca.ca_pem,
    }


def test_the_same_certificate_changes_nothing_a_renewed_one_restarts_mlflow(
    ctx, https, ca, data_dir, pebble_calls
):
    ctx.run(ctx.on.update_status(), https)
    assert pebble_calls == []
    before = stored(data_dir, CERTIFICATE).read_text()

    issued(ctx, https, ca)  # signed again: a new certificate for the same request

    assert stored(data_dir, CERTIFICATE).read_text() != before
    assert pebble_calls == ["restart"]


def test_without_the_relation_mlflow_serves_plain_http_again(ctx, https, data_dir):
    (relation,) = [r for r in https.relations if r.endpoint == "certificates"]
    assert stored(data_dir, KEY).exists()

    state = ctx.run(ctx.on.relation_broken(relation), https)

    assert "--uvicorn-opts" not in server_args(state)
    assert state.unit_status == ops.ActiveStatus(f"serving at http://{SERVICE_HOST}:5000")
    # No private key is left behind on the storage.
    for path in (KEY, CERTIFICATE, CA):
        assert not stored(data_dir, path).exists(), path


def test_job_execution_stays_off_over_https_and_the_status_says_why(ctx, make_state, ca):
    # MLflow's job runner would call the server over plain HTTP, which it no longer serves.
    state = make_state(config={"enable-job-execution": True})
    state = issued(ctx, requested(ctx, state, ca), ca)
    assert environment(state)["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert state.unit_status == ops.ActiveStatus(
        f"serving at {HTTPS_URL}; job execution off: MLflow's jobs cannot call it over HTTPS"
    )
