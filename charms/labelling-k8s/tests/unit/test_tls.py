"""HTTPS: a CA over ``certificates`` signs the unit's certificate; Label Studio serves HTTPS."""

from __future__ import annotations

import dataclasses
import stat
from pathlib import Path

import pytest
from ops import testing

from mlops_charms import label_studio
from tests.labelling_testing import DATA_DIR
from tests.tls_provider import TestCA, issued_in, requested_names

SERVICE = "label-studio"
HOST = "labelling-k8s.mlops.svc.cluster.local"
CERT = f"{DATA_DIR}/secrets/label-studio.crt"
KEY = f"{DATA_DIR}/secrets/label-studio.key"
CA_FILE = f"{DATA_DIR}/secrets/label-studio-ca.pem"


@pytest.fixture
def ca() -> TestCA:
    return TestCA()


@pytest.fixture
def probed(monkeypatch: pytest.MonkeyPatch) -> list[label_studio.ServerSettings]:
    """The settings the charm probes Label Studio's health with (it answers)."""
    seen: list[label_studio.ServerSettings] = []

    def is_healthy(settings, *_a, **_k):
        seen.append(settings)
        return True

    monkeypatch.setattr(label_studio, "is_healthy", is_healthy)
    return seen


def _requested(ctx, make_state, ca: TestCA) -> testing.State:
    """A unit serving plain HTTP, then related to ``ca``: its CSR sent, nothing issued yet."""
    relation = ca.relation()
    state = ctx.run(ctx.on.config_changed(), make_state(relations={relation}))
    return ctx.run(ctx.on.relation_created(state.get_relation(relation.id)), state)


def _issued(ctx, make_state, ca: TestCA) -> testing.State:
    state, issued = issued_in(ca, _requested(ctx, make_state, ca))
    return ctx.run(ctx.on.relation_changed(issued), state)


def _plan(state: testing.State):
    return state.get_container(SERVICE).plan


def test_related_not_issued_keeps_serving_plain_http_and_waits(ctx, make_state, ca):
    state = _requested(ctx, make_state, ca)
    (relation,) = (r for r in state.relations if isinstance(r, testing.Relation))
    names, _addresses = requested_names(relation)
    # Where annotators and SDK clients reach it, and localhost for the charm's own calls.
    assert {HOST, "localhost", "labelling-k8s", "labelling-k8s.mlops.svc"} <= names
    assert state.unit_status == testing.WaitingStatus(
        "waiting for a certificate over certificates"
    )
    command = _plan(state).services[SERVICE].command
    assert "--http 0.0.0.0:8080" in command
    assert "--https" not in command


def test_issued_serves_https_only_and_verifies_with_the_ca(
    ctx, make_state, ca, data_dir: Path, probed
):
    state = _issued(ctx, make_state, ca)

    assert state.unit_status.name == "active"
    assert state.unit_status.message.startswith(f"serving at https://{HOST}:8080")
    plan = _plan(state)
    command = plan.services[SERVICE].command
    assert f"--https 0.0.0.0:8080,{CERT},{KEY}" in command
    assert "--http " not in command
    # The certificate, its key and the CA are 0600 files beside secrets.env, never in the plan.
    secrets_dir = data_dir / "secrets"
    for name in ("label-studio.crt", "label-studio.key", "label-studio-ca.pem"):
        assert stat.S_IMODE((secrets_dir / name).stat().st_mode) == 0o600
    assert (secrets_dir / "label-studio-ca.pem").read_text() == ca.ca_pem
    assert "BEGIN CERTIFICATE" in (secrets_dir / "label-studio.crt").read_text()
    key = (secrets_dir / "label-studio.key").read_text()
    assert "PRIVATE KEY" in key
    assert "PRIVATE KEY" not in str(plan.to_dict())
    assert key.strip().splitlines()[1] not in str(plan.to_dict())
    # The ready check and the ready notice verify with the CA (Pebble's http check could not).
    check = plan.checks["label-studio-ready"]
    assert check.http is None
    assert check.exec is not None
    probe = check.exec.get("command", "")
    assert f"SSL_CERT_FILE={CA_FILE}" in probe
    assert "https://localhost:8080/health" in probe
    assert f"SSL_CERT_FILE={CA_FILE}" in command
    exporter = plan.services[label_studio.METRICS_SERVICE].command
    assert "--label-studio-url https://localhost:8080" in exporter
    assert f"--ca-file {CA_FILE}" in exporter
    # The charm's own health probe: https on localhost, with the CA (verification on).
    assert probed[-1].local_url == "https://localhost:8080"
    assert probed[-1].tls is not None and probed[-1].tls.ca == ca.ca_pem


def test_the_charms_jobs_verify_label_studio_with_the_ca(ctx, make_state, ca, workload_jobs):
    state = _issued(ctx, make_state, ca)
    workload_jobs.succeeds("consistency-report", {"tasks": 0})
    ctx.run(ctx.on.action("consistency-report", params={"project": "reviews"}), state)
    environment = workload_jobs.last.environment
    assert environment["LABEL_STUDIO_URL"] == "https://localhost:8080"
    assert environment["LABEL_STUDIO_CA_FILE"] == CA_FILE


def test_get_admin_credentials_gives_the_https_url(ctx, make_state, ca):
    state = _issued(ctx, make_state, ca)
    ctx.run(ctx.on.action("get-admin-credentials"), state)
    assert ctx.action_results is not None
    assert ctx.action_results["url"] == f"https://{HOST}:8080"


def test_the_same_certificate_again_restarts_nothing(ctx, make_state, ca, pebble_calls):
    state = _issued(ctx, make_state, ca)
    pebble_calls.clear()
    ctx.run(ctx.on.update_status(), state)
    assert pebble_calls == []


def test_a_renewed_certificate_restarts_label_studio(ctx, make_state, ca, pebble_calls):
    state = _issued(ctx, make_state, ca)
    relation = next(r for r in state.relations if r.endpoint == "certificates")
    renewed = ca.issue(relation)  # a new certificate for the same request
    state = dataclasses.replace(
        state, relations={r for r in state.relations if r.id != relation.id} | {renewed}
    )
    pebble_calls.clear()
    ctx.run(ctx.on.relation_changed(renewed), state)
    assert "restart" in pebble_calls or "replan" in pebble_calls


def test_the_relation_gone_serves_plain_http_again(ctx, make_state, ca, data_dir: Path):
    state = _issued(ctx, make_state, ca)
    relation = next(r for r in state.relations if r.endpoint == "certificates")
    secrets_dir = data_dir / "secrets"
    assert (secrets_dir / "label-studio.key").exists()
    state = ctx.run(ctx.on.relation_broken(relation), state)
    command = _plan(state).services[SERVICE].command
    assert "--http 0.0.0.0:8080" in command
    assert "--https" not in command
    assert state.unit_status.message.startswith(f"serving at http://{HOST}:8080")
    # No private key is left behind on the storage.
    for name in ("label-studio.crt", "label-studio.key", "label-studio-ca.pem"):
        assert not (secrets_dir / name).exists(), name
