"""HTTPS from the certificates relation: plain HTTP until issued, then https URLs and the CA."""

from __future__ import annotations

import stat
from pathlib import Path

import ops
import pytest
from ops import testing
from registry_testing import HOST, consumer_relation, provided, with_relation

import charm
import registry_layer
from mlops_charms import registry
from tests.tls_provider import TestCA, issued_in, refused_in, requested_names


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA()


@pytest.fixture
def consumer() -> testing.Relation:
    return consumer_relation()


@pytest.fixture
def requested(ctx, deployed, ca, consumer) -> tuple[testing.State, testing.Relation]:
    """A serving registry that just joined a CA and sent its request."""
    relation = ca.relation()
    state = with_relation(deployed(relations=[consumer]), relation)
    state = ctx.run(ctx.on.relation_created(relation), state)
    return state, state.get_relation(relation.id)


@pytest.fixture
def issued(ctx, requested, ca) -> testing.State:
    state, _relation = requested
    state, relation = issued_in(ca, state)
    return ctx.run(ctx.on.relation_changed(relation), state)


def _conf(data_dir: Path, name: str) -> Path:
    return data_dir / "conf" / name


def test_a_requested_certificate_names_the_public_host_and_localhost(requested, consumer):
    state, relation = requested
    names, _addresses = requested_names(relation)
    assert names == {HOST, "localhost"}
    # Still plain HTTP meanwhile: consumers keep working.
    assert state.unit_status == ops.WaitingStatus("waiting for a certificate over certificates")
    data = provided(state, consumer)
    assert data["registry_url"] == f"http://{HOST}:8080/registry.git"
    assert "ca" not in data


def test_a_public_host_is_in_the_certificate(ctx, deployed, ca):
    relation = ca.relation()
    state = with_relation(deployed(config={"public-host": "10.1.2.3"}), relation)
    state = ctx.run(ctx.on.relation_created(relation), state)
    names, addresses = requested_names(state.get_relation(relation.id))
    assert names == {HOST, "localhost"}
    assert "10.1.2.3" in addresses


def test_an_issued_certificate_gives_https_urls_and_the_ca(issued, consumer, ca):
    assert issued.unit_status == ops.ActiveStatus("no versions yet")
    data = provided(issued, consumer)
    assert data["registry_url"] == f"https://{HOST}:8080/registry.git"
    assert data["remote_endpoint"] == f"https://{HOST}:9000"
    assert data["remote_url"] == "s3://dvc"
    assert data["ca"] == ca.ca_pem


def test_apache_serves_https_with_the_key_in_a_secret_file(issued, data_dir):
    conf = _conf(data_dir, "httpd.conf").read_text()
    assert "LoadModule ssl_module /usr/lib/apache2/modules/mod_ssl.so" in conf
    # The git port (main server) and the S3 front (its virtual host) both.
    assert conf.count("SSLEngine on") == 2
    assert "SSLCertificateKeyFile /var/lib/registry/conf/tls.key" in conf
    key = _conf(data_dir, "tls.key")
    assert "PRIVATE KEY" in key.read_text()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(_conf(data_dir, "tls.crt").stat().st_mode) == 0o600


def test_no_key_or_certificate_in_the_plan(issued):
    plan = issued.get_container(charm.CONTAINER).plan.to_yaml()
    assert "PRIVATE KEY" not in plan
    assert "BEGIN CERTIFICATE" not in plan


def test_the_exporter_and_the_ready_check_follow_https(issued):
    plan = issued.get_container(charm.CONTAINER).plan
    exporter = plan.services[registry.METRICS_SERVICE].command
    # mod_status answers loopback only: the exporter calls localhost, verifying with the CA.
    assert "https://localhost:8080/server-status?auto" in exporter
    assert "--ca-file /var/lib/registry/conf/tls-ca.pem" in exporter
    # A Pebble HTTP check cannot verify a private CA: the port accepting is the check.
    check = plan.checks[registry_layer.GIT_READY_CHECK].to_dict()
    assert check["tcp"]["port"] == 8080
    assert "http" not in check


def test_the_same_certificate_again_restarts_nothing(ctx, issued, service_changes):
    ctx.run(ctx.on.update_status(), issued)
    assert service_changes == []


def test_a_renewed_certificate_restarts_the_servers(ctx, issued, ca, service_changes):
    renewed, relation = issued_in(ca, issued)  # a new certificate for the same request
    ctx.run(ctx.on.relation_changed(relation), renewed)
    assert service_changes == ["restart"]


def test_a_refused_request_blocks_and_keeps_plain_http(ctx, requested, ca, consumer):
    state, _relation = requested
    state, relation = refused_in(ca, state, "domain not allowed")
    state = ctx.run(ctx.on.relation_changed(relation), state)
    assert state.unit_status == ops.BlockedStatus(
        "certificates: the CA refused the request: domain not allowed"
    )
    assert provided(state, consumer)["registry_url"].startswith("http://")


def test_without_the_relation_it_serves_plain_http_again(ctx, issued, consumer, data_dir):
    (relation,) = [r for r in issued.relations if r.endpoint == "certificates"]
    assert _conf(data_dir, "tls.key").exists()
    state = ctx.run(ctx.on.relation_broken(relation), issued)
    data = provided(state, consumer)
    assert data["registry_url"] == f"http://{HOST}:8080/registry.git"
    assert "ca" not in data
    assert "SSLEngine" not in _conf(data_dir, "httpd.conf").read_text()
    # No private key is left behind.
    for name in ("tls.key", "tls.crt", "tls-ca.pem"):
        assert not _conf(data_dir, name).exists(), name
