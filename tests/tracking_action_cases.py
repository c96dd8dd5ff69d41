"""The actions' cases both tracking charms share: one behaviour, one test, run on each charm.

get-admin-credentials, create-user and promote-model do the same on Kubernetes and on a machine
(``mlops_charms.tracking_server``): each charm's ``test_actions.py`` subclasses ``ActionCases``
and so runs every case against its own charm. The fixtures they use (``ctx``, ``make_state``
with the admin secret, ``mlflow``) are each charm's conftest's.
"""

from __future__ import annotations

import pytest
from ops import testing

from tests.tracking_testing import ADMIN_PASSWORD, DEFAULT_EXPERIMENT_ID


def run_action(ctx, state: testing.State, name: str, **params) -> dict:
    ctx.run(ctx.on.action(name, params=params), state)
    assert ctx.action_results is not None
    return ctx.action_results


def failure(ctx, state: testing.State, name: str, **params) -> str:
    """The message the action fails with."""
    with pytest.raises(testing.ActionFailed) as failed:
        ctx.run(ctx.on.action(name, params=params), state)
    return failed.value.message


BAD_CREATE_USER_PARAMS = {
    "space in username": {"username": "ada lovelace"},
    "empty username": {"username": ""},
    "long username": {"username": "a" * 65},
    "the admin": {"username": "admin"},
    "a consumer's name": {"username": "relation-3-trainer"},
    "unknown permission": {"username": "ada", "permission": "OWNER"},
}


BAD_PROMOTE_PARAMS = {
    "blank model": {"model": "  ", "version": 3},
    "version zero": {"model": "fraud-detector", "version": 0},
    "alias latest": {"model": "fraud-detector", "version": 3, "alias": "latest"},
    "alias like a version": {"model": "fraud-detector", "version": 3, "alias": "v2"},
    "alias with a space": {"model": "fraud-detector", "version": 3, "alias": "the best"},
}


