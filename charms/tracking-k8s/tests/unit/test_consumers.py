"""mlops-tracking consumers: their users, their experiments, their grants, their secrets."""

from __future__ import annotations

import dataclasses
import json

import pytest
from ops import pebble, testing

from tests.tracking_testing import (
    ADMIN_PASSWORD,
    CONSUMER_TAG,
    DEFAULT_EXPERIMENT_ID,
    INGRESS_URL,
    INTERNAL_URL,
    READY_NOTICE,
    consumer_relation,
    consumer_secret,
    ingress_relation,
)

GRANT = "users/permissions/grant"
REVOKE = "users/permissions/revoke"


@pytest.fixture
def consumer() -> testing.Relation:
    return consumer_relation("trainer", experiment="fraud")


def provision(ctx, make_state, *relations, **state) -> testing.State:
    """Run relation-changed for the first consumer with all of ``relations`` in the state."""
    return ctx.run(
        ctx.on.relation_changed(relations[0]), make_state(relations=set(relations), **state)
    )


def user_of(relation: testing.Relation) -> str:
    return f"relation-{relation.id}-{relation.remote_app_name}"


def local_app_data(state: testing.State, relation: testing.Relation) -> dict[str, str]:
    return dict(state.get_relation(relation.id).local_app_data)


def published_experiment(state: testing.State, relation: testing.Relation) -> str | None:
    value = local_app_data(state, relation).get("default_experiment")
    return json.loads(value) if value else None


def consumer_credentials(state: testing.State, relation: testing.Relation) -> dict[str, str]:
    secret_id = json.loads(local_app_data(state, relation)["credentials_secret_id"])
    return dict(state.get_secret(id=secret_id).latest_content)


def grants_of(mlflow, username: str) -> dict[str, str]:
    """The user's own grants by experiment name."""
    names = {e["experiment_id"]: e["name"] for e in mlflow.experiments.values()}
    return {names[eid]: perm for (user, eid), perm in mlflow.grants.items() if user == username}


def requesting(state: testing.State, relation: testing.Relation, experiment: str | None):
    """``state`` after the consumer changed the experiment it asks for."""
    databag = {"experiment": json.dumps(experiment)} if experiment is not None else {}
    changed = dataclasses.replace(state.get_relation(relation.id), remote_app_data=databag)
    relations = {r for r in state.relations if r.id != relation.id} | {changed}
    return changed, dataclasses.replace(state, relations=relations)


@pytest.fixture
def provisioned(ctx, make_state, consumer) -> testing.State:
    """The consumer provisioned on "fraud" in an earlier hook."""
    return provision(ctx, make_state, consumer)


# --- the user and what it is told --------------------------------------------------------


def test_leader_creates_an_mlflow_user_for_the_consumer(ctx, make_state, consumer, mlflow):
    state_out = provision(ctx, make_state, consumer)
    credentials = consumer_credentials(state_out, consumer)
    assert credentials["username"] == user_of(consumer)
    assert mlflow.users[credentials["username"]]["password"] == credentials["password"]
    assert mlflow.users[credentials["username"]]["is_admin"] is False


def test_consumer_credentials_secret_is_granted_to_the_consumer_app(ctx, make_state, consumer):
    state_out = provision(ctx, make_state, consumer)
    secret_id = json.loads(local_app_data(state_out, consumer)["credentials_secret_id"])
    assert state_out.get_secret(id=secret_id).remote_grants == {consumer.id: {"trainer"}}


def test_leader_publishes_where_and_how_to_log(ctx, make_state, consumer):
    state_out = provision(ctx, make_state, consumer)
    secret = state_out.get_secret(label=f"mlops-tracking-{consumer.id}")
    assert local_app_data(state_out, consumer) == {
        "tracking_uri": json.dumps(INTERNAL_URL),
        "credentials_secret_id": json.dumps(secret.id),
        "default_experiment": '"fraud"',
    }


