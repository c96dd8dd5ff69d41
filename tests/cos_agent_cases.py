"""The cos-agent cases every machine service charm shares (``mlops_charms.cos_agent``).

On a machine, COS reaches the unit through the agent on its machine: each machine charm's
``test_cos_agent.py`` subclasses ``CosAgentCases`` with its scrape job's name and default
exporter port; its conftest gives ``ctx`` and ``make_state``.
"""

from __future__ import annotations

import json

from ops import testing

from mlops_charms import cos_agent, grafana_dashboard


class CosAgentCases:
    """The machine charms' cos-agent tests; a ``Test...`` subclass runs them on a charm."""

    job_name: str
    metrics_port: int

    def _published(self, ctx, make_state, **state) -> dict:
        relation = testing.Relation(cos_agent.ENDPOINT, remote_app_name="opentelemetry-collector")
        state_out = ctx.run(
            ctx.on.relation_joined(relation, remote_unit=0),
            make_state(relations={relation}, **state),
        )
        return json.loads(state_out.get_relation(relation.id).local_unit_data[cos_agent.KEY])

    def test_the_agent_scrapes_the_exporter_on_this_machine(self, ctx, make_state):
        (job,) = self._published(ctx, make_state)["metrics_scrape_jobs"]
        assert job["job_name"] == self.job_name
        assert job["static_configs"] == [{"targets": [f"localhost:{self.metrics_port}"]}]

    def test_every_unit_gives_the_rules_and_dashboard_with_its_topology(self, ctx, make_state):
        config = self._published(ctx, make_state, leader=False)
        rules = [
            rule for group in config["metrics_alert_rules"]["groups"] for rule in group["rules"]
        ]
        assert rules and all(r["labels"]["juju_application"] == ctx.app_name for r in rules)
        assert all(grafana_dashboard.decompress(d)["panels"] for d in config["dashboards"])
        assert config["dashboards"], "the service's dashboard"
