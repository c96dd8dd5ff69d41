"""A certificate authority that answers the ``certificates`` relation as a TLS provider does.

It reads the CSRs a unit wrote to its side of the relation (tls-certificates v4, what
self-signed-certificates or Vault read) and writes what such a provider writes back in its
application databag: each certificate, its CSR, the CA and the chain. The certificates are
really signed, so a real server can present them and a real client verify them against
``ca_pem`` (and refuse them with another CA).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from pathlib import Path

from charmlibs.interfaces.tls_certificates import (
    Certificate,
    CertificateRequestAttributes,
    CertificateSigningRequest,
    PrivateKey,
)
from ops import testing

ENDPOINT = "certificates"
INTERFACE = "tls-certificates"


class TestCA:
    """A CA made for one test, valid two days."""

    __test__ = False  # not a pytest test class

    def __init__(self, name: str = "mlops test CA"):
        self._key = PrivateKey.generate()
        self.certificate = Certificate.generate_self_signed_ca(
            CertificateRequestAttributes(common_name=name, is_ca=True),
            self._key,
            datetime.timedelta(days=2),
        )

    @property
    def ca_pem(self) -> str:
        return str(self.certificate).strip() + "\n"

    def write_ca(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.ca_pem)
        return path

    def relation(self, **kwargs) -> testing.Relation:
        """A ``certificates`` relation to this CA, nothing requested yet."""
        return testing.Relation(ENDPOINT, interface=INTERFACE, remote_app_name="ca", **kwargs)

    def issue(self, relation: testing.Relation) -> testing.Relation:
        """``relation`` after the CA signed every CSR the unit sent on it."""
        certificates = []
        for request in requested_csrs(relation):
            csr = CertificateSigningRequest.from_string(request)
            certificate = Certificate.generate(
                csr, self.certificate, self._key, datetime.timedelta(days=1)
            )
            certificates.append(
                {
                    "ca": str(self.certificate),
                    "certificate_signing_request": request,
                    "certificate": str(certificate),
                    "chain": [str(certificate), str(self.certificate)],
                }
            )
        return dataclasses.replace(
            relation, remote_app_data={"certificates": json.dumps(certificates)}
        )

    def refuse(self, relation: testing.Relation, message: str) -> testing.Relation:
        """``relation`` after the CA refused every CSR on it with ``message``."""
        errors = [
            {
                "csr": request,
                "error": {"code": 101, "name": "DOMAIN_NOT_ALLOWED", "message": message},
            }
            for request in requested_csrs(relation)
        ]
        return dataclasses.replace(
            relation, remote_app_data={"certificates": "[]", "request_errors": json.dumps(errors)}
        )


def issued_in(ca: TestCA, state: testing.State) -> tuple[testing.State, testing.Relation]:
    """``state`` after ``ca`` signed the CSRs on its ``certificates`` relation, and it."""
    return _answered(state, ca.issue)


def refused_in(
    ca: TestCA, state: testing.State, message: str
) -> tuple[testing.State, testing.Relation]:
    """``state`` after ``ca`` refused the CSRs on its ``certificates`` relation, and it."""
    return _answered(state, lambda relation: ca.refuse(relation, message))


def _answered(state: testing.State, answer) -> tuple[testing.State, testing.Relation]:
    (relation,) = (r for r in state.relations if r.endpoint == ENDPOINT)
    answered = answer(relation)
    relations = {r for r in state.relations if r.id != relation.id} | {answered}
    return dataclasses.replace(state, relations=relations), answered


def requested_csrs(relation: testing.Relation) -> list[str]:
    """The PEM CSRs the unit wrote on its side of ``relation``."""
    raw = relation.local_unit_data.get("certificate_signing_requests", "[]")
    return [entry["certificate_signing_request"] for entry in json.loads(raw)]


def requested_names(relation: testing.Relation) -> tuple[set[str], set[str]]:
    """The DNS names and IP addresses of the unit's (single) CSR on ``relation``."""
    (request,) = requested_csrs(relation)
    csr = CertificateSigningRequest.from_string(request)
    return set(csr.sans_dns or ()), set(csr.sans_ip or ())
