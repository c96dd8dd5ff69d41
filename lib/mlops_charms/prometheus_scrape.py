"""Provider side of the Juju ``prometheus_scrape`` interface (as required by prometheus-k8s).

Written from the interface's published schema (canonical/charm-relation-interfaces,
``interfaces/prometheus_scrape/v0``); no Charmhub library is used or copied.

Provider application databag (the leader), each value JSON-encoded on its own:
    scrape_jobs       a list of Prometheus scrape jobs; a target ``*:PORT`` means every unit
                      of the application at the address in its unit databag
    scrape_metadata   the Juju topology (model, model_uuid, application, unit, charm_name): the
                      requirer labels the scraped series and the alert rules with it
    alert_rules       ``{"groups": [...]}`` in Prometheus' rule-file shape; every rule carries
                      the topology labels, and the requirer adds them to the expressions

Provider unit databag (every unit), plain strings:
    prometheus_scrape_unit_address   where Prometheus reaches this unit
    prometheus_scrape_unit_name      the unit's name

The requirer publishes nothing. The charm observes the relation's events itself and calls
:func:`publish` from its one reconcile; publishing writes only what differs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import ops
from pydantic import BaseModel, ConfigDict, Field

from mlops_charms import databags

UNIT_ADDRESS = "prometheus_scrape_unit_address"
UNIT_NAME = "prometheus_scrape_unit_name"


class AlertRule(BaseModel):
    """One alerting rule, as in a Prometheus rule file."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    alert: str | None = None
    expr: str | None = None
    for_: str | None = Field(default=None, alias="for")
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class AlertGroup(BaseModel):
    """A named group of rules."""

    model_config = ConfigDict(extra="ignore")

    name: str | None = None
    rules: list[AlertRule] | None = None


class AlertRules(BaseModel):
    """The value of ``alert_rules``."""

    model_config = ConfigDict(extra="ignore")

    groups: list[AlertGroup] | None = None


class StaticConfig(BaseModel):
    """A scrape job's static targets; the schema lets other Prometheus keys through."""

    model_config = ConfigDict(extra="allow")

    targets: list[str] | None = None
    labels: dict[str, str] | None = None


class ScrapeJob(BaseModel):
    """One Prometheus scrape job; the schema lets other Prometheus keys through."""

    model_config = ConfigDict(extra="allow")

    job_name: str | None = None
    metrics_path: str | None = None
    static_configs: list[StaticConfig] | None = None


class ScrapeMetadata(BaseModel):
    """The provider's Juju topology."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    model_uuid: str | None = None
    application: str | None = None
    unit: str | None = None
    charm_name: str | None = None


class ProviderAppData(BaseModel):
    """The provider's application databag."""

    model_config = ConfigDict(extra="ignore")

    scrape_jobs: list[ScrapeJob] | None = None
    scrape_metadata: ScrapeMetadata | None = None
    alert_rules: AlertRules | None = None


class ProviderUnitData(BaseModel):
    """A provider unit's databag: plain strings, not JSON."""

    model_config = ConfigDict(extra="ignore")

    prometheus_scrape_unit_address: str | None = None
    prometheus_scrape_unit_name: str | None = None
    prometheus_scrape_unit_path: str | None = None


def topology(charm: ops.CharmBase) -> ScrapeMetadata:
    """The Juju topology of the charm's unit."""
    return ScrapeMetadata(
        model=charm.model.name,
        model_uuid=charm.model.uuid,
        application=charm.app.name,
        unit=charm.unit.name,
        charm_name=charm.meta.name,
    )


def topology_labels(metadata: ScrapeMetadata) -> dict[str, str]:
    """The labels the requirer puts on the series it scrapes from this application."""
    return {
        "juju_model": metadata.model or "",
        "juju_model_uuid": metadata.model_uuid or "",
        "juju_application": metadata.application or "",
        "juju_charm": metadata.charm_name or "",
    }


def labelled_rules(groups: Sequence[Mapping[str, object]], metadata: ScrapeMetadata) -> AlertRules:
    """``groups`` (rule-file shape) with the topology labels on every rule.

    Group names get the application's name in front: the requirer merges every provider's
    groups into one rule file, where names must be unique.
    """
    rules = AlertRules.model_validate({"groups": list(groups)})
    labels = topology_labels(metadata)
    for group in rules.groups or []:
        group.name = f"{metadata.model}_{metadata.application}_{group.name}"
        for rule in group.rules or []:
            rule.labels = {**(rule.labels or {}), **labels}
    return rules


def publish(
    charm: ops.CharmBase,
    relation_name: str,
    *,
    port: int,
    alert_rules: Sequence[Mapping[str, object]],
    job_name: str,
    metrics_path: str = "/metrics",
) -> None:
    """Tell every related Prometheus what to scrape on this application and what to alert on.

    The leader writes the application databag; every unit writes its own address.
    """
    metadata = topology(charm)
    for relation in charm.model.relations[relation_name]:
        if charm.unit.is_leader():
            data = ProviderAppData(
                scrape_jobs=[
                    ScrapeJob(
                        job_name=job_name,
                        metrics_path=metrics_path,
                        static_configs=[StaticConfig(targets=[f"*:{port}"])],
                    )
                ],
                scrape_metadata=metadata,
                alert_rules=labelled_rules(alert_rules, metadata),
            )
            databags.save_app_data(relation, charm.app, data)
        _write_plain(relation.data[charm.unit], _unit_data(charm, relation))


def _unit_data(charm: ops.CharmBase, relation: ops.Relation) -> ProviderUnitData:
    binding = charm.model.get_binding(relation)
    address = binding.network.ingress_address if binding else None
    return ProviderUnitData(
        prometheus_scrape_unit_address=str(address) if address else None,
        prometheus_scrape_unit_name=charm.unit.name,
    )


def _write_plain(databag: ops.RelationDataContent, data: ProviderUnitData) -> None:
    wanted = data.model_dump(exclude_none=True)
    changes = {key: value for key, value in wanted.items() if databag.get(key) != value}
    if changes:
        databag.update(changes)