def test_consumers_get_the_external_url_when_there_is_ingress(ctx, make_state, consumer):
    state_out = provision(ctx, make_state, consumer, ingress_relation())
    assert json.loads(local_app_data(state_out, consumer)["external_tracking_uri"]) == INGRESS_URL


def test_leader_provisions_as_the_admin_on_the_local_server(ctx, make_state, consumer, mlflow):
    provision(ctx, make_state, consumer)
    assert set(mlflow.clients) == {("http://localhost:5000", "admin", ADMIN_PASSWORD)}


def test_existing_consumer_keeps_its_user_and_password(ctx, make_state, consumer, mlflow):
    secret = consumer_secret(consumer, password="kept-Pa55word")
    mlflow.add_user(user_of(consumer), "kept-Pa55word")

    state_out = provision(ctx, make_state, consumer, secrets={secret})

    assert mlflow.called("users/create") == []
    assert consumer_credentials(state_out, consumer)["password"] == "kept-Pa55word"


def test_consumer_user_missing_on_the_server_is_recreated_from_its_secret(
    ctx, make_state, consumer, mlflow
):
    secret = consumer_secret(consumer, password="kept-Pa55word")
    provision(ctx, make_state, consumer, secrets={secret})
    assert mlflow.called("users/create") == [
        {"username": user_of(consumer), "password": "kept-Pa55word"}
    ]


def test_non_leader_does_not_provision_consumers(ctx, make_state, consumer, mlflow):
    state_out = provision(ctx, make_state, consumer, leader=False)
    assert mlflow.requests == []
    assert not local_app_data(state_out, consumer)


def test_consumers_wait_for_a_healthy_server(ctx, make_state, consumer, mlflow):
    mlflow.healthy = False
    state_out = provision(ctx, make_state, consumer)
    assert mlflow.requests == []
    assert not local_app_data(state_out, consumer)


def test_waiting_consumers_are_provisioned_as_soon_as_mlflow_reports_ready(
    ctx, make_state, consumer, mlflow
):
    mlflow.healthy = False
    waiting = provision(ctx, make_state, consumer)
    mlflow.healthy = True
    notice = testing.Notice(READY_NOTICE)
    container = dataclasses.replace(waiting.get_container("mlflow"), notices=[notice])

    state_out = ctx.run(
        ctx.on.pebble_custom_notice(container, notice),
        dataclasses.replace(waiting, containers={container}),
    )

    assert published_experiment(state_out, consumer) == "fraud"


def test_waiting_consumers_are_provisioned_when_the_ready_check_recovers(
    ctx, make_state, consumer
):
    recovered = testing.CheckInfo("mlflow-ready", level=pebble.CheckLevel.READY)
    running = ctx.run(ctx.on.config_changed(), make_state())
    container = dataclasses.replace(running.get_container("mlflow"), check_infos={recovered})
    state_in = dataclasses.replace(running, containers={container}, relations={consumer})

    state_out = ctx.run(ctx.on.pebble_check_recovered(container, recovered), state_in)

    assert published_experiment(state_out, consumer) == "fraud"


MALFORMED_REQUESTS = {
    "not JSON": {"experiment": "fraud"},
    "not a string": {"experiment": "42"},
    "blank": {"experiment": '"   "'},
    "too long": {"experiment": json.dumps("x" * 300)},
}


@pytest.mark.parametrize("databag", MALFORMED_REQUESTS.values(), ids=MALFORMED_REQUESTS.keys())
def test_malformed_consumer_request_provisions_nothing(ctx, make_state, mlflow, databag):
    relation = consumer_relation("trainer", databag=databag)
    state_out = provision(ctx, make_state, relation)
    assert mlflow.called("users/create") == []
    assert not local_app_data(state_out, relation)


def test_malformed_consumer_does_not_hold_up_the_others(ctx, make_state, consumer):
    bad = consumer_relation("broken-app", databag={"experiment": "not json"})
    state_out = provision(ctx, make_state, bad, consumer)
    assert published_experiment(state_out, consumer) == "fraud"


