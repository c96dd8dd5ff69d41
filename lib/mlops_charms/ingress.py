"""Requirer side of the Juju ``ingress`` interface, version 2 (as provided by traefik-k8s).

Written from the interface's published schema (canonical/charm-relation-interfaces,
``interfaces/ingress/v2``). Every value in these databags is JSON-encoded on its own:
``port`` is ``'8080'``, ``name`` is ``'"mlflow"'``, and the provider's ``ingress`` key holds
a JSON object ``'{"url": "http://..."}'``.

The requirer app databag carries ``model``, ``name`` and ``port`` (the published schema) and
``strip-prefix``, ``redirect-https`` and ``scheme`` (the fields traefik-k8s reads on top of
it); each requirer unit databag carries ``host`` and, where Juju knows it, ``ip``.

This module defines no events and observes none. The charm observes the ``ingress`` relation
events itself, calls :meth:`IngressRequirer.publish` from its one ``_reconcile()``, and reads
:attr:`IngressRequirer.url` and :attr:`IngressRequirer.problem` where it needs them::

    self.ingress = IngressRequirer(self, port=5000)
    framework.observe(self.on.ingress_relation_joined, self._reconcile)
    framework.observe(self.on.ingress_relation_changed, self._reconcile)
    ...
    self.ingress.publish()  # in _reconcile
    public_url = self.ingress.url  # None until the provider has published a valid URL

Reading remote data never raises: malformed provider data gives a one-line problem for a status.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
from collections.abc import Mapping
from typing import Literal, TypeVar
from urllib.parse import urlsplit

import ops
import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator

from mlops_charms import databags, hosts

logger = logging.getLogger(__name__)

Scheme = Literal["http", "https", "h2c"]
"""Schemes traefik-k8s accepts for the route to the requirer's units."""

URL_SCHEMES = frozenset({"http", "https"})
"""Schemes an ingress URL published by the provider may have."""

_Model = TypeVar("_Model", bound="_Databag")


class _Databag(BaseModel):
    """A databag whose every value is JSON-encoded on its own, as ingress v2 requires.

    Every field is optional so that partial remote data can be read; what a side must
    publish is enforced where it writes, not here.
    """

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    @classmethod
    def from_databag(cls: type[_Model], databag: Mapping[str, str]) -> _Model:
        """Decode a databag; raise ``ValueError`` (one line, no data echoed) when malformed."""
        decoded: dict[str, object] = {}
        for key in cls.wire_keys():
            if key not in databag:
                continue
            try:
                decoded[key] = json.loads(databag[key])
            except json.JSONDecodeError:
                raise ValueError(f"{key!r} is not valid JSON") from None
        try:
            return cls.model_validate(decoded)
        except pydantic.ValidationError as error:
            raise ValueError(_describe(error)) from None

    @classmethod
    def wire_keys(cls) -> frozenset[str]:
        """Return the databag keys this model owns."""
        return frozenset(
            field.serialization_alias or name for name, field in cls.model_fields.items()
        )


class RequirerAppData(_Databag):
    """The requirer's application databag (written by the leader)."""

    model: str | None = Field(default=None, description="The model the application is in.")
    name: str | None = Field(default=None, description="The application requesting ingress.")
    port: int | None = Field(default=None, ge=1, le=65535, description="The port to expose.")
    strip_prefix: bool | None = Field(
        default=None,
        validation_alias="strip-prefix",
        serialization_alias="strip-prefix",
        description="Whether the provider strips the /<model>-<app> prefix before forwarding.",
    )
    redirect_https: bool | None = Field(
        default=None,
        validation_alias="redirect-https",
        serialization_alias="redirect-https",
        description="Whether the provider redirects plain HTTP requests to HTTPS.",
    )
    scheme: Scheme | None = Field(
        default=None, description="The scheme the provider uses to reach the units."
    )


class RequirerUnitData(_Databag):
    """A requirer unit's databag (written by each unit)."""

    host: str | None = Field(default=None, description="Hostname the unit is reachable at.")
    ip: str | None = Field(default=None, description="IP address the unit is reachable at.")

    @field_validator("ip")
    @classmethod
    def _ip_is_an_address(cls, ip: str | None) -> str | None:
        if ip is not None:
            ipaddress.ip_address(ip)  # a ValueError here becomes a validation error
        return ip


class IngressUrl(BaseModel):
    """The value under the provider's ``ingress`` key."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    url: str | None = None

    @field_validator("url")
    @classmethod
    def _url_is_http(cls, url: str | None) -> str | None:
        if url is None:
            return None
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise ValueError("url is not a valid URL") from None
        if parts.scheme not in URL_SCHEMES or not parts.hostname:
            raise ValueError("url is not an http(s) URL with a host")
        # The host reaches MLflow's --allowed-hosts: a wildcard or a list would widen it.
        if parts.username is not None or not hosts.is_host(parts.hostname):
            raise ValueError("url's host is not a DNS name or an IP address")
        return url


class ProviderAppData(_Databag):
    """The provider's application databag."""

    ingress: IngressUrl | None = None


