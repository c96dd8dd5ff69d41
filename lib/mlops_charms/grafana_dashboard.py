"""Provider side of the Juju ``grafana_dashboard`` interface (as required by grafana-k8s).

charm-relation-interfaces publishes no schema for this interface; the wire format here is the
one grafana-k8s documents for it (its library's reference of the relation data). No Charmhub
library is used or copied.

Provider application databag (the leader), one key, JSON-encoded:
    dashboards  ``{"uuid": ..., "templates": {"file:<name>": {"charm": ..., "content": ...,
                "juju_topology": {"model", "model_uuid", "application", "unit"}}}}``

``content`` is the dashboard's JSON compressed with LZMA (xz) and then base64-encoded.
Panels query the ``${prometheusds}`` data source and may filter on ``$juju_model``,
``$juju_application`` and ``$juju_unit``: Grafana's side adds those variables. ``uuid``
changes with the content only, so an equal reconcile writes nothing and a new dashboard
always reaches Grafana.
"""

from __future__ import annotations

import base64
import hashlib
import json
import lzma
import uuid
from collections.abc import Mapping

import ops
from pydantic import BaseModel, ConfigDict

from mlops_charms import databags


class JujuTopology(BaseModel):
    """Where a dashboard comes from."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    model_uuid: str | None = None
    application: str | None = None
    unit: str | None = None


class DashboardTemplate(BaseModel):
    """One dashboard, compressed."""

    model_config = ConfigDict(extra="ignore")

    charm: str | None = None
    content: str | None = None
    juju_topology: JujuTopology | None = None


class Dashboards(BaseModel):
    """The value of ``dashboards``."""

    model_config = ConfigDict(extra="ignore")

    uuid: str | None = None
    templates: dict[str, DashboardTemplate] | None = None


class ProviderAppData(BaseModel):
    """The provider's application databag."""

    model_config = ConfigDict(extra="ignore")

    dashboards: Dashboards | None = None


def compress(dashboard: Mapping[str, object]) -> str:
    """A dashboard as ``content``: its JSON, LZMA-compressed, base64-encoded."""
    text = json.dumps(dashboard, sort_keys=True)
    return base64.b64encode(lzma.compress(text.encode())).decode()


def decompress(content: str) -> dict:
    """The dashboard in ``content``."""
    return json.loads(lzma.decompress(base64.b64decode(content)))


def publish(
    charm: ops.CharmBase, relation_name: str, dashboards: Mapping[str, Mapping[str, object]]
) -> None:
    """Give every related Grafana ``dashboards`` (by name); the leader only, else nothing."""
    if not charm.unit.is_leader():
        return
    topology = JujuTopology(
        model=charm.model.name,
        model_uuid=charm.model.uuid,
        application=charm.app.name,
        unit=charm.unit.name,
    )
    templates = {
        f"file:{name}": DashboardTemplate(
            charm=charm.meta.name, content=compress(dashboard), juju_topology=topology
        )
        for name, dashboard in sorted(dashboards.items())
    }
    fingerprint = hashlib.sha256(
        json.dumps({key: t.model_dump() for key, t in templates.items()}).encode()
    ).hexdigest()
    data = ProviderAppData(
        dashboards=Dashboards(
            uuid=str(uuid.uuid5(uuid.NAMESPACE_URL, fingerprint)), templates=templates
        )
    )
    for relation in charm.model.relations[relation_name]:
        databags.save_app_data(relation, charm.app, data)