def test_refused_provisioning_publishes_nothing_and_fails_no_hook(
    ctx, make_state, consumer, mlflow
):
    mlflow.fail("users/create", "database is locked")
    state_out = provision(ctx, make_state, consumer)
    assert not local_app_data(state_out, consumer)


# --- secrets -----------------------------------------------------------------------------


def test_consumer_secret_is_granted_in_the_hook_that_publishes_it(
    ctx, make_state, consumer, secret_grants
):
    provision(ctx, make_state, consumer)
    assert secret_grants == [consumer.id]


def test_published_consumer_secret_is_not_granted_again(ctx, provisioned, consumer, secret_grants):
    state_out = ctx.run(ctx.on.update_status(), provisioned)

    assert secret_grants == []
    assert local_app_data(state_out, consumer) == local_app_data(provisioned, consumer)


# --- grants ------------------------------------------------------------------------------


def test_consumer_gets_edit_on_the_experiment_it_asked_for_and_nothing_else(
    ctx, provisioned, consumer, mlflow
):
    assert grants_of(mlflow, user_of(consumer)) == {"fraud": "EDIT"}


def test_first_provisioning_grants_once_and_revokes_nothing(ctx, provisioned, mlflow):
    assert len(mlflow.called(GRANT)) == 1
    assert mlflow.called(REVOKE) == []


NO_OP_HOOKS = {
    "update-status": lambda ctx, state, relation: ctx.on.update_status(),
    "config-changed": lambda ctx, state, relation: ctx.on.config_changed(),
    "relation-changed": lambda ctx, state, relation: ctx.on.relation_changed(relation),
    "leader-elected": lambda ctx, state, relation: ctx.on.leader_elected(),
}


@pytest.mark.parametrize("hook", NO_OP_HOOKS.values(), ids=NO_OP_HOOKS.keys())
def test_reconciling_a_provisioned_consumer_neither_revokes_nor_grants(
    ctx, provisioned, consumer, mlflow, hook
):
    mlflow.requests.clear()

    ctx.run(hook(ctx, provisioned, provisioned.get_relation(consumer.id)), provisioned)

    assert mlflow.called(GRANT) == []
    assert mlflow.called(REVOKE) == []
    assert grants_of(mlflow, user_of(consumer)) == {"fraud": "EDIT"}


def test_consumer_already_holding_edit_is_not_granted_again(ctx, make_state, consumer, mlflow):
    # Granted in an earlier hook that failed before it published.
    secret = consumer_secret(consumer, password="kept-Pa55word")
    mlflow.add_user(user_of(consumer), "kept-Pa55word")
    experiment_id = mlflow.add_experiment("fraud", {CONSUMER_TAG: "trainer"})
    mlflow.grants[user_of(consumer), experiment_id] = "EDIT"

    state_out = provision(ctx, make_state, consumer, secrets={secret})

    assert mlflow.called(GRANT) == []
    assert published_experiment(state_out, consumer) == "fraud"


def test_consumer_holding_another_permission_gets_edit_in_its_place(
    ctx, make_state, consumer, mlflow
):
    # A person lowered the consumer's grant to READ in the UI.
    secret = consumer_secret(consumer, password="kept-Pa55word")
    mlflow.add_user(user_of(consumer), "kept-Pa55word")
    experiment_id = mlflow.add_experiment("fraud", {CONSUMER_TAG: "trainer"})
    mlflow.grants[user_of(consumer), experiment_id] = "READ"

    provision(ctx, make_state, consumer, secrets={secret})

    assert grants_of(mlflow, user_of(consumer)) == {"fraud": "EDIT"}
    assert (len(mlflow.called(REVOKE)), len(mlflow.called(GRANT))) == (1, 1)


