"""The log forwarding cases every Kubernetes charm shares (``mlops_charms.log_forwarding``).

Each Kubernetes charm's ``test_log_forwarding.py`` subclasses ``LogForwardingCases``; its
conftest gives ``ctx`` and ``make_state`` (a leader whose one container Pebble answers). The
relation data is what the providers write: the OpenTelemetry Collector's app databag
``endpoints`` (charmlibs-interfaces-otlp) and Loki's unit databag ``endpoint``
(loki_push_api).
"""

from __future__ import annotations

import json

import ops
from ops import testing

from mlops_charms import log_forwarding

OTLP_URL = "http://otelcol-0.otelcol-endpoints.cos.svc.cluster.local:4318"
LOKI_URL = "http://loki-0.loki-endpoints.cos.svc.cluster.local:3100/loki/api/v1/push"


def otlp_relation(*endpoints: dict[str, object]) -> testing.Relation:
    return testing.Relation(
        log_forwarding.OTLP_ENDPOINT,
        remote_app_name="otelcol",
        remote_app_data={"endpoints": json.dumps(list(endpoints))},
    )


def otlp_endpoint(url: str = OTLP_URL, protocol: str = "http") -> dict[str, object]:
    return {"protocol": protocol, "endpoint": url, "telemetries": ["logs", "metrics"]}


def loki_relation(*urls: str) -> testing.Relation:
    return testing.Relation(
        log_forwarding.LOKI_ENDPOINT,
        remote_app_name="loki",
        remote_units_data={
            number: {"endpoint": json.dumps({"url": url})} for number, url in enumerate(urls)
        },
    )


def _container(state: testing.State) -> testing.Container:
    (container,) = state.containers
    return container


def log_targets(state: testing.State) -> dict[str, dict]:
    plan = _container(state).plan
    return {name: dict(target.to_dict()) for name, target in plan.log_targets.items()}


class LogForwardingCases:
    """The substrate's log forwarding tests; a ``Test...`` subclass runs them on a charm."""

    def test_every_service_is_forwarded_to_the_collector_with_the_juju_topology(
        self, ctx, make_state
    ):
        relation = otlp_relation(otlp_endpoint())
        state_out = ctx.run(ctx.on.relation_changed(relation), make_state(relations={relation}))
        target = log_targets(state_out)[f"otlp-{relation.id}"]
        assert target["type"] == "opentelemetry" and target["location"] == OTLP_URL
        assert target["services"] == ["all"], "jobs are services of the plan too"
        assert target["labels"]["juju_application"] == ctx.app_name
        assert target["labels"]["juju_unit"] == f"{ctx.app_name}/0"
        assert target["labels"]["charm"] == ctx.charm_spec.meta["name"]

    def test_a_collector_offering_grpc_only_gets_no_target(self, ctx, make_state):
        # Pebble posts OTLP over HTTP only.
        relation = otlp_relation(otlp_endpoint("http://otelcol:4317", protocol="grpc"))
        state_out = ctx.run(ctx.on.relation_changed(relation), make_state(relations={relation}))
        assert log_targets(state_out) == {}

    def test_each_loki_unit_gets_a_target(self, ctx, make_state):
        second = LOKI_URL.replace("loki-0", "loki-1")
        relation = loki_relation(LOKI_URL, second)
        state_out = ctx.run(ctx.on.relation_changed(relation), make_state(relations={relation}))
        targets = log_targets(state_out)
        assert {t["location"] for t in targets.values()} == {LOKI_URL, second}
        assert {t["type"] for t in targets.values()} == {"loki"}

    def test_a_broken_relation_turns_its_target_off(self, ctx, make_state):
        relation = loki_relation(LOKI_URL)
        state = ctx.run(ctx.on.relation_changed(relation), make_state(relations={relation}))
        (name,) = log_targets(state)
        state_out = ctx.run(ctx.on.relation_broken(state.get_relation(relation.id)), state)
        assert log_targets(state_out)[name]["services"] == ["-all"]

    def test_bad_endpoint_data_is_skipped_without_a_traceback(self, ctx, make_state):
        not_json = testing.Relation(
            log_forwarding.OTLP_ENDPOINT, remote_app_data={"endpoints": "{not json"}
        )
        not_a_url = loki_relation("file:///etc/passwd")
        state = make_state(relations={not_json, not_a_url})
        state = ctx.run(ctx.on.relation_changed(not_json), state)
        state_out = ctx.run(ctx.on.relation_changed(not_a_url), state)
        assert log_targets(state_out) == {}
        assert state_out.unit_status.name != "error"

    def test_the_same_relations_leave_the_plan_alone(self, ctx, make_state, monkeypatch):
        relation = otlp_relation(otlp_endpoint())
        state = ctx.run(ctx.on.relation_changed(relation), make_state(relations={relation}))
        layers_added: list[str] = []
        add_layer = ops.Container.add_layer

        def spy(container: ops.Container, label: str, *args, **kwargs) -> None:
            layers_added.append(label)
            add_layer(container, label, *args, **kwargs)

        monkeypatch.setattr(ops.Container, "add_layer", spy)
        ctx.run(ctx.on.relation_changed(state.get_relation(relation.id)), state)
        assert log_forwarding.LAYER not in layers_added

    def test_the_leader_publishes_its_topology_and_rules_to_the_collector(self, ctx, make_state):
        relation = otlp_relation(otlp_endpoint())
        state_out = ctx.run(ctx.on.relation_joined(relation), make_state(relations={relation}))
        databag = state_out.get_relation(relation.id).local_app_data
        assert json.loads(databag["metadata"])["application"] == ctx.app_name
        assert databag["rules"], "the library's generic rules, compressed"
