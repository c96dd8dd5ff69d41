"""Provider side of the Juju ``cos_agent`` interface: a machine charm to its COS agent.

On machines, COS reaches a unit through a subordinate agent on the same machine
(opentelemetry-collector or grafana-agent) related over ``cos-agent``. Written from the
interface's published schema (canonical/charm-relation-interfaces, ``interfaces/cos_agent/v0``);
no Charmhub library is used or copied.

Provider unit databag (every unit: the agent is each unit's subordinate), the key ``config``
holding one JSON object:
    metrics_scrape_jobs   Prometheus scrape jobs the agent runs on this machine
    metrics_alert_rules   ``{"groups": [...]}``, every rule with the Juju topology labels
    log_alert_rules       ``{"groups": [...]}`` of LogQL rules (none here)
    dashboards            Grafana dashboards, each its JSON LZMA-compressed and base64-encoded
    log_slots             snap log slots for the agent to read (none: no snaps here; the
                          agent reads the machine's journal, where the services and jobs log)

The charm calls :func:`publish` from its one reconcile; a databag is written only on change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import ops
from pydantic import BaseModel

from mlops_charms import grafana_dashboard, prometheus_scrape

ENDPOINT = "cos-agent"
KEY = "config"


class ProviderUnitData(BaseModel):
    """What the unit tells its agent, under ``KEY``."""

    metrics_alert_rules: dict
    log_alert_rules: dict
    dashboards: list[str]
    metrics_scrape_jobs: list[dict]
    log_slots: list[str]


def publish(
    charm: ops.CharmBase,
    *,
    port: int,
    job_name: str,
    alert_rules: Sequence[Mapping[str, object]],
    dashboards: Mapping[str, Mapping[str, object]],
    metrics_path: str = "/metrics",
) -> None:
    """Tell the agent on this machine what to scrape here, what to alert on and what to show.

    A charm without the ``cos-agent`` endpoint (a Kubernetes charm) publishes nothing.
    """
    if ENDPOINT not in charm.meta.relations:
        return
    metadata = prometheus_scrape.topology(charm)
    data = ProviderUnitData(
        metrics_alert_rules=prometheus_scrape.labelled_rules(alert_rules, metadata).model_dump(
            by_alias=True, exclude_none=True
        ),
        log_alert_rules={},
        dashboards=[grafana_dashboard.compress(dashboards[name]) for name in sorted(dashboards)],
        # The agent runs on this machine: it scrapes the exporter on the loopback.
        metrics_scrape_jobs=[
            {
                "job_name": job_name,
                "metrics_path": metrics_path,
                "static_configs": [{"targets": [f"localhost:{port}"]}],
            }
        ],
        log_slots=[],
    )
    text = data.model_dump_json()
    for relation in charm.model.relations[ENDPOINT]:
        if relation.data[charm.unit].get(KEY) != text:
            relation.data[charm.unit][KEY] = text
