"""The observability cases both tracking charms share: what Prometheus and Grafana are told.

Both charms publish the same scrape job, alert rules and dashboard from the core
(``mlops_charms.tracking_server``): each charm's ``test_observability.py`` subclasses
``ObservabilityCases``. The fixtures (``ctx``, ``make_state``) are each charm's conftest's.
"""

from __future__ import annotations

import json

from ops import testing

from mlops_charms import grafana_dashboard, mlflow_observability, prometheus_scrape
from tests.tracking_testing import MODEL

ADDRESS = "192.0.2.0"  # ops.testing's default address of a binding


def metrics_relation() -> testing.Relation:
    return testing.Relation("metrics-endpoint", remote_app_name="prometheus")


def dashboard_relation() -> testing.Relation:
    return testing.Relation("grafana-dashboard", remote_app_name="grafana")


def decoded(databag: dict[str, str]) -> dict:
    return {key: json.loads(value) for key, value in databag.items()}


class ObservabilityCases:
    """The substrate-neutral observability tests; a ``Test...`` subclass runs them on a charm."""

    def test_leader_publishes_one_scrape_job_on_the_exporters_port(self, ctx, make_state):
        relation = metrics_relation()
        state = make_state(relations={relation}, config={"metrics-port": 9300})
        state_out = ctx.run(ctx.on.relation_joined(relation, remote_unit=0), state)
        published = prometheus_scrape.ProviderAppData.model_validate(
            decoded(state_out.get_relation(relation.id).local_app_data)
        )
        assert published.model_dump(exclude_none=True)["scrape_jobs"] == [
            {
                "job_name": "mlflow",
                "metrics_path": "/metrics",
                "static_configs": [{"targets": ["*:9300"]}],
            }
        ]
        assert published.scrape_metadata is not None
        assert published.scrape_metadata.model == MODEL
        assert published.scrape_metadata.application == ctx.app_name
        # Each charm runs under its own name as the application's.
        assert published.scrape_metadata.charm_name == ctx.app_name

    def test_every_alert_rule_carries_the_topology_labels(self, ctx, make_state):
        relation = metrics_relation()
        state_out = ctx.run(
            ctx.on.relation_joined(relation, remote_unit=0), make_state(relations={relation})
        )
        rules = json.loads(state_out.get_relation(relation.id).local_app_data["alert_rules"])
        (group,) = rules["groups"]
        names = {rule["alert"] for rule in group["rules"]}
        assert names == {
            "MLflowMetricsUnreachable",
            "MLflowDown",
            "MLflowHighServerErrorRate",
            "MLflowStorageNearlyFull",
        }
        for rule in group["rules"]:
            assert rule["labels"]["juju_model"] == MODEL
            assert rule["labels"]["juju_application"] == ctx.app_name
            assert rule["for"]

    def test_every_unit_publishes_its_address_not_only_the_leader(self, ctx, make_state):
        relation = metrics_relation()
        state = make_state(relations={relation}, leader=False)
        state_out = ctx.run(ctx.on.relation_joined(relation, remote_unit=0), state)
        published = state_out.get_relation(relation.id)
        assert published.local_unit_data[prometheus_scrape.UNIT_ADDRESS] == ADDRESS
        assert published.local_unit_data[prometheus_scrape.UNIT_NAME] == f"{ctx.app_name}/0"
        assert published.local_app_data == {}

    def test_no_password_reaches_prometheus(self, ctx, make_state, admin_secret):
        relation = metrics_relation()
        state_out = ctx.run(
            ctx.on.relation_joined(relation, remote_unit=0), make_state(relations={relation})
        )
        published = state_out.get_relation(relation.id)
        text = json.dumps([published.local_app_data, published.local_unit_data])
        for value in admin_secret.tracked_content.values():
            assert value not in text

    def test_leader_publishes_the_dashboard_lzma_compressed(self, ctx, make_state):
        relation = dashboard_relation()
        state_out = ctx.run(
            ctx.on.relation_joined(relation, remote_unit=0), make_state(relations={relation})
        )
        dashboards = json.loads(state_out.get_relation(relation.id).local_app_data["dashboards"])
        (key,) = dashboards["templates"]
        template = dashboards["templates"][key]
        assert key == f"file:{mlflow_observability.DASHBOARD_NAME}"
        assert template["juju_topology"]["application"] == ctx.app_name
        assert grafana_dashboard.decompress(template["content"]) == json.loads(
            json.dumps(mlflow_observability.DASHBOARD)
        )

    def test_an_equal_reconcile_leaves_the_dashboard_as_it_was(self, ctx, make_state):
        relation = dashboard_relation()
        first = ctx.run(
            ctx.on.relation_joined(relation, remote_unit=0), make_state(relations={relation})
        )
        again = ctx.run(ctx.on.update_status(), first)
        assert (
            again.get_relation(relation.id).local_app_data
            == first.get_relation(relation.id).local_app_data
        )

    def test_observability_relations_leave_the_unit_active(self, ctx, make_state):
        relations = {metrics_relation(), dashboard_relation()}
        state_out = ctx.run(ctx.on.update_status(), make_state(relations=relations))
        assert isinstance(state_out.unit_status, testing.ActiveStatus)
        assert state_out.unit_status.message.startswith("serving at ")
