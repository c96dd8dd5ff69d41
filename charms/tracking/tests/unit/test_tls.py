"""HTTPS on a machine: the certificate's files, the systemd units that use them, the restarts."""

from __future__ import annotations

import dataclasses
import json
import stat
from pathlib import Path

import ops
import pytest
from conftest import ADDRESS
from ops import testing

import mlflow_unit
from tests.systemd_units import systemd_words, unit_settings
from tests.tls_provider import TestCA, issued_in
from tests.tracking_testing import consumer_relation

HTTPS_URL = f"https://{ADDRESS}:5000"


@pytest.fixture
def ca() -> TestCA:
    return TestCA()


def issued(ctx, state: testing.State, ca: TestCA) -> testing.State:
    """``state`` (its request sent) after ``ca`` issued the certificate: the unit reconciled."""
    state, relation = issued_in(ca, state)
    return ctx.run(ctx.on.relation_changed(relation), state)


@pytest.fixture
def https(ctx, make_state, ca) -> testing.State:
    """The unit serving HTTPS with the certificate ``ca`` issued."""
    certificates = ca.relation()
    state = ctx.run(ctx.on.install(), make_state(relations={certificates}))
    state = ctx.run(ctx.on.relation_created(certificates), state)
    assert isinstance(state.unit_status, ops.WaitingStatus)
    return issued(ctx, state, ca)


def option(words: list[str], name: str) -> str:
    return words[words.index(name) + 1]


def test_the_units_serve_and_probe_https_with_the_certificates_0600_files(https, ca):
    assert https.unit_status == ops.ActiveStatus(f"serving at {HTTPS_URL}")
    text = Path(mlflow_unit.PATHS.unit_file).read_text()
    assert "PRIVATE KEY" not in text
    mlflow = unit_settings(text)
    uvicorn = option(systemd_words(mlflow["ExecStart"][0]), "--uvicorn-opts").split()
    secrets = f"{mlflow['WorkingDirectory'][0]}/secrets"
    certificate, key = option(uvicorn, "--ssl-certfile"), option(uvicorn, "--ssl-keyfile")
    assert (certificate, key) == (f"{secrets}/server-certificate.pem", f"{secrets}/server-key.pem")
    assert "PRIVATE KEY" in Path(key).read_text()
    for path in (certificate, key, f"{secrets}/server-ca.pem"):
        assert stat.S_IMODE(Path(path).stat().st_mode) == 0o600
    # The exporter asks MLflow over HTTPS, verified with the CA's file.
    exporter = unit_settings(Path(mlflow_unit.PATHS.metrics_unit_file).read_text())
    *_, health, _data_dir, ca_file = systemd_words(exporter["ExecStart"][0])
    assert health == "https://localhost:5000/health"
    assert Path(ca_file).read_text() == ca.ca_pem


def test_a_consumer_gets_the_https_uri_and_the_ca(ctx, https, ca):
    consumer = consumer_relation("trainer", "fraud")
    state = dataclasses.replace(https, relations={*https.relations, consumer})
    state = ctx.run(ctx.on.relation_changed(consumer), state)
    published = state.get_relation(consumer.id).local_app_data
    assert json.loads(published["tracking_uri"]) == HTTPS_URL
    assert json.loads(published["ca"]) == ca.ca_pem


def test_a_renewed_certificate_restarts_mlflow_not_its_exporter(ctx, https, ca, machine):
    before = len(machine.calls("systemctl"))
    issued(ctx, https, ca)  # signed again: a new certificate for the same request
    restarted = [call[1] for call in machine.calls("systemctl")[before:] if call[0] == "restart"]
    # The exporter verifies MLflow with the CA, which is the same: it keeps running.
    assert restarted == ["mlflow"]


def test_without_the_relation_mlflow_serves_http_and_the_key_is_gone(ctx, https):
    secrets = (
        Path(unit_settings(Path(mlflow_unit.PATHS.unit_file).read_text())["WorkingDirectory"][0])
        / "secrets"
    )
    assert (secrets / "server-key.pem").exists()
    (relation,) = [r for r in https.relations if r.endpoint == "certificates"]

    state = ctx.run(ctx.on.relation_broken(relation), https)

    assert state.unit_status == ops.ActiveStatus(f"serving at http://{ADDRESS}:5000")
    assert "--uvicorn-opts" not in Path(mlflow_unit.PATHS.unit_file).read_text()
    for name in ("server-key.pem", "server-certificate.pem", "server-ca.pem"):
        assert not (secrets / name).exists(), name
