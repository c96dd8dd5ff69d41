"""Tests for the prometheus_scrape provider, against the interface's published schema.

Shapes come from canonical/charm-relation-interfaces ``interfaces/prometheus_scrape/v0``
(README.md and schema.py): app data ``scrape_jobs``, ``scrape_metadata`` and ``alert_rules``,
each a JSON value; unit data ``prometheus_scrape_unit_address`` and
``prometheus_scrape_unit_name`` as plain strings.
"""

from __future__ import annotations

import json

import ops
from ops import testing

from mlops_charms import prometheus_scrape
from mlops_charms.prometheus_scrape import ProviderAppData

# The schema's own example of the provider's application databag.
SCHEMA_EXAMPLE = {
    "alert_rules": json.dumps(
        {
            "groups": [
                {
                    "name": "an_alert_rule_group",
                    "rules": [
                        {
                            "alert": "SomethingIsUp",
                            "expr": "something_bad == 1",
                            "for": "0m",
                            "labels": {"some-label": "some-value"},
                            "annotations": {"some-annotation": "some-other-value"},
                        }
                    ],
                }
            ]
        }
    ),
    "scrape_jobs": json.dumps(
        [{"metrics_path": "/metrics", "static_configs": [{"targets": ["*:4080"]}]}]
    ),
    "scrape_metadata": json.dumps(
        {
            "model": "cos",
            "model_uuid": "c2e9f4d5-dcb3-4870-8509-330eb9745ee8",
            "application": "zinc-k8s",
            "unit": "zinc-k8s/0",
            "charm_name": "zinc-k8s",
        }
    ),
}

RULES = [
    {
        "name": "server",
        "rules": [{"alert": "Down", "expr": "up < 1", "for": "5m", "labels": {"severity": "x"}}],
    }
]
META = {"name": "exporter", "provides": {"metrics-endpoint": {"interface": "prometheus_scrape"}}}


class ExporterCharm(ops.CharmBase):
    """The smallest charm that publishes the way the tracking charms do."""

    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        framework.observe(self.on["metrics-endpoint"].relation_joined, self._publish)

    def _publish(self, _event: ops.EventBase) -> None:
        prometheus_scrape.publish(
            self, "metrics-endpoint", port=9101, alert_rules=RULES, job_name="server"
        )


def decoded(databag) -> dict:
    return {key: json.loads(value) for key, value in databag.items()}


def run(*, leader: bool = True) -> testing.Relation:
    relation = testing.Relation("metrics-endpoint", remote_app_name="prometheus")
    ctx = testing.Context(ExporterCharm, meta=META)
    state = testing.State(leader=leader, relations={relation}, model=testing.Model(name="mlops"))
    out = ctx.run(ctx.on.relation_joined(relation, remote_unit=0), state)
    published = out.get_relation(relation.id)
    assert isinstance(published, testing.Relation)
    return published


def test_the_schemas_example_reads_into_the_models():
    data = ProviderAppData.model_validate(decoded(SCHEMA_EXAMPLE))
    assert data.scrape_jobs and data.scrape_jobs[0].static_configs
    assert data.scrape_jobs[0].static_configs[0].targets == ["*:4080"]
    assert data.alert_rules and data.alert_rules.groups
    rule = (data.alert_rules.groups[0].rules or [])[0]
    assert (rule.alert, rule.for_) == ("SomethingIsUp", "0m")
    assert data.scrape_metadata and data.scrape_metadata.charm_name == "zinc-k8s"


def test_published_app_data_has_the_schemas_keys_and_json_values():
    published = run().local_app_data
    assert set(published) == set(SCHEMA_EXAMPLE)
    values = decoded(published)
    assert values["scrape_jobs"] == [
        {
            "job_name": "server",
            "metrics_path": "/metrics",
            "static_configs": [{"targets": ["*:9101"]}],
        }
    ]
    assert values["scrape_metadata"]["model"] == "mlops"
    assert values["scrape_metadata"]["application"] == "exporter"


def test_rules_keep_for_under_its_prometheus_name_and_gain_the_topology():
    (group,) = decoded(run().local_app_data)["alert_rules"]["groups"]
    (rule,) = group["rules"]
    assert rule["for"] == "5m"
    assert "for_" not in rule
    assert rule["labels"]["severity"] == "x"
    assert rule["labels"]["juju_model"] == "mlops"
    assert rule["labels"]["juju_application"] == "exporter"
    assert rule["labels"]["juju_charm"] == "exporter"
    assert group["name"] == "mlops_exporter_server"


def test_unit_data_is_plain_strings():
    unit_data = run().local_unit_data
    assert unit_data[prometheus_scrape.UNIT_ADDRESS] == "192.0.2.0"
    assert unit_data[prometheus_scrape.UNIT_NAME] == "exporter/0"


def test_a_non_leader_writes_its_unit_data_only():
    relation = run(leader=False)
    assert relation.local_app_data == {}
    assert relation.local_unit_data[prometheus_scrape.UNIT_NAME] == "exporter/0"


def test_bad_remote_shapes_are_validation_errors_not_crashes():
    try:
        ProviderAppData.model_validate({"scrape_jobs": {"not": "a list"}})
    except ValueError as error:
        assert "scrape_jobs" in str(error)
    else:  # pragma: no cover
        raise AssertionError("a dict for scrape_jobs was accepted")
