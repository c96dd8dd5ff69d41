"""The mlops_approach interface: every field optional, bad remote data a one-line problem."""

from __future__ import annotations

import json

import ops
import pytest
from ops import testing

from mlops_charms import approach, training
from mlops_charms.approach import (
    SELECTION_METRICS,
    ApproachPolicy,
    ApproachProviderData,
    ApproachRequirerData,
)
from mlops_charms.databags import load_remote_app_data

META = {"name": "service", "requires": {"mlops-approach": {"interface": "mlops_approach"}}}


def load(remote: dict[str, object], model):
    ctx = testing.Context(ops.CharmBase, meta=META)
    relation = testing.Relation(
        "mlops-approach",
        remote_app_name="mlops-approach",
        remote_app_data={key: json.dumps(value) for key, value in remote.items()},
    )
    with ctx(ctx.on.relation_changed(relation), testing.State(relations={relation})) as manager:
        live = manager.charm.model.get_relation("mlops-approach")
        assert live is not None
        return load_remote_app_data(live, model)


def test_an_empty_databag_is_valid_and_empty():
    assert ApproachProviderData() == ApproachProviderData(mode=None, revision=None, policy=None)
    assert load({}, ApproachRequirerData) == (ApproachRequirerData(), None)


def test_a_data_centric_policy_loads():
    data, problem = load(
        {
            "mode": "data-centric",
            "revision": 4,
            "policy": {
                "model_spec": {"spec": "text-tfidf-logreg", "params": {"C": 1}},
                "annotator_overlap": 3,
                "agreement_threshold": 0.7,
                "augmentation": {"text": ["swap"]},
            },
            "from_a_newer_provider": 1,
        },
        ApproachProviderData,
    )

    assert problem is None
    assert data is not None and data.mode == "data-centric" and data.revision == 4
    assert data.policy is not None and data.policy.annotator_overlap == 3
    assert data.policy.model_spec is not None and data.policy.model_spec.params == {"C": 1}


def test_a_model_centric_policy_without_a_version_means_latest_then_pinned():
    data, problem = load(
        {"mode": "model-centric", "revision": 2, "policy": {"sweep": [{"C": 1}]}},
        ApproachProviderData,
    )

    assert problem is None
    assert data is not None and data.policy is not None
    assert data.policy.dataset_version is None
    assert data.policy.sweep == [{"C": 1}]


@pytest.mark.parametrize(
    ("remote", "where"),
    [
        ({"mode": "both"}, "mode: "),
        ({"revision": 0}, "revision: "),
        ({"revision": "four"}, "revision: "),
        ({"policy": {"annotator_overlap": 0}}, "policy.annotator_overlap: "),
        ({"policy": {"agreement_threshold": 2}}, "policy.agreement_threshold: "),
        ({"policy": {"dataset_version": "latest"}}, "policy.dataset_version: "),
        ({"policy": {"selection_metric": "loss"}}, "policy.selection_metric: "),
        ({"policy": {"augmentation": {"rotate": 1}}}, "policy.augmentation: "),
        ({"policy": {"model_spec": {"spec": "../x"}}}, "policy.model_spec.spec: "),
        ({"policy": {"sweep": {"C": [1]}}}, "policy.sweep: "),
    ],
)
def test_bad_provider_data_is_a_one_line_problem(remote, where):
    data, problem = load(remote, ApproachProviderData)

    assert data is None
    assert problem is not None
    assert problem.startswith(f"invalid data from mlops-approach: {where}")
    assert "\n" not in problem


@pytest.mark.parametrize(
    ("remote", "where"),
    [
        ({"service": "database"}, "service: "),
        ({"applied_revision": -1}, "applied_revision: "),
        ({"reason": "two\nlines"}, "reason: "),
        ({"pinned_version": "3"}, "pinned_version: "),
    ],
)
def test_bad_acknowledgement_is_a_one_line_problem(remote, where):
    data, problem = load(remote, ApproachRequirerData)

    assert data is None
    assert problem is not None and problem.startswith(f"invalid data from mlops-approach: {where}")


def test_an_acknowledgement_with_the_pinned_version_loads():
    data, problem = load(
        {"service": "data-versioning", "applied_revision": 2, "pinned_version": "v7"},
        ApproachRequirerData,
    )

    assert problem is None
    assert data == ApproachRequirerData(
        service="data-versioning", applied_revision=2, pinned_version="v7"
    )


def test_selection_metrics_are_the_training_workloads():
    assert SELECTION_METRICS == training.METRICS


def test_a_policy_dumps_only_the_fields_set():
    policy = ApproachPolicy(dataset_version="v2", promote_best=True)

    assert policy.model_dump(exclude_none=True) == {"dataset_version": "v2", "promote_best": True}


class _Service(ops.CharmBase):
    """A service that acknowledges what it reads, waiting while ``waiting`` says so."""

    waiting = False

    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        for event in approach.relation_events(self):
            framework.observe(event, self._apply)

    def _apply(self, _event: ops.EventBase) -> None:
        in_force, problem = approach.read(self.model)
        previous = approach.acknowledged(self.model)
        if in_force is None or self.waiting:
            reason = problem or "waiting for the server"
            applied = previous.applied_revision if previous else None
            approach.acknowledge(
                self.model, "tracking", applied, reason=reason, waiting=problem is None
            )
        else:
            approach.acknowledge(self.model, "tracking", in_force.revision)


@pytest.mark.parametrize("leader", [True, False])
def test_a_service_acknowledges_the_revision_it_applied_or_why_not(leader: bool):
    ctx = testing.Context(_Service, meta=META)
    published = {"mode": "data-centric", "revision": 4, "policy": {"relabel_top_k": 5}}
    relation = testing.Relation(
        "mlops-approach",
        remote_app_name="mlops-approach",
        remote_app_data={key: json.dumps(value) for key, value in published.items()},
        local_app_data={"service": '"tracking"', "applied_revision": "3"},
    )
    _Service.waiting = True
    state = ctx.run(
        ctx.on.relation_changed(relation), testing.State(leader=leader, relations={relation})
    )
    acknowledged = {
        key: json.loads(value)
        for key, value in state.get_relation(relation.id).local_app_data.items()
    }
    if not leader:  # only the leader writes the application databag
        assert acknowledged == {"service": "tracking", "applied_revision": 3}
        return
    assert acknowledged == {
        "service": "tracking",
        "applied_revision": 3,
        "reason": "waiting for the server",
        "waiting": True,
    }
    _Service.waiting = False
    state = ctx.run(ctx.on.relation_changed(state.get_relation(relation.id)), state)
    acknowledged = {
        key: json.loads(value)
        for key, value in state.get_relation(relation.id).local_app_data.items()
    }
    assert acknowledged == {"service": "tracking", "applied_revision": 4}


def test_a_bad_databag_is_acknowledged_as_a_reason_to_act_on():
    ctx = testing.Context(_Service, meta=META)
    relation = testing.Relation(
        "mlops-approach", remote_app_name="mlops-approach", remote_app_data={"revision": '"x"'}
    )
    _Service.waiting = False
    state = ctx.run(
        ctx.on.relation_changed(relation), testing.State(leader=True, relations={relation})
    )
    databag = state.get_relation(relation.id).local_app_data
    assert json.loads(databag["reason"]).startswith(
        "mlops-approach: invalid data from mlops-approach"
    )
    assert "waiting" not in databag