def read_provider_url(databag: Mapping[str, str]) -> tuple[str | None, str | None]:
    """Read the ingress URL from a provider's app databag; never raises.

    Returns ``(url, problem)``: the URL when valid, else ``None``; a one-line problem when the
    data is malformed, else ``None``. Data not published yet is no problem: ``(None, None)``.
    """
    if "ingress" not in databag:
        return None, None
    try:
        data = ProviderAppData.from_databag(databag)
    except ValueError as error:
        return None, f"ingress provider data is malformed: {error}"
    if data.ingress is None or data.ingress.url is None:
        return None, "ingress provider data has no url"
    return data.ingress.url, None


class IngressRequirer:
    """Publishes what this application needs from ingress and reads the URL it gets.

    Defines and observes no events: call :meth:`publish` from the charm's reconcile.

    Args:
        charm: the charm using the relation.
        relation_name: the endpoint (``interface: ingress``) in ``charmcraft.yaml``.
        port: the port the workload listens on; :meth:`publish` can override it.
        strip_prefix: whether the provider strips the ``/<model>-<app>`` path prefix.
        redirect_https: whether the provider redirects plain HTTP to HTTPS.
        scheme: the scheme the provider uses to reach the units.

    """

    def __init__(
        self,
        charm: ops.CharmBase,
        relation_name: str = "ingress",
        *,
        port: int,
        strip_prefix: bool = True,
        redirect_https: bool = False,
        scheme: Scheme = "http",
    ):
        self._charm = charm
        self.relation_name = relation_name
        self.port = port
        self.strip_prefix = strip_prefix
        self.redirect_https = redirect_https
        self.scheme: Scheme = scheme

    @property
    def relation(self) -> ops.Relation | None:
        """The (first) ingress relation, or ``None`` when there is none."""
        relations = self._charm.model.relations.get(self.relation_name, [])
        return relations[0] if relations else None

    def publish(self, *, port: int | None = None, scheme: Scheme | None = None) -> bool:
        """Write this application's and this unit's ingress data on every ingress relation.

        The leader writes the app databag; every unit writes its own unit databag. Keys whose
        value is already right are not written again. Returns whether anything was written.

        Raises:
            ValueError: ``port`` (or ``scheme``) is out of range; validate config first.

        """
        app_data = self.app_data(port=port, scheme=scheme)
        changed = False
        for relation in self._charm.model.relations.get(self.relation_name, []):
            if self._charm.unit.is_leader():
                changed |= databags.write_databag(relation.data[self._charm.app], app_data)
            changed |= databags.write_databag(
                relation.data[self._charm.unit], self.unit_data(relation)
            )
        return changed

    def app_data(
        self, *, port: int | None = None, scheme: Scheme | None = None
    ) -> RequirerAppData:
        """Build the app databag content this requirer publishes (validated)."""
        try:
            return RequirerAppData(
                model=self._charm.model.name,
                name=self._charm.app.name,
                port=self.port if port is None else port,
                strip_prefix=self.strip_prefix,
                redirect_https=self.redirect_https,
                scheme=self.scheme if scheme is None else scheme,
            )
        except pydantic.ValidationError as error:
            raise ValueError(f"invalid ingress request: {_describe(error)}") from None

    def unit_data(self, relation: ops.Relation) -> RequirerUnitData:
        """Build the unit databag content this unit publishes on ``relation``."""
        return RequirerUnitData(host=socket.getfqdn(), ip=self._bind_address(relation))

    @property
    def url(self) -> str | None:
        """The URL the provider publishes for this application, or ``None`` (not ready/bad)."""
        return self._read()[0]

    @property
    def problem(self) -> str | None:
        """Why the provider's data cannot be used, in one line, or ``None`` when it can."""
        return self._read()[1]

    def _read(self) -> tuple[str | None, str | None]:
        relation = self.relation
        if relation is None or relation.app is None:
            return None, None
        try:
            databag = dict(relation.data[relation.app])
        except ops.ModelError:  # e.g. the remote app is already gone
            logger.debug("cannot read the ingress provider's data", exc_info=True)
            return None, None
        return read_provider_url(databag)

    def _bind_address(self, relation: ops.Relation) -> str | None:
        try:
            binding = self._charm.model.get_binding(relation)
            address = binding.network.bind_address if binding is not None else None
        except ops.ModelError:
            logger.debug("no network binding for the ingress relation", exc_info=True)
            return None
        if address is None:
            return None
        try:  # Juju may answer with a name rather than an address; ip must be an address
            return str(ipaddress.ip_address(str(address)))
        except ValueError:
            return None


def _describe(error: pydantic.ValidationError) -> str:
    """One line per validation error, naming the wire key but never echoing the value."""
    parts = []
    for detail in error.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in detail["loc"]) or "data"
        parts.append(f"{where}: {detail['msg']}")
    return "; ".join(parts)