class ActionCases:
    """The substrate-neutral action tests; a ``Test...`` subclass runs them on a charm."""

    def test_get_admin_credentials_works_on_a_non_leader(self, ctx, make_state):
        results = run_action(ctx, make_state(leader=False), "get-admin-credentials")
        assert results["password"] == ADMIN_PASSWORD

    def test_get_admin_credentials_fails_before_the_leader_creates_the_secret(
        self, ctx, make_state
    ):
        state = make_state(leader=False, admin_secret_exists=False)
        assert failure(ctx, state, "get-admin-credentials") == (
            "the admin secret does not exist yet: wait for the leader"
        )

    def test_get_admin_credentials_leaves_out_the_url_while_config_is_invalid(
        self, ctx, make_state
    ):
        results = run_action(ctx, make_state(config={"port": 80}), "get-admin-credentials")
        assert results == {"username": "admin", "password": ADMIN_PASSWORD}

    # --- create-user -------------------------------------------------------------------------

    def test_create_user_creates_the_user_with_the_password_it_returns(
        self, ctx, make_state, mlflow
    ):
        results = run_action(ctx, make_state(), "create-user", username="ada", permission="EDIT")
        assert results["username"] == "ada"
        assert len(results["password"]) >= 32
        assert mlflow.users["ada"]["password"] == results["password"]

    def test_create_user_grants_the_permission_on_the_default_experiment(
        self, ctx, make_state, mlflow
    ):
        state = make_state(config={"default-experiment": "shared"})
        results = run_action(ctx, state, "create-user", username="ada", permission="READ")
        assert (results["permission"], results["experiment"]) == ("READ", "shared")
        assert mlflow.permission("ada", "shared") == "READ"

    def test_create_user_grants_edit_when_no_permission_is_given(self, ctx, make_state, mlflow):
        run_action(ctx, make_state(), "create-user", username="ada")
        assert mlflow.permission("ada", "Default") == "EDIT"

    def test_create_user_grants_on_the_existing_default_experiment(self, ctx, make_state, mlflow):
        run_action(ctx, make_state(), "create-user", username="ada")
        assert mlflow.called("experiments/create") == []
        assert mlflow.grants["ada", DEFAULT_EXPERIMENT_ID] == "EDIT"

    @pytest.mark.parametrize("permission", ["READ", "EDIT", "MANAGE"])
    def test_create_user_grants_exactly_the_permission_asked_for(
        self, ctx, make_state, mlflow, permission
    ):
        run_action(ctx, make_state(), "create-user", username="ada", permission=permission)
        assert {key: value for key, value in mlflow.grants.items() if key[0] == "ada"} == {
            ("ada", DEFAULT_EXPERIMENT_ID): permission
        }

    def test_create_admin_user_makes_an_mlflow_administrator(self, ctx, make_state, mlflow):
        results = run_action(ctx, make_state(), "create-user", username="ada", permission="ADMIN")
        assert mlflow.users["ada"]["is_admin"] is True
        assert mlflow.called("users/permissions/grant") == []
        assert results["experiment"] == ""

    def test_create_user_fails_for_an_existing_user(self, ctx, make_state, mlflow):
        mlflow.add_user("ada", "old-Pa55word-of-ada")
        assert (
            failure(ctx, make_state(), "create-user", username="ada")
            == "user 'ada' already exists"
        )
        assert mlflow.users["ada"]["password"] == "old-Pa55word-of-ada"
        assert mlflow.called("users/create") == []

    @pytest.mark.parametrize(
        "params", BAD_CREATE_USER_PARAMS.values(), ids=BAD_CREATE_USER_PARAMS.keys()
    )
    def test_create_user_with_bad_params_fails_in_one_line_before_any_call(
        self, ctx, make_state, mlflow, params
    ):
        message = failure(ctx, make_state(), "create-user", **params)
        assert message.startswith("Error in action parameters: ")
        assert "\n" not in message
        assert mlflow.requests == []

    def test_create_user_fails_while_the_server_is_not_ready(self, ctx, make_state, mlflow):
        mlflow.healthy = False
        assert failure(ctx, make_state(), "create-user", username="ada") == (
            "the MLflow server is not ready: check `juju status`"
        )

    def test_create_user_fails_while_the_config_is_invalid(self, ctx, make_state, mlflow):
        state = make_state(config={"workers": 0})
        assert failure(ctx, state, "create-user", username="ada") == (
            "cannot run while blocked: invalid config: workers: must be between 1 and 16"
        )

    def test_create_user_fails_before_the_admin_secret_exists(self, ctx, make_state):
        state = make_state(leader=False, admin_secret_exists=False)
        assert failure(ctx, state, "create-user", username="ada") == (
            "the admin secret does not exist yet: wait for the leader"
        )

    def test_create_user_reports_a_refusing_server_in_one_line(self, ctx, make_state, mlflow):
        mlflow.fail("users/create", "database is locked\nTraceback (most recent call last): ...")
        assert failure(ctx, make_state(), "create-user", username="ada") == (
            "MLflow refused the request (500): database is locked"
        )
        assert "ada" not in mlflow.users

    @pytest.mark.parametrize(
        ("permission", "endpoint"),
        [("EDIT", "users/permissions/grant"), ("ADMIN", "users/update-admin")],
        ids=["grant", "admin"],
    )
    def test_create_user_removes_the_user_when_granting_fails(
        self, ctx, make_state, mlflow, permission, endpoint
    ):
        mlflow.fail(endpoint, "database is locked")

        message = failure(ctx, make_state(), "create-user", username="ada", permission=permission)

        assert message == "MLflow refused the request (500): database is locked"
        assert mlflow.called("users/delete") == [{"username": "ada"}]
        assert "ada" not in mlflow.users

    def test_create_user_can_be_run_again_after_granting_failed(self, ctx, make_state, mlflow):
        mlflow.fail("users/permissions/grant", "database is locked")
        failure(ctx, make_state(), "create-user", username="ada")
        del mlflow.failures["users/permissions/grant"]

        results = run_action(ctx, make_state(), "create-user", username="ada")

        assert mlflow.users["ada"]["password"] == results["password"]
        assert mlflow.permission("ada", "Default") == "EDIT"

    def test_create_user_reports_the_grant_failure_when_the_cleanup_fails_too(
        self, ctx, make_state, mlflow
    ):
        mlflow.fail("users/permissions/grant", "database is locked")
        mlflow.fail("users/delete", "server is read-only")

        message = failure(ctx, make_state(), "create-user", username="ada")

        assert message == "MLflow refused the request (500): database is locked"

    # --- promote-model -----------------------------------------------------------------------

    @pytest.fixture
    def registry(self, mlflow):
        """A registry holding version 3 of fraud-detector."""
        mlflow.add_model_version("fraud-detector", "3", run_id="4f1c")
        return mlflow

    def test_promote_model_points_the_alias_at_the_version(self, ctx, make_state, registry):
        run_action(
            ctx,
            make_state(),
            "promote-model",
            model="fraud-detector",
            version=3,
            alias="challenger",
        )
        assert registry.aliases["fraud-detector", "challenger"] == "3"

    def test_promote_model_returns_the_promoted_version(self, ctx, make_state, registry):
        results = run_action(
            ctx, make_state(), "promote-model", model="fraud-detector", version=3, alias="prod"
        )
        assert results == {
            "model": "fraud-detector",
            "version": "3",
            "alias": "prod",
            "run-id": "4f1c",
            "source": "models:/m-4f1c",
        }

    def test_promote_model_sets_champion_when_no_alias_is_given(self, ctx, make_state, registry):
        run_action(ctx, make_state(), "promote-model", model="fraud-detector", version=3)
        assert registry.aliases["fraud-detector", "champion"] == "3"

    def test_promote_model_fails_for_a_missing_version(self, ctx, make_state, registry):
        message = failure(ctx, make_state(), "promote-model", model="fraud-detector", version=7)
        assert message == "model 'fraud-detector' has no version 7"
        assert registry.aliases == {}

    @pytest.mark.parametrize("params", BAD_PROMOTE_PARAMS.values(), ids=BAD_PROMOTE_PARAMS.keys())
    def test_promote_model_with_bad_params_fails_in_one_line_before_any_call(
        self, ctx, make_state, registry, params
    ):
        message = failure(ctx, make_state(), "promote-model", **params)
        assert message.startswith("Error in action parameters: ")
        assert "\n" not in message
        assert registry.requests == []

    def test_promote_model_fails_while_the_server_is_not_ready(self, ctx, make_state, registry):
        registry.healthy = False
        message = failure(ctx, make_state(), "promote-model", model="fraud-detector", version=3)
        assert message == "the MLflow server is not ready: check `juju status`"

    def test_promote_model_reports_a_refusing_server_in_one_line(self, ctx, make_state, registry):
        registry.fail("registered-models/alias", "PERMISSION_DENIED", status=403)
        message = failure(ctx, make_state(), "promote-model", model="fraud-detector", version=3)
        assert message == "MLflow refused the request (403): PERMISSION_DENIED"
