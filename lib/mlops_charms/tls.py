"""HTTPS for a service charm: its certificate from ``certificates`` (interface tls-certificates).

The published ``charmlibs-interfaces-tls-certificates`` (v4) does the protocol: each unit makes
its private key (kept in a Juju secret it owns), sends a CSR for the names it is reached by and
receives the certificate, the chain and the CA. ``ServerCertificate`` wraps it for our charms:

- ``server_tls()``: the certificate, key and CA once issued, else None;
- ``status()``: why a related unit has no certificate yet (waiting, or the CA's refusal);
- ``events``: what to reconcile on (a certificate issued or renewed, the relation gone).

Its library also removes, on every secret-remove, the revision of any of the charm's secrets
that no consumer tracks any more: a charm with ``ServerCertificate`` must not do it too (a
second removal of the same revision fails the hook).

Without the relation a service serves plain HTTP as before. Related, it keeps its current
state until the certificate arrives, then serves HTTPS only: the charm's consumers get the CA
with the URL (``ca`` in their relation data) and verify the server with it.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import ops
from charmlibs.interfaces.tls_certificates import (
    CertificateRequestAttributes,
    Mode,
    ProviderCapabilities,
    TLSCertificatesError,
    TLSCertificatesRequiresV4,
)

if TYPE_CHECKING:
    from mlops_charms.host_files import HostFiles

logger = logging.getLogger(__name__)

CERTIFICATES_ENDPOINT = "certificates"
# An X.509 common name is at most 64 characters; the names are in the SANs anyway.
COMMON_NAME_MAX = 64


@dataclass(frozen=True)
class ServerTLS:
    """An issued certificate: what a server presents, its key, and the CA clients verify."""

    certificate: str  # PEM: the server's certificate, then the chain up to (not incl.) the CA
    private_key: str  # PEM
    ca: str  # PEM


def remove_server_files(files: ops.Container | HostFiles, paths: Sequence[str]) -> None:
    """Delete the certificate files of a server that serves plain HTTP now (the relation went).

    ``paths``: the key first. No private key is left on the storage that nothing uses.
    """
    if not files.exists(paths[0]):
        return  # never issued, or removed already: one look per hook
    for path in paths:
        if files.exists(path):
            files.remove_path(path)
    logger.info("removed the server's certificate and key: it serves plain HTTP")


class ServerCertificate(ops.Object):
    """One certificate per unit for ``hosts()``: the names and addresses it is reached by.

    The first name is the certificate's common name; the unit's own address is added.
    """

    def __init__(
        self,
        charm: ops.CharmBase,
        hosts: Callable[[], Iterable[str]],
        endpoint: str = CERTIFICATES_ENDPOINT,
    ):
        super().__init__(charm, endpoint)
        self._charm = charm
        self._hosts = hosts
        self._endpoint = endpoint
        self.requirer = TLSCertificatesRequiresV4(
            charm,
            endpoint,
            certificate_requests=self._requests,
            mode=Mode.UNIT,
            # The names may change with config (allowed hosts) or an ingress.
            refresh_events=[charm.on.config_changed],
        )
        # Read once per hook: each read asks Juju for the unit's address, the relation and the
        # key's secret, and a hook's reconcile, URLs and status all ask. Forgotten when the
        # library reports a new certificate or the relation goes (observed before the charm).
        self._read: tuple[ServerTLS | None] | None = None
        for event in self.events:
            charm.framework.observe(event, self._forget)

    @property
    def events(self) -> tuple[ops.BoundEvent, ...]:
        """The events after which the server's TLS may have changed."""
        return (
            self.requirer.on.certificate_available,
            self._charm.on[self._endpoint].relation_broken,
        )

    @property
    def related(self) -> bool:
        relation = self.model.get_relation(self._endpoint)
        return relation is not None and relation.active

    def _requests(
        self, _capabilities: ProviderCapabilities | None
    ) -> list[CertificateRequestAttributes]:
        names, addresses = _split_hosts([*self._hosts(), *self._unit_addresses()])
        if not names and not addresses:
            return []
        common_name = next((name for name in names if len(name) <= COMMON_NAME_MAX), None)
        return [
            CertificateRequestAttributes(
                common_name=common_name or addresses[0],
                sans_dns=names or None,
                sans_ip=addresses or None,
            )
        ]

    def _unit_addresses(self) -> list[str]:
        """The unit's own address (a pod's or a machine's IP): a client may reach it directly."""
        binding = self.model.get_binding(self._endpoint)
        try:
            address = binding.network.ingress_address if binding else None
        except ops.ModelError:
            return []  # no network info yet: the names alone, the address at the next request
        return [str(address)] if address else []

    def _forget(self, _event: ops.EventBase) -> None:
        self._read = None

    def server_tls(self) -> ServerTLS | None:
        """The unit's issued certificate, key and CA; None unrelated or not issued yet."""
        if self._read is None:
            self._read = (self._issued(),)
        return self._read[0]

    def _issued(self) -> ServerTLS | None:
        requests = self._requests(None)
        if not self.related or not requests:
            return None
        try:
            # Only a certificate for the names this unit has now: after a change of names
            # the old one is not served while the new request is out.
            provided, private_key = self.requirer.get_assigned_certificate(requests[0])
        except (TLSCertificatesError, ValueError) as error:
            logger.warning("could not read the assigned certificate: %s", error)
            return None
        if provided is None or private_key is None or provided.revoked:
            return None
        chain = [provided.certificate] + [
            certificate
            for certificate in provided.chain
            if certificate not in (provided.certificate, provided.ca)
        ]
        return ServerTLS(
            certificate="".join(str(pem).strip() + "\n" for pem in chain),
            private_key=str(private_key).strip() + "\n",
            ca=str(provided.ca).strip() + "\n",
        )

    def status(self) -> ops.StatusBase | None:
        """Why a related unit serves without its certificate, or None."""
        if not self.related or self.server_tls() is not None:
            return None
        for error in self.requirer.get_request_errors():
            message = " ".join(error.error.message.split())[:120]
            return ops.BlockedStatus(f"{self._endpoint}: the CA refused the request: {message}")
        return ops.WaitingStatus(f"waiting for a certificate over {self._endpoint}")


def _split_hosts(hosts: Iterable[str]) -> tuple[list[str], list[str]]:
    """DNS names and IP addresses, in order, without duplicates or wildcards."""
    names: dict[str, None] = {}
    addresses: dict[str, None] = {}
    for host in hosts:
        host = host.strip()
        if not host or "*" in host:
            continue  # a wildcard is not this unit's to claim
        try:
            addresses[str(ipaddress.ip_address(host))] = None
        except ValueError:
            names[host.lower()] = None
    return list(names), list(addresses)
