"""The loop's dashboard, offered to Grafana over grafana-dashboard by the leader."""

from __future__ import annotations

import json

from ops import testing

from mlops_charms import grafana_dashboard, loop_observability
from tests.tracking_observability_cases import dashboard_relation


def test_the_leader_offers_the_loops_dashboard(ctx, peers):
    relation = dashboard_relation()
    state = testing.State(leader=True, relations={peers, relation})
    out = ctx.run(ctx.on.relation_joined(relation, remote_unit=0), state)
    dashboards = json.loads(out.get_relation(relation.id).local_app_data["dashboards"])
    (key,) = dashboards["templates"]
    assert key == f"file:{loop_observability.DASHBOARD_NAME}"
    content = grafana_dashboard.decompress(dashboards["templates"][key]["content"])
    assert content == json.loads(json.dumps(loop_observability.DASHBOARD))
    titles = [panel["title"] for panel in content["panels"]]
    assert titles[:2] == [
        "Dataset versions",
        "Agreement (Krippendorff's alpha) and the export gate",
    ]


def test_a_non_leader_offers_nothing(ctx, peers):
    relation = dashboard_relation()
    state = testing.State(leader=False, relations={peers, relation})
    out = ctx.run(ctx.on.relation_joined(relation, remote_unit=0), state)
    assert out.get_relation(relation.id).local_app_data == {}


def test_the_dashboard_leaves_the_unit_as_it_was(ctx, peers):
    without = ctx.run(ctx.on.config_changed(), testing.State(leader=True, relations={peers}))
    relation = dashboard_relation()
    with_it = ctx.run(
        ctx.on.config_changed(), testing.State(leader=True, relations={peers, relation})
    )
    assert with_it.unit_status == without.unit_status
