"""ServerCertificate against a CA that signs the unit's CSR as a tls-certificates provider does."""

import ops
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from ops import testing

from mlops_charms.tls import ServerCertificate, ServerTLS
from tests.tls_provider import TestCA, issued_in, refused_in, requested_csrs, requested_names

META = {
    "name": "tracking",
    "requires": {"certificates": {"interface": "tls-certificates", "limit": 1, "optional": True}},
}
CONFIG = {"options": {"extra-hosts": {"type": "string", "default": ""}}}


class ServiceCharm(ops.CharmBase):
    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        self.certificate = ServerCertificate(self, self._hosts)
        self.served: list[ServerTLS | None] = []
        for event in self.certificate.events:
            framework.observe(event, self._reconcile)
        framework.observe(self.on.collect_unit_status, self._on_collect_status)

    def _hosts(self) -> list[str]:
        extra = [host for host in str(self.config["extra-hosts"]).split(",") if host]
        return ["tracking", "Tracking.model.svc", "localhost", "10.1.2.3", "*.example", *extra]

    def _reconcile(self, _: ops.EventBase):
        self.served.append(self.certificate.server_tls())

    def _on_collect_status(self, event: ops.CollectStatusEvent):
        if status := self.certificate.status():
            event.add_status(status)
        event.add_status(ops.ActiveStatus())


@pytest.fixture
def ctx():
    return testing.Context(ServiceCharm, meta=META, config=CONFIG)


@pytest.fixture
def ca():
    return TestCA()


def _requested(ctx, ca, **state_kwargs):
    relation = ca.relation()
    state = ctx.run(
        ctx.on.relation_created(relation), testing.State(relations={relation}, **state_kwargs)
    )
    return state, state.get_relation(relation.id)


def test_unrelated_serves_plain_http_without_a_status(ctx):
    with ctx(ctx.on.update_status(), testing.State()) as manager:
        state = manager.run()
        assert manager.charm.certificate.server_tls() is None
    assert state.unit_status == ops.ActiveStatus()


def test_a_related_unit_requests_its_names_and_waits(ctx, ca):
    state, relation = _requested(ctx, ca)
    names, addresses = requested_names(relation)
    # Names lower-cased, the wildcard (not ours to claim) left out, addresses as IP SANs.
    assert names == {"tracking", "tracking.model.svc", "localhost"}
    # The unit's own address (its binding's ingress address) too: clients may reach it directly.
    assert addresses == {"10.1.2.3", "192.0.2.0"}
    assert state.unit_status == ops.WaitingStatus("waiting for a certificate over certificates")
    # The private key is in a Juju secret the unit owns, never in relation data.
    assert "PRIVATE KEY" not in str(relation.local_unit_data)
    assert any("PRIVATE KEY" in str(secret.tracked_content) for secret in state.secrets)


def test_the_issued_certificate_is_served_with_its_key_and_ca(ctx, ca):
    state, _relation = _requested(ctx, ca)
    state, issued = issued_in(ca, state)
    with ctx(ctx.on.relation_changed(issued), state) as manager:
        state = manager.run()
        served = manager.charm.served[-1]
    assert state.unit_status == ops.ActiveStatus()
    assert isinstance(served, ServerTLS)
    assert served.ca == ca.ca_pem
    leaf = x509.load_pem_x509_certificate(served.certificate.encode())
    ca_certificate = x509.load_pem_x509_certificate(ca.ca_pem.encode())
    assert leaf.issuer == ca_certificate.subject
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "tracking.model.svc" in sans.get_values_for_type(x509.DNSName)
    # The chain holds the leaf only: the CA is handed to clients, not repeated by the server.
    assert served.certificate.count("BEGIN CERTIFICATE") == 1
    key = load_pem_private_key(served.private_key.encode(), None)
    assert key.public_key() == leaf.public_key()


def test_new_names_are_not_served_with_the_old_certificate(ctx, ca):
    state, relation = _requested(ctx, ca)
    state, issued = issued_in(ca, state)
    state = ctx.run(ctx.on.relation_changed(issued), state)
    state = testing.State(
        config={"extra-hosts": "mlflow.example.com"},
        relations=state.relations,
        secrets=state.secrets,
    )
    with ctx(ctx.on.config_changed(), state) as manager:
        state = manager.run()
        assert manager.charm.certificate.server_tls() is None
    relation = state.get_relation(relation.id)
    assert "mlflow.example.com" in requested_names(relation)[0]
    assert state.unit_status == ops.WaitingStatus("waiting for a certificate over certificates")


def test_a_refused_request_blocks_with_the_ca_message(ctx, ca):
    state, _relation = _requested(ctx, ca)
    state, refused = refused_in(ca, state, "domain tracking.model.svc\nis not allowed")
    state = ctx.run(ctx.on.relation_changed(refused), state)
    assert state.unit_status == ops.BlockedStatus(
        "certificates: the CA refused the request: domain tracking.model.svc is not allowed"
    )


def test_garbage_from_the_provider_waits_without_a_traceback(ctx, ca):
    state, relation = _requested(ctx, ca)
    assert requested_csrs(relation)
    garbage = testing.Relation(
        "certificates",
        interface="tls-certificates",
        id=relation.id,
        remote_app_name="ca",
        local_unit_data=relation.local_unit_data,
        remote_app_data={"certificates": "not json", "request_errors": "[{]"},
    )
    state = testing.State(relations={garbage}, secrets=state.secrets)
    state = ctx.run(ctx.on.relation_changed(garbage), state)
    assert state.unit_status == ops.WaitingStatus("waiting for a certificate over certificates")


def test_the_relation_gone_serves_plain_http_again(ctx, ca):
    state, relation = _requested(ctx, ca)
    state, issued = issued_in(ca, state)
    state = ctx.run(ctx.on.relation_changed(issued), state)
    with ctx(ctx.on.relation_broken(state.get_relation(relation.id)), state) as manager:
        state = manager.run()
        assert manager.charm.served[-1] is None
    assert state.unit_status == ops.ActiveStatus()
