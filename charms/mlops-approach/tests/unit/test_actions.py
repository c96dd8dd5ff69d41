"""The switch and show-plan actions."""

from __future__ import annotations

import json

import pytest
from conftest import published, sent, service
from ops import testing


@pytest.fixture
def running(ctx, peers) -> testing.State:
    """Data-centric at rev 1, with training-k8s having applied it."""
    training = service("training-k8s", service="training", applied_revision=1)
    return ctx.run(
        ctx.on.config_changed(), testing.State(leader=True, relations={peers, training})
    )


def test_switch_publishes_the_other_mode_as_a_new_revision_and_returns_the_plan(ctx, running):
    state = ctx.run(ctx.on.action("switch", params={"approach": "model-centric"}), running)

    training = next(r for r in state.relations if r.endpoint == "mlops-approach")
    assert sent(training)["mode"] == "model-centric"
    assert sent(training)["revision"] == 2
    results = ctx.action_results
    assert results is not None
    assert results["mode"] == "model-centric"
    assert results["revision"] == 2
    assert "juju config mlops-approach approach=" in results["note"]
    [plan] = json.loads(results["services"])
    assert plan["app"] == "training-k8s"
    assert plan["plan"].startswith("sweeps 0 configuration(s) of text-tfidf-logreg")


def test_switch_survives_later_hooks_until_approach_is_configured_again(ctx, running):
    state = ctx.run(ctx.on.action("switch", params={"approach": "model-centric"}), running)
    state = ctx.run(ctx.on.config_changed(), state)
    assert published(state)["mode"] == "model-centric"

    state = ctx.run(
        ctx.on.config_changed(),
        testing.State(
            leader=True, config={"approach": "model-centric"}, relations=state.relations
        ),
    )
    state = ctx.run(
        ctx.on.config_changed(),
        testing.State(leader=True, config={"approach": "data-centric"}, relations=state.relations),
    )

    assert published(state)["mode"] == "data-centric"
    assert published(state)["revision"] == 3


def test_switch_to_the_configured_mode_clears_the_override(ctx, running):
    state = ctx.run(ctx.on.action("switch", params={"approach": "model-centric"}), running)
    state = ctx.run(ctx.on.action("switch", params={"approach": "data-centric"}), state)

    assert published(state) == {**published(state), "mode": "data-centric", "revision": 3}
    assert "note" not in (ctx.action_results or {})


def test_switch_to_an_unknown_mode_fails_in_one_line(ctx, running):
    with pytest.raises(testing.ActionFailed) as failure:
        ctx.run(ctx.on.action("switch", params={"approach": "both"}), running)

    assert "approach must be one of model-centric, data-centric" in failure.value.message


def test_switch_on_a_non_leader_fails(ctx, running):
    state = testing.State(leader=False, relations=running.relations)

    with pytest.raises(testing.ActionFailed) as failure:
        ctx.run(ctx.on.action("switch", params={"approach": "model-centric"}), state)

    assert failure.value.message == "run switch on the leader unit"


def test_switch_while_blocked_fails_with_the_reason(ctx, running):
    state = testing.State(leader=True, config={"approach": "x"}, relations=running.relations)

    with pytest.raises(testing.ActionFailed) as failure:
        ctx.run(ctx.on.action("switch", params={"approach": "model-centric"}), state)

    assert failure.value.message.startswith("cannot switch while blocked: approach:")


def test_show_plan_says_what_each_service_does_in_the_current_mode(ctx, running):
    ctx.run(ctx.on.action("show-plan"), running)

    results = ctx.action_results
    assert results is not None
    assert results["mode"] == "data-centric"
    assert json.loads(results["policy"])["annotator_overlap"] == 2
    [plan] = json.loads(results["services"])
    assert plan == {
        "app": "training-k8s",
        "service": "training",
        "applied-revision": 1,
        "plan": "trains frozen text-tfidf-logreg on every new version, error analysis sends "
        "the top 50 to labelling; augmentation off",
    }


def test_show_plan_before_anything_was_published_fails(ctx, peers):
    with pytest.raises(testing.ActionFailed) as failure:
        ctx.run(ctx.on.action("show-plan"), testing.State(leader=False, relations={peers}))

    assert failure.value.message == "no policy published yet: the leader has not run"
