"""Tests for the cos_agent provider, against the interface's published schema.

The shape comes from canonical/charm-relation-interfaces ``interfaces/cos_agent/v0``
(schema.py): the provider's unit databag holds ``config``, one JSON object with
``metrics_alert_rules``, ``log_alert_rules``, ``dashboards`` (each LZMA-compressed,
base64-encoded JSON), ``metrics_scrape_jobs`` and ``log_slots``; the app databag is empty.
"""

from __future__ import annotations

import json

import ops
from ops import testing

from mlops_charms import cos_agent, grafana_dashboard

RULES = [
    {
        "name": "server",
        "rules": [{"alert": "Down", "expr": "up < 1", "for": "5m", "labels": {"severity": "x"}}],
    }
]
DASHBOARD = {"title": "Server", "panels": []}
META = {"name": "exporter", "provides": {"cos-agent": {"interface": "cos_agent"}}}


class ExporterCharm(ops.CharmBase):
    """The smallest machine charm that publishes the way the service charms do."""

    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        if "cos-agent" in self.meta.relations:
            framework.observe(self.on["cos-agent"].relation_joined, self._publish)
        framework.observe(self.on.update_status, self._publish)

    def _publish(self, _event: ops.EventBase) -> None:
        cos_agent.publish(
            self, port=9101, job_name="server", alert_rules=RULES, dashboards={"s": DASHBOARD}
        )


def run(*, leader: bool = True) -> testing.Relation:
    relation = testing.Relation("cos-agent", remote_app_name="opentelemetry-collector")
    ctx = testing.Context(ExporterCharm, meta=META)
    state = testing.State(leader=leader, relations={relation}, model=testing.Model(name="mlops"))
    out = ctx.run(ctx.on.relation_joined(relation, remote_unit=0), state)
    published = out.get_relation(relation.id)
    assert isinstance(published, testing.Relation)
    return published


def test_every_unit_publishes_config_only_and_no_app_data():
    for leader in (True, False):
        relation = run(leader=leader)
        # Juju's own keys (addresses) are there too; ours is config alone.
        assert set(relation.local_unit_data) - set(testing.Relation("x").local_unit_data) == {
            "config"
        }
        assert relation.local_app_data == {}


def test_config_has_the_schemas_keys():
    config = json.loads(run().local_unit_data["config"])
    assert set(config) == {
        "metrics_alert_rules",
        "log_alert_rules",
        "dashboards",
        "metrics_scrape_jobs",
        "log_slots",
    }
    assert config["log_slots"] == [] and config["log_alert_rules"] == {}


def test_the_agent_scrapes_the_exporter_on_this_machine():
    (job,) = json.loads(run().local_unit_data["config"])["metrics_scrape_jobs"]
    assert job == {
        "job_name": "server",
        "metrics_path": "/metrics",
        "static_configs": [{"targets": ["localhost:9101"]}],
    }


def test_rules_carry_for_and_the_topology():
    config = json.loads(run().local_unit_data["config"])
    (group,) = config["metrics_alert_rules"]["groups"]
    (rule,) = group["rules"]
    assert rule["for"] == "5m" and "for_" not in rule
    assert rule["labels"]["juju_application"] == "exporter"
    assert rule["labels"]["juju_model"] == "mlops"


def test_dashboards_decompress_to_what_was_given():
    (encoded,) = json.loads(run().local_unit_data["config"])["dashboards"]
    assert grafana_dashboard.decompress(encoded) == DASHBOARD


def test_a_kubernetes_charm_without_the_endpoint_publishes_nothing():
    meta = {"name": "exporter-k8s"}
    ctx = testing.Context(ExporterCharm, meta=meta)
    # No cos-agent endpoint: the reconcile (here update-status) publishes nothing and does not
    # fail.
    try:
        ctx.run(ctx.on.update_status(), testing.State())
    except Exception as error:  # pragma: no cover - the failure this test exists for
        raise AssertionError(f"publish failed without the endpoint: {error}") from error
