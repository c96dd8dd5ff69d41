"""Config validation, the published policy and when its revision grows."""

from __future__ import annotations

import pytest
from conftest import published, sent, service
from ops import testing


def run_config(ctx, peers, config=None, relations=(), leader=True) -> testing.State:
    state = testing.State(leader=leader, config=config or {}, relations={peers, *relations})
    return ctx.run(ctx.on.config_changed(), state)


def test_defaults_publish_data_centric_revision_1(ctx, peers):
    tracking = service("tracking-k8s")

    state = run_config(ctx, peers, relations=[tracking])

    data = sent(state.get_relation(tracking.id))
    assert data["mode"] == "data-centric"
    assert data["revision"] == 1
    assert data["policy"] == {
        "model_spec": {"spec": "text-tfidf-logreg", "params": {}},
        "annotator_overlap": 2,
        "agreement_threshold": 0.8,
        "relabel_top_k": 50,
        "train_on_new_version": True,
    }


def test_model_centric_publishes_only_its_fields_with_the_grid_expanded(ctx, peers):
    tracking = service("training-k8s")
    config = {"approach": "model-centric", "dataset-version": "v3", "sweep": "C: [1, 10]\n"}

    state = run_config(ctx, peers, config, [tracking])

    policy = sent(state.get_relation(tracking.id))["policy"]
    assert policy == {
        "dataset_version": "v3",
        "model_spec": {"spec": "text-tfidf-logreg", "params": {}},
        "sweep": [{"C": 1}, {"C": 10}],
        "selection_metric": "accuracy",
        "promote_best": True,
    }


def test_an_unchanged_policy_keeps_its_revision(ctx, peers):
    state = run_config(ctx, peers)
    again = ctx.run(ctx.on.config_changed(), state)

    assert published(again)["revision"] == 1


def test_a_changed_policy_option_bumps_the_revision(ctx, peers):
    state = run_config(ctx, peers)
    state = ctx.run(
        ctx.on.config_changed(),
        testing.State(leader=True, config={"annotator-overlap": 3}, relations=state.relations),
    )

    assert published(state)["revision"] == 2


def test_an_option_of_the_other_mode_does_not_bump_the_revision(ctx, peers):
    state = run_config(ctx, peers)
    state = ctx.run(
        ctx.on.config_changed(),
        testing.State(leader=True, config={"sweep": "C: [1, 2]"}, relations=state.relations),
    )

    assert published(state)["revision"] == 1


def test_a_non_leader_publishes_nothing(ctx, peers):
    tracking = service("tracking-k8s")

    state = run_config(ctx, peers, relations=[tracking], leader=False)

    assert state.get_relation(tracking.id).local_app_data == {}


@pytest.mark.parametrize(
    ("option", "value", "reason"),
    [
        ("approach", "both", "approach: must be one of model-centric, data-centric"),
        ("model-spec", "Not A Spec!", "model-spec: must be a spec name"),
        ("model-spec", '{"spec": "x", "extra": 1}', "model-spec: must be a spec name"),
        ("annotator-overlap", 1, "annotator-overlap: must be between 2 and 20"),
        ("agreement-threshold", 1.5, "agreement-threshold: must be between 0 and 1"),
        ("relabel-top-k", -1, "relabel-top-k: must be between 0 and 10000"),
        ("augmentation", "[1]", 'augmentation: must be "off" or a non-empty JSON object'),
        ("augmentation", '{"rotate": 1}', "augmentation: unknown keys rotate"),
        ("dataset-version", "latest", "dataset-version: must be a version such as v3"),
        ("sweep", "C: 1", "sweep: a grid maps each param to a non-empty list"),
        ("sweep", "[1, 2]", "sweep: a YAML grid"),
        ("sweep", "a: [1\n", "sweep: not valid YAML"),
        (
            "sweep",
            f"{{a: {list(range(4))}, b: {list(range(4))}, c: {list(range(17))}}}",
            "sweep: 272 configurations, at most 256",
        ),
        ("selection-metric", "loss", "selection-metric: must be one of accuracy"),
    ],
)
def test_a_bad_option_blocks_naming_it_and_publishes_nothing(ctx, peers, option, value, reason):
    tracking = service("tracking-k8s")

    state = run_config(ctx, peers, {option: value}, [tracking])

    assert isinstance(state.unit_status, testing.BlockedStatus)
    assert state.unit_status.message.startswith(reason)
    assert state.get_relation(tracking.id).local_app_data == {}


def test_model_spec_as_json_carries_its_params(ctx, peers):
    tracking = service("training-k8s")
    spec = '{"spec": "image-svc", "params": {"C": 10}}'

    state = run_config(ctx, peers, {"model-spec": spec}, [tracking])

    assert sent(state.get_relation(tracking.id))["policy"]["model_spec"] == {
        "spec": "image-svc",
        "params": {"C": 10},
    }


def test_augmentation_json_is_published(ctx, peers):
    tracking = service("training-k8s")
    augmentation = '{"text": ["swap"], "copies": 2}'

    state = run_config(ctx, peers, {"augmentation": augmentation}, [tracking])

    policy = sent(state.get_relation(tracking.id))["policy"]
    assert policy["augmentation"] == {"text": ["swap"], "copies": 2}
