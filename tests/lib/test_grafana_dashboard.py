"""Tests for the grafana_dashboard provider, against the wire format grafana-k8s documents.

The app databag's ``dashboards`` key holds ``{"uuid", "templates": {"file:<name>": {"charm",
"content", "juju_topology"}}}``, ``content`` being the dashboard's JSON, LZMA-compressed and
base64-encoded.
"""

from __future__ import annotations

import base64
import json
import lzma

import ops
from ops import testing

from mlops_charms import grafana_dashboard
from mlops_charms.grafana_dashboard import ProviderAppData

DASHBOARD = {"title": "Server", "panels": [], "templating": {"list": []}}
MODEL_UUID = "c2e9f4d5-dcb3-4870-8509-330eb9745ee8"
META = {"name": "server", "provides": {"grafana-dashboard": {"interface": "grafana_dashboard"}}}


class DashboardCharm(ops.CharmBase):
    """The smallest charm that publishes the way the tracking charms do."""

    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        framework.observe(self.on["grafana-dashboard"].relation_joined, self._publish)
        framework.observe(self.on.update_status, self._publish)

    def _publish(self, _event: ops.EventBase) -> None:
        grafana_dashboard.publish(self, "grafana-dashboard", {"server": DASHBOARD})


def run(*, leader: bool = True) -> tuple[testing.Context, testing.State, testing.Relation]:
    relation = testing.Relation("grafana-dashboard", remote_app_name="grafana")
    ctx = testing.Context(DashboardCharm, meta=META)
    state = testing.State(
        leader=leader, relations={relation}, model=testing.Model(name="mlops", uuid=MODEL_UUID)
    )
    out = ctx.run(ctx.on.relation_joined(relation, remote_unit=0), state)
    published = out.get_relation(relation.id)
    assert isinstance(published, testing.Relation)
    return ctx, out, published


def test_content_is_the_dashboard_lzma_compressed_and_base64_encoded():
    _, _, relation = run()
    dashboards = json.loads(relation.local_app_data["dashboards"])
    template = dashboards["templates"]["file:server"]
    assert json.loads(lzma.decompress(base64.b64decode(template["content"]))) == DASHBOARD
    assert template["charm"] == "server"
    assert template["juju_topology"] == {
        "model": "mlops",
        "model_uuid": MODEL_UUID,
        "application": "server",
        "unit": "server/0",
    }
    assert ProviderAppData.model_validate({"dashboards": dashboards}).dashboards


def test_an_unchanged_dashboard_keeps_its_uuid_and_writes_nothing():
    ctx, state, relation = run()
    again = ctx.run(ctx.on.update_status(), state).get_relation(relation.id)
    assert again.local_app_data == relation.local_app_data


def test_a_non_leader_publishes_nothing():
    _, _, relation = run(leader=False)
    assert relation.local_app_data == {}


def test_compress_and_decompress_round_trip():
    assert grafana_dashboard.decompress(grafana_dashboard.compress(DASHBOARD)) == DASHBOARD