def test_consumer_with_read_through_an_operators_role_still_gets_its_own_edit(
    ctx, make_state, consumer, mlflow
):
    secret = consumer_secret(consumer, password="kept-Pa55word")
    mlflow.add_user(user_of(consumer), "kept-Pa55word")
    experiment_id = mlflow.add_experiment("fraud", {CONSUMER_TAG: "trainer"})
    mlflow.role_grants.append((user_of(consumer), "auditors", experiment_id, "READ"))

    provision(ctx, make_state, consumer, secrets={secret})

    assert grants_of(mlflow, user_of(consumer)) == {"fraud": "EDIT"}


# --- experiments -------------------------------------------------------------------------


def test_new_experiment_is_created_tagged_with_the_consumer_app(ctx, provisioned, mlflow):
    assert mlflow.experiment_tags("fraud") == {CONSUMER_TAG: "trainer"}


def test_experiment_created_for_the_consumer_before_is_reused(ctx, make_state, consumer, mlflow):
    experiment_id = mlflow.add_experiment("fraud", {CONSUMER_TAG: "trainer"})

    provision(ctx, make_state, consumer)

    assert mlflow.called("experiments/create") == []
    assert mlflow.grants[user_of(consumer), experiment_id] == "EDIT"


def test_consumer_without_an_experiment_gets_the_existing_default_one(ctx, make_state, mlflow):
    relation = consumer_relation("labeller", experiment=None)

    state_out = provision(ctx, make_state, relation)

    assert published_experiment(state_out, relation) == "Default"
    assert mlflow.called("experiments/create") == []
    assert mlflow.grants[user_of(relation), DEFAULT_EXPERIMENT_ID] == "EDIT"


def test_configured_default_experiment_is_created_when_missing(ctx, make_state, mlflow):
    relation = consumer_relation("labeller", experiment=None)

    state_out = provision(ctx, make_state, relation, config={"default-experiment": "shared"})

    assert published_experiment(state_out, relation) == "shared"
    assert mlflow.permission(user_of(relation), "shared") == "EDIT"


def test_default_experiment_is_shared_by_every_consumer(ctx, make_state, mlflow):
    # The first consumer's hook creates it, tagged for that consumer; the next still gets it.
    labeller = consumer_relation("labeller", experiment=None)
    trainer = consumer_relation("trainer", experiment=None)
    first = provision(ctx, make_state, labeller, config={"default-experiment": "shared"})
    state_in = dataclasses.replace(first, relations={*first.relations, trainer})

    state_out = ctx.run(ctx.on.relation_changed(trainer), state_in)

    assert mlflow.experiment_tags("shared") == {CONSUMER_TAG: "labeller"}
    assert mlflow.permission(user_of(labeller), "shared") == "EDIT"
    assert mlflow.permission(user_of(trainer), "shared") == "EDIT"
    assert published_experiment(state_out, trainer) == "shared"


def test_consumer_may_ask_for_the_default_experiment_by_name(ctx, make_state, mlflow):
    relation = consumer_relation("trainer", experiment="Default")
    provision(ctx, make_state, relation)
    assert mlflow.grants[user_of(relation), DEFAULT_EXPERIMENT_ID] == "EDIT"


FOREIGN_EXPERIMENTS = {
    "another app's": {CONSUMER_TAG: "labeller"},
    "a person's": {},
    "a person's, tagged": {"team": "risk"},
}


@pytest.mark.parametrize("tags", FOREIGN_EXPERIMENTS.values(), ids=FOREIGN_EXPERIMENTS.keys())
def test_existing_experiment_not_made_for_the_consumer_is_refused(
    ctx, make_state, consumer, mlflow, tags
):
    mlflow.add_experiment("fraud", tags)

    state_out = provision(ctx, make_state, consumer)

    assert grants_of(mlflow, user_of(consumer)) == {}
    assert not local_app_data(state_out, consumer)
    assert mlflow.experiment_tags("fraud") == tags


def test_refused_consumer_does_not_hold_up_the_others(ctx, make_state, consumer, mlflow):
    mlflow.add_experiment("fraud", {CONSUMER_TAG: "someone-else"})
    other = consumer_relation("labeller", experiment="labels")

    state_out = provision(ctx, make_state, consumer, other)

    assert published_experiment(state_out, other) == "labels"


