"""The observability cases both labelling charms share: what Prometheus and Grafana are told.

Both charms publish the same scrape job, alert rules and dashboard from the core
(``mlops_charms.labelling_server``, ``mlops_charms.labelling_observability``): each charm's
``test_observability.py`` subclasses ``ObservabilityCases``. The fixtures (``ctx``,
``make_state``, and ``gate_file``: where the charm leaves the export gate for the exporter)
are each charm's.
"""

from __future__ import annotations

import json

import pytest
from ops import testing

from mlops_charms import grafana_dashboard, labelling_observability, prometheus_scrape
from tests.labelling_testing import approach_relation, server_secret
from tests.tracking_observability_cases import ADDRESS, dashboard_relation, metrics_relation

MODEL = "mlops"


def decoded(databag: dict[str, str]) -> dict:
    return {key: json.loads(value) for key, value in databag.items()}


class ObservabilityCases:
    """The substrate-neutral observability tests; a ``Test...`` subclass runs them on a charm."""

    def test_leader_publishes_one_scrape_job_on_the_exporters_port(self, ctx, make_state):
        relation = metrics_relation()
        state = make_state(relations={relation}, config={"metrics-port": 9300})
        out = ctx.run(ctx.on.relation_joined(relation, remote_unit=0), state)
        published = prometheus_scrape.ProviderAppData.model_validate(
            decoded(out.get_relation(relation.id).local_app_data)
        )
        assert published.model_dump(exclude_none=True)["scrape_jobs"] == [
            {
                "job_name": "label-studio",
                "metrics_path": "/metrics",
                "static_configs": [{"targets": ["*:9300"]}],
            }
        ]
        assert published.scrape_metadata is not None
        assert published.scrape_metadata.model == MODEL
        assert published.scrape_metadata.application == ctx.app_name
        unit_data = out.get_relation(relation.id).local_unit_data
        assert unit_data[prometheus_scrape.UNIT_ADDRESS] == ADDRESS
        assert testing.TCPPort(9300) in out.opened_ports

    def test_every_alert_rule_carries_the_topology_labels(self, ctx, make_state):
        relation = metrics_relation()
        out = ctx.run(
            ctx.on.relation_joined(relation, remote_unit=0), make_state(relations={relation})
        )
        rules = json.loads(out.get_relation(relation.id).local_app_data["alert_rules"])
        (group,) = rules["groups"]
        assert group["name"] == f"{MODEL}_{ctx.app_name}_label_studio"
        assert {rule["alert"] for rule in group["rules"]} == {
            "LabelStudioMetricsUnreachable",
            "LabelStudioDown",
            "LabelStudioAgreementBelowGate",
            "LabelStudioJobFailed",
            "LabelStudioStorageNearlyFull",
        }
        for rule in group["rules"]:
            assert rule["labels"]["juju_model"] == MODEL
            assert rule["labels"]["juju_application"] == ctx.app_name

    def test_leader_publishes_the_dashboard_lzma_compressed(self, ctx, make_state):
        relation = dashboard_relation()
        out = ctx.run(
            ctx.on.relation_joined(relation, remote_unit=0), make_state(relations={relation})
        )
        dashboards = json.loads(out.get_relation(relation.id).local_app_data["dashboards"])
        (key,) = dashboards["templates"]
        template = dashboards["templates"][key]
        assert key == f"file:{labelling_observability.DASHBOARD_NAME}"
        assert template["juju_topology"]["application"] == ctx.app_name
        assert grafana_dashboard.decompress(template["content"]) == json.loads(
            json.dumps(labelling_observability.DASHBOARD)
        )

    def test_a_non_leader_publishes_its_address_only(self, ctx, make_state):
        relation = metrics_relation()
        state = make_state(relations={relation}, leader=False)
        out = ctx.run(ctx.on.relation_joined(relation, remote_unit=0), state)
        published = out.get_relation(relation.id)
        assert published.local_unit_data[prometheus_scrape.UNIT_ADDRESS] == ADDRESS
        assert published.local_app_data == {}

    def test_no_secret_reaches_prometheus_or_grafana(self, ctx, make_state):
        relations = {metrics_relation(), dashboard_relation()}
        out = ctx.run(ctx.on.update_status(), make_state(relations=relations))
        text = json.dumps([[r.local_app_data, r.local_unit_data] for r in out.relations])
        for value in server_secret().tracked_content.values():
            assert value not in text

    def test_the_export_gate_is_left_where_the_exporter_reads_it(self, ctx, make_state, gate_file):
        out = ctx.run(ctx.on.update_status(), make_state(relations={approach_relation()}))
        assert gate_file(out).read_text() == "0.8"
        out = ctx.run(ctx.on.update_status(), make_state())
        assert gate_file(out).read_text() == ""  # no gate

    @pytest.mark.parametrize("port", [80, 8080], ids=["below 1024", "port"])
    def test_a_bad_metrics_port_blocks_naming_the_option(self, ctx, make_state, port):
        out = ctx.run(ctx.on.config_changed(), make_state(config={"metrics-port": port}))
        assert out.unit_status == testing.BlockedStatus(
            "invalid config: metrics-port: must be between 1024 and 65535, and not port"
        )
        assert out.opened_ports == frozenset()
