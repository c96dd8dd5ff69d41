"""The mlops-approach relation: tracking acknowledges each revision once MLflow answers.

Tracking changes nothing of its own per mode (the training runs group and tag what they log):
the server is the same in both modes, and a revision is applied as soon as MLflow is up.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
from ops import testing

from tests.provider_data import approach_relation
from tests.tracking_testing import INTERNAL_URL, READY_NOTICE

WAITING = {
    "service": "tracking",
    "applied_revision": 0,
    "reason": "waiting for MLflow",
    "waiting": True,
}


def _acknowledged(state: testing.State, relation: testing.Relation) -> dict:
    return {k: json.loads(v) for k, v in state.get_relation(relation.id).local_app_data.items()}


def _publish(ctx, state: testing.State, relation: testing.Relation, mode: str, revision: int):
    """The approach charm publishes a new revision on the same relation."""
    published = approach_relation(mode, revision).remote_app_data
    changed = dataclasses.replace(state.get_relation(relation.id), remote_app_data=published)
    others = {r for r in state.relations if r.id != relation.id}
    return ctx.run(
        ctx.on.relation_changed(changed), dataclasses.replace(state, relations={*others, changed})
    )


def test_a_revision_is_acknowledged_once_mlflow_answers(ctx, make_state):
    relation = approach_relation("model-centric", 2)
    out = ctx.run(ctx.on.relation_changed(relation), make_state(relations={relation}))
    assert _acknowledged(out, relation) == {"service": "tracking", "applied_revision": 2}
    assert out.unit_status == testing.ActiveStatus(f"serving at {INTERNAL_URL}")


def test_before_mlflow_answers_it_says_so_and_acknowledges_when_it_does(
    ctx, make_state, container, mlflow
):
    mlflow.healthy = False
    relation = approach_relation("data-centric", 1)
    state = ctx.run(ctx.on.relation_changed(relation), make_state(relations={relation}))
    assert _acknowledged(state, relation) == WAITING
    # MLflow records its ready notice once it answers.
    mlflow.healthy = True
    notice = testing.Notice(READY_NOTICE)
    ready = dataclasses.replace(state.get_container("mlflow"), notices=[notice])
    out = ctx.run(
        ctx.on.pebble_custom_notice(ready, notice), dataclasses.replace(state, containers={ready})
    )
    assert _acknowledged(out, relation) == {"service": "tracking", "applied_revision": 1}


def test_a_new_revision_while_mlflow_is_down_keeps_the_previous_one_with_the_reason(
    ctx, make_state, mlflow
):
    relation = approach_relation("data-centric", 1)
    state = ctx.run(ctx.on.relation_changed(relation), make_state(relations={relation}))
    mlflow.healthy = False
    state = _publish(ctx, state, relation, "model-centric", 2)
    assert _acknowledged(state, relation) == {**WAITING, "applied_revision": 1}
    mlflow.healthy = True
    out = ctx.run(ctx.on.update_status(), state)
    assert _acknowledged(out, relation) == {"service": "tracking", "applied_revision": 2}


def test_an_acknowledged_revision_stays_acknowledged_while_mlflow_restarts(
    ctx, make_state, mlflow
):
    relation = approach_relation("model-centric", 1)
    state = ctx.run(ctx.on.relation_changed(relation), make_state(relations={relation}))
    mlflow.healthy = False
    out = ctx.run(ctx.on.update_status(), state)
    assert _acknowledged(out, relation) == {"service": "tracking", "applied_revision": 1}


def test_the_server_is_the_same_in_both_modes(ctx, make_state):
    plans = []
    for mode in ("model-centric", "data-centric"):
        relation = approach_relation(mode, 1)
        out = ctx.run(ctx.on.relation_changed(relation), make_state(relations={relation}))
        plans.append(out.get_container("mlflow").plan)
    unrelated = ctx.run(ctx.on.config_changed(), make_state())
    assert plans == [unrelated.get_container("mlflow").plan] * 2


def test_nothing_published_yet_acknowledges_nothing(ctx, make_state):
    relation = approach_relation()
    out = ctx.run(ctx.on.relation_created(relation), make_state(relations={relation}))
    assert _acknowledged(out, relation) == {}


def test_a_non_leader_acknowledges_nothing(ctx, make_state):
    relation = approach_relation("model-centric", 1)
    out = ctx.run(
        ctx.on.relation_changed(relation), make_state(leader=False, relations={relation})
    )
    assert _acknowledged(out, relation) == {}


def test_a_removed_relation_is_acknowledged_no_more(ctx, make_state):
    relation = approach_relation("model-centric", 1)
    state = ctx.run(ctx.on.relation_changed(relation), make_state(relations={relation}))
    published = _publish(ctx, state, relation, "data-centric", 2)
    broken = published.get_relation(relation.id)
    out = ctx.run(ctx.on.relation_broken(broken), published)
    assert _acknowledged(out, relation) == {"service": "tracking", "applied_revision": 2}
    assert out.unit_status == testing.ActiveStatus(f"serving at {INTERNAL_URL}")


@pytest.mark.parametrize(
    "databag",
    [
        {"mode": json.dumps("both"), "revision": "1", "policy": "{}"},
        {"mode": json.dumps("data-centric"), "revision": "0", "policy": "{}"},
        {"mode": "not json"},
    ],
    ids=["unknown mode", "revision 0", "not JSON"],
)
def test_a_bad_approach_databag_blocks_and_acknowledges_nothing(ctx, make_state, databag):
    relation = dataclasses.replace(approach_relation(), remote_app_data=databag)
    out = ctx.run(ctx.on.relation_changed(relation), make_state(relations={relation}))
    assert isinstance(out.unit_status, testing.BlockedStatus)
    assert out.unit_status.message.startswith("mlops-approach: invalid data from mlops-approach: ")
    assert _acknowledged(out, relation) == {}
