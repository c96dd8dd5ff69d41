"""The observability cases both data-versioning charms share: what Prometheus and Grafana are told.

Both charms publish the same scrape job, alert rules and dashboard from the core
(``mlops_charms.registry_server``, ``mlops_charms.registry_observability``): each charm's
``test_observability.py`` subclasses ``ObservabilityCases``. The fixtures (``ctx``,
``make_state``, ``come_up``, ``servers_defined``) are each charm's conftest's.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
from ops import testing

from mlops_charms import (
    grafana_dashboard,
    prometheus_scrape,
    registry_observability,
    registry_server,
)
from tests.registry_relations import push_tags
from tests.tracking_observability_cases import ADDRESS, dashboard_relation, metrics_relation

MODEL = "mlops"
BAD_METRICS_PORT = {
    "below 1024": 80,
    "git-port": 8080,
    "s3-port + 1": 9001,
}


def decoded(databag: dict[str, str]) -> dict:
    return {key: json.loads(value) for key, value in databag.items()}


class ObservabilityCases:
    """The substrate-neutral observability tests; a ``Test...`` subclass runs them on a charm."""

    def test_leader_publishes_one_scrape_job_on_the_exporters_port(self, ctx, make_state, come_up):
        relation = metrics_relation()
        out = come_up(make_state(relations={relation}, config={"metrics-port": 9300}))
        published = prometheus_scrape.ProviderAppData.model_validate(
            decoded(out.get_relation(relation.id).local_app_data)
        )
        assert published.model_dump(exclude_none=True)["scrape_jobs"] == [
            {
                "job_name": "data-registry",
                "metrics_path": "/metrics",
                "static_configs": [{"targets": ["*:9300"]}],
            }
        ]
        assert published.scrape_metadata is not None
        assert published.scrape_metadata.model == MODEL
        assert published.scrape_metadata.application == ctx.app_name
        assert out.get_relation(relation.id).local_unit_data[prometheus_scrape.UNIT_ADDRESS] == (
            ADDRESS
        )
        assert testing.TCPPort(9300) in out.opened_ports

    def test_every_alert_rule_carries_the_topology_labels(self, ctx, make_state, come_up):
        relation = metrics_relation()
        out = come_up(make_state(relations={relation}))
        rules = json.loads(out.get_relation(relation.id).local_app_data["alert_rules"])
        (group,) = rules["groups"]
        assert group["name"] == f"{MODEL}_{ctx.app_name}_data_registry"
        assert {rule["alert"] for rule in group["rules"]} == {
            "DataRegistryMetricsUnreachable",
            "DataRegistryDown",
            "DataRegistryS3Down",
            "DataRegistryJobFailed",
            "DataRegistryStorageNearlyFull",
        }
        for rule in group["rules"]:
            assert rule["labels"]["juju_model"] == MODEL
            assert rule["labels"]["juju_application"] == ctx.app_name

    def test_leader_publishes_the_dashboard_lzma_compressed(self, ctx, make_state, come_up):
        relation = dashboard_relation()
        out = come_up(make_state(relations={relation}))
        dashboards = json.loads(out.get_relation(relation.id).local_app_data["dashboards"])
        (key,) = dashboards["templates"]
        template = dashboards["templates"][key]
        assert key == f"file:{registry_observability.DASHBOARD_NAME}"
        assert template["juju_topology"]["application"] == ctx.app_name
        assert grafana_dashboard.decompress(template["content"]) == json.loads(
            json.dumps(registry_observability.DASHBOARD)
        )

    def test_relating_prometheus_later_publishes_on_its_join(self, ctx, make_state, come_up):
        relation = metrics_relation()
        up = come_up(make_state())
        state = dataclasses.replace(up, relations={*up.relations, relation})
        out = ctx.run(ctx.on.relation_joined(relation, remote_unit=0), state)
        assert "scrape_jobs" in out.get_relation(relation.id).local_app_data

    def test_no_secret_reaches_prometheus_or_grafana(self, make_state, come_up, writer_secret):
        relations = {metrics_relation(), dashboard_relation()}
        out = come_up(make_state(relations=relations))
        text = json.dumps(
            [
                [r.local_app_data, r.local_unit_data]
                for r in out.relations
                if r.endpoint != "registry-peers"
            ]
        )
        for key in ("password", "secret-key"):
            assert writer_secret.tracked_content[key] not in text

    @pytest.mark.parametrize("port", BAD_METRICS_PORT.values(), ids=BAD_METRICS_PORT.keys())
    def test_a_bad_metrics_port_blocks_naming_the_option(
        self, ctx, make_state, servers_defined, port
    ):
        out = ctx.run(ctx.on.config_changed(), make_state(config={"metrics-port": port}))
        assert out.unit_status == testing.BlockedStatus(
            "invalid config: metrics-port: must be between 1024 and 65535, and not git-port,"
            " s3-port, s3-port + 1 or s3-port + 2"
        )
        assert not servers_defined(out)

    def test_the_pinned_version_is_left_where_the_exporter_reads_it(self, ctx, deployed, data_dir):
        push_tags(data_dir, "v1", "v2")
        pinned = {registry_server.LATEST_KEY: "v2", registry_server.PINNED_KEY: "v1"}
        state = deployed(peer_data=pinned)
        assert (data_dir / "conf" / "pinned-version").read_text() == "v1"
        peers = state.get_relations(registry_server.PEERS)[0]
        unpinned = dataclasses.replace(peers, local_app_data={registry_server.LATEST_KEY: "v2"})
        ctx.run(ctx.on.update_status(), dataclasses.replace(state, relations={unpinned}))
        assert (data_dir / "conf" / "pinned-version").read_text() == ""