def test_consumer_changing_its_experiment_loses_the_old_grant(ctx, provisioned, consumer, mlflow):
    relation, state_in = requesting(provisioned, consumer, "churn")

    state_out = ctx.run(ctx.on.relation_changed(relation), state_in)

    assert grants_of(mlflow, user_of(consumer)) == {"churn": "EDIT"}
    assert published_experiment(state_out, consumer) == "churn"


def test_consumer_dropping_its_experiment_moves_to_the_default_one(
    ctx, provisioned, consumer, mlflow
):
    relation, state_in = requesting(provisioned, consumer, None)

    state_out = ctx.run(ctx.on.relation_changed(relation), state_in)

    assert grants_of(mlflow, user_of(consumer)) == {"Default": "EDIT"}
    assert published_experiment(state_out, consumer) == "Default"


def test_changed_default_experiment_moves_the_consumers_that_use_it(ctx, make_state, mlflow):
    relation = consumer_relation("labeller", experiment=None)
    before = provision(ctx, make_state, relation)

    state_out = ctx.run(
        ctx.on.config_changed(), dataclasses.replace(before, config={"default-experiment": "v2"})
    )

    assert grants_of(mlflow, user_of(relation)) == {"v2": "EDIT"}
    assert published_experiment(state_out, relation) == "v2"


def test_consumer_changing_to_a_refused_experiment_keeps_its_old_one(
    ctx, provisioned, consumer, mlflow
):
    mlflow.add_experiment("churn", {CONSUMER_TAG: "labeller"})
    relation, state_in = requesting(provisioned, consumer, "churn")

    state_out = ctx.run(ctx.on.relation_changed(relation), state_in)

    assert grants_of(mlflow, user_of(consumer)) == {"fraud": "EDIT"}
    assert published_experiment(state_out, consumer) == "fraud"


# --- a consumer leaving ------------------------------------------------------------------


def test_consumer_leaving_deletes_its_mlflow_user_and_grants(ctx, provisioned, consumer, mlflow):
    ctx.run(ctx.on.relation_broken(provisioned.get_relation(consumer.id)), provisioned)
    assert mlflow.called("users/delete") == [{"username": user_of(consumer)}]
    assert user_of(consumer) not in mlflow.users
    assert grants_of(mlflow, user_of(consumer)) == {}


def test_consumer_leaving_removes_its_credentials_secret(ctx, provisioned, consumer):
    state_out = ctx.run(ctx.on.relation_broken(provisioned.get_relation(consumer.id)), provisioned)
    assert not [s for s in state_out.secrets if s.label == f"mlops-tracking-{consumer.id}"]


def test_consumer_leaving_removes_its_secret_even_when_the_server_refuses(
    ctx, provisioned, consumer, mlflow
):
    mlflow.fail("users/delete", "server is read-only")
    state_out = ctx.run(ctx.on.relation_broken(provisioned.get_relation(consumer.id)), provisioned)
    assert not [s for s in state_out.secrets if s.label == f"mlops-tracking-{consumer.id}"]


def test_consumer_leaving_leaves_the_other_consumers_alone(ctx, make_state, consumer, mlflow):
    other = consumer_relation("labeller", experiment="labels")
    both = provision(ctx, make_state, consumer, other)

    state_out = ctx.run(ctx.on.relation_broken(both.get_relation(consumer.id)), both)

    assert grants_of(mlflow, user_of(other)) == {"labels": "EDIT"}
    assert published_experiment(state_out, other) == "labels"


def test_consumer_leaving_a_non_leader_deletes_nothing(ctx, provisioned, consumer, mlflow):
    state_in = dataclasses.replace(provisioned, leader=False)
    state_out = ctx.run(ctx.on.relation_broken(state_in.get_relation(consumer.id)), state_in)
    assert mlflow.called("users/delete") == []
    assert [s for s in state_out.secrets if s.label == f"mlops-tracking-{consumer.id}"]
