"""The rotate-credentials cases each service's two charms share (``mlops_charms.rotation``).

Each charm's ``tests/unit/test_rotate_credentials.py`` subclasses the cases of its service and
so runs every one against its own charm, with its conftest's fixtures (``ctx``, ``make_state``
and the service's in-memory workload).
"""

from __future__ import annotations

import json

import pytest
from ops import testing

from mlops_charms import registry_server
from tests.labelling_testing import ADMIN_PASSWORD as LS_ADMIN_PASSWORD
from tests.labelling_testing import ADMIN_TOKEN as LS_TOKEN
from tests.labelling_testing import SECRET_KEY as LS_SECRET_KEY
from tests.registry_relations import consumer_relation as dataset_consumer
from tests.tracking_testing import (
    ADMIN_PASSWORD,
    consumer_relation,
    consumer_secret,
    secret_by_label,
)

ACTION = "rotate-credentials"


def rotate(ctx, state: testing.State, **params) -> tuple[dict, testing.State]:
    """The action's results and the state after it."""
    state_out = ctx.run(ctx.on.action(ACTION, params=params), state)
    assert ctx.action_results is not None
    return ctx.action_results, state_out


def refusal(ctx, state: testing.State, **params) -> str:
    """The message the action fails with."""
    with pytest.raises(testing.ActionFailed) as failed:
        ctx.run(ctx.on.action(ACTION, params=params), state)
    return failed.value.message


def failed_state(failed: pytest.ExceptionInfo[testing.ActionFailed]) -> testing.State:
    """The State after the failed action."""
    state = failed.value.state
    assert isinstance(state, testing.State)
    return state


def assert_no_secret_in(results: dict, *values: str) -> None:
    shown = json.dumps(results)
    for value in values:
        assert value not in shown
    assert "password" not in shown


BAD_PARAMS = {
    "unknown target": ({"target": "everything"}, "target must be one of all, admin, consumers"),
    "consumer with target admin": (
        {"target": "admin", "consumer": "trainer"},
        "consumer names a consumer: use it with target consumers or all",
    ),
}


class TrackingRotationCases:
    """rotate-credentials on a tracking charm: MLflow's admin and consumer users."""

    CONSUMER_PASSWORD = "consumer-Pa55word-from-the-secret"

    def consumer(self, app: str = "trainer") -> tuple[testing.Relation, testing.Secret]:
        relation = consumer_relation(app)
        return relation, consumer_secret(relation, password=self.CONSUMER_PASSWORD)

    def test_admin_password_changes_in_mlflow_and_in_a_new_secret_revision(
        self, ctx, make_state, mlflow
    ):
        results, state_out = rotate(ctx, make_state(), target="admin")

        secret = secret_by_label(state_out, "mlflow-server")
        new_password = secret.latest_content["admin-password"]
        assert new_password != ADMIN_PASSWORD and len(new_password) >= 32
        assert mlflow.users["admin"]["password"] == new_password
        assert results["admin"]["secret-label"] == "mlflow-server"
        assert results["admin"]["secret-id"] == secret.id
        assert results["admin"]["revision"] == "2"
        assert results["restarted"] == "nothing"

    def test_admin_rotation_keeps_the_flask_secret_key(self, ctx, make_state, admin_secret):
        _, state_out = rotate(ctx, make_state(), target="admin")
        content = secret_by_label(state_out, "mlflow-server").latest_content
        assert content["flask-secret-key"] == admin_secret.latest_content["flask-secret-key"]

    def test_get_admin_credentials_then_shows_the_new_password(self, ctx, make_state, mlflow):
        _, state_out = rotate(ctx, make_state(), target="admin")
        ctx.run(ctx.on.action("get-admin-credentials"), state_out)
        assert ctx.action_results["password"] == mlflow.users["admin"]["password"]

    def test_results_hold_no_password(self, ctx, make_state, mlflow):
        relation, secret = self.consumer()
        mlflow.add_user(secret.latest_content["username"], self.CONSUMER_PASSWORD)
        results, _ = rotate(ctx, make_state(relations={relation}, secrets={secret}))
        assert_no_secret_in(
            results,
            ADMIN_PASSWORD,
            self.CONSUMER_PASSWORD,
            *(user["password"] for user in mlflow.users.values()),
        )

    def test_consumer_password_changes_in_mlflow_and_in_its_secret(self, ctx, make_state, mlflow):
        relation, secret = self.consumer()
        username = secret.latest_content["username"]
        mlflow.add_user(username, self.CONSUMER_PASSWORD)

        results, state_out = rotate(
            ctx, make_state(relations={relation}, secrets={secret}), target="consumers"
        )

        content = secret_by_label(state_out, f"mlops-tracking-{relation.id}").latest_content
        assert content["username"] == username
        assert content["password"] not in (self.CONSUMER_PASSWORD, "")
        assert mlflow.users[username]["password"] == content["password"]
        assert mlflow.users["admin"]["password"] == ADMIN_PASSWORD  # consumers only
        assert results["consumers"]["trainer"]["revision"] == "2"
        assert "admin" not in results

    def test_consumer_param_rotates_only_that_consumer(self, ctx, make_state, mlflow):
        trainer, trainer_secret = self.consumer("trainer")
        labeller, labeller_secret = self.consumer("labeller")
        for secret in (trainer_secret, labeller_secret):
            mlflow.add_user(secret.latest_content["username"], self.CONSUMER_PASSWORD)
        state = make_state(
            relations={trainer, labeller}, secrets={trainer_secret, labeller_secret}
        )

        results, _ = rotate(ctx, state, target="consumers", consumer="labeller")

        assert list(results["consumers"]) == ["labeller"]
        trainer_user = trainer_secret.latest_content["username"]
        assert mlflow.users[trainer_user]["password"] == self.CONSUMER_PASSWORD

    def test_a_named_consumer_alone_leaves_the_admin_as_it_is(self, ctx, make_state, mlflow):
        relation, secret = self.consumer("trainer")
        mlflow.add_user(secret.latest_content["username"], self.CONSUMER_PASSWORD)

        results, _ = rotate(
            ctx, make_state(relations={relation}, secrets={secret}), consumer="trainer"
        )

        assert "admin" not in results and list(results["consumers"]) == ["trainer"]
        assert mlflow.users["admin"]["password"] == ADMIN_PASSWORD

    def test_unknown_consumer_fails_naming_the_known_ones(self, ctx, make_state, mlflow):
        relation, secret = self.consumer("trainer")
        state = make_state(relations={relation}, secrets={secret})
        assert refusal(ctx, state, consumer="nobody") == (
            "no consumer 'nobody': known consumers: trainer"
        )
        assert mlflow.called("users/update-password") == []

    def test_non_leader_fails_and_changes_nothing(self, ctx, make_state, mlflow):
        message = refusal(ctx, make_state(leader=False))
        assert message.startswith("only the leader rotates credentials")
        assert mlflow.users["admin"]["password"] == ADMIN_PASSWORD

    @pytest.mark.parametrize("params,message", BAD_PARAMS.values(), ids=BAD_PARAMS)
    def test_bad_params_fail_with_the_reason(self, ctx, make_state, params, message):
        assert refusal(ctx, make_state(), **params) == f"Error in action parameters: {message}"

    def test_mlflow_down_fails_and_the_secret_keeps_its_password(self, ctx, make_state, mlflow):
        mlflow.healthy = False
        assert refusal(ctx, make_state()) == "the MLflow server is not ready: check `juju status`"

    def test_mlflow_refusing_leaves_the_secret_as_it_was(self, ctx, make_state, mlflow):
        mlflow.fail("users/update-password", "password too weak", status=400)
        state = make_state()
        with pytest.raises(testing.ActionFailed) as failed:
            ctx.run(ctx.on.action(ACTION, params={"target": "admin"}), state)
        assert failed.value.message.startswith("admin: MLflow refused the new password")
        content = secret_by_label(failed_state(failed), "mlflow-server").latest_content
        assert content["admin-password"] == ADMIN_PASSWORD


def by_label(state: testing.State, label: str) -> testing.Secret:
    (secret,) = [secret for secret in state.secrets if secret.label == label]
    return secret


def content(secret: testing.Secret) -> dict[str, str]:
    return dict(secret.latest_content or secret.tracked_content)


class RegistryRotationCases:
    """rotate-credentials on a data-versioning charm: git passwords and S3 keys of its users.

    Fixtures: ``deployed(relations=...)`` (a registry that came up), ``data_dir`` (its
    storage), ``make_state``.
    """

    WRITER = registry_server.REGISTRY_SECRET

    def consumer_label(self, relation: testing.Relation) -> str:
        return registry_server.CONSUMER_SECRET.format(relation_id=relation.id)

    def test_every_user_gets_a_new_password_and_key_pair_in_a_new_revision(
        self, ctx, deployed, data_dir
    ):
        relation = dataset_consumer()
        state = deployed(relations=[relation])
        before = {
            label: content(by_label(state, label))
            for label in (self.WRITER, self.consumer_label(relation))
        }

        results, state_out = rotate(ctx, state)

        for label, old in before.items():
            new = content(by_label(state_out, label))
            assert new["username"] == old["username"]
            for key in ("password", "access-key", "secret-key"):
                assert new[key] != old[key], (label, key)
        assert results["admin"]["secret-label"] == self.WRITER
        assert results["consumers"]["training"]["secret-label"] == self.consumer_label(relation)
        assert results["consumers"]["training"]["revision"] == "2"
        assert results["rotated"] == "2"

    def test_the_servers_read_the_new_keys_and_not_the_old(self, ctx, deployed, data_dir):
        relation = dataset_consumer()
        state = deployed(relations=[relation])
        old = content(by_label(state, self.consumer_label(relation)))
        htpasswd_before = (data_dir / "conf" / "htpasswd").read_text()

        _, state_out = rotate(ctx, state, target="consumers")

        new = content(by_label(state_out, self.consumer_label(relation)))
        s3_env = (data_dir / "conf" / "s3.env").read_text()
        assert new["secret-key"] in s3_env and old["secret-key"] not in s3_env
        assert (data_dir / "conf" / "htpasswd").read_text() != htpasswd_before
        writer = content(by_label(state_out, self.WRITER))
        assert writer["secret-key"] in s3_env  # the writer was not rotated

    def test_results_name_the_restart_and_hold_no_secret(self, ctx, deployed):
        relation = dataset_consumer()
        state = deployed(relations=[relation])
        results, state_out = rotate(ctx, state)
        values = [
            value
            for label in (self.WRITER, self.consumer_label(relation))
            for key, value in content(by_label(state_out, label)).items()
            if key != "username"
        ]
        assert_no_secret_in(results, *values)
        assert "s3" in results["restarted"]

    def test_unknown_consumer_fails_naming_the_known_ones(self, ctx, deployed):
        state = deployed(relations=[dataset_consumer()])
        assert refusal(ctx, state, consumer="nobody") == (
            "no consumer 'nobody': known consumers: training"
        )

    def test_non_leader_fails(self, ctx, make_state):
        message = refusal(ctx, make_state(leader=False))
        assert message.startswith("only the leader rotates credentials")

    @pytest.mark.parametrize("params,message", BAD_PARAMS.values(), ids=BAD_PARAMS)
    def test_bad_params_fail_with_the_reason(self, ctx, deployed, params, message):
        assert refusal(ctx, deployed(), **params) == f"Error in action parameters: {message}"

    def test_servers_down_fails_and_the_secret_keeps_its_content(self, ctx, make_state):
        state = make_state()  # the servers never started
        writer = content(by_label(state, self.WRITER))
        with pytest.raises(testing.ActionFailed) as failed:
            ctx.run(ctx.on.action(ACTION, params={"target": "admin"}), state)
        assert failed.value.message.endswith("check `juju status`") or (
            "not ready" in failed.value.message
        )
        assert content(by_label(failed_state(failed), self.WRITER)) == writer


class LabellingRotationCases:
    """rotate-credentials on a labelling charm: Label Studio's admin password and API token.

    Fixtures of each charm: ``ctx``, ``make_state``, ``admin_commands()`` (the environments of
    the commands that set the admin's credentials in Label Studio), ``admin_command_fails``
    (requested: that command fails), ``secrets_env()`` (the text of secrets.env).
    """

    LABEL = "label-studio-server"

    def test_admin_password_and_token_change_in_label_studio_then_in_the_secret(
        self, ctx, make_state, admin_commands
    ):
        results, state_out = rotate(ctx, make_state())

        new = content(by_label(state_out, self.LABEL))
        assert new["admin-password"] != LS_ADMIN_PASSWORD and new["admin-token"] != LS_TOKEN
        (environment,) = admin_commands()
        assert environment["MLOPS_ADMIN_PASSWORD"] == new["admin-password"]
        assert environment["MLOPS_ADMIN_TOKEN"] == new["admin-token"]
        assert results["admin"]["revision"] == "2"
        assert results["restarted"] == "nothing"

    def test_the_django_secret_key_is_kept(self, ctx, make_state):
        _, state_out = rotate(ctx, make_state(), target="admin")
        assert content(by_label(state_out, self.LABEL))["secret-key"] == LS_SECRET_KEY

    def test_secrets_env_gets_the_new_credentials(self, ctx, make_state, secrets_env):
        _, state_out = rotate(ctx, make_state(), target="admin")
        new = content(by_label(state_out, self.LABEL))
        text = secrets_env()
        assert new["admin-password"] in text and new["admin-token"] in text
        assert LS_ADMIN_PASSWORD not in text

    def test_get_admin_credentials_then_shows_the_new_ones(self, ctx, make_state):
        _, state_out = rotate(ctx, make_state())
        ctx.run(ctx.on.action("get-admin-credentials"), state_out)
        new = content(by_label(state_out, self.LABEL))
        assert ctx.action_results["password"] == new["admin-password"]
        assert ctx.action_results["api-token"] == new["admin-token"]

    def test_results_hold_no_secret(self, ctx, make_state):
        results, state_out = rotate(ctx, make_state())
        new = content(by_label(state_out, self.LABEL))
        assert_no_secret_in(
            results, LS_ADMIN_PASSWORD, LS_TOKEN, new["admin-password"], new["admin-token"]
        )

    def test_consumers_target_rotates_nothing(self, ctx, make_state, admin_commands):
        results, state_out = rotate(ctx, make_state(), target="consumers")
        assert results["rotated"] == "0" and admin_commands() == []
        assert content(by_label(state_out, self.LABEL))["admin-password"] == LS_ADMIN_PASSWORD

    def test_a_named_consumer_fails_as_there_is_none(self, ctx, make_state):
        assert refusal(ctx, make_state(), consumer="training") == (
            "no consumer 'training': known consumers: none"
        )

    def test_non_leader_fails(self, ctx, make_state, admin_commands):
        assert refusal(ctx, make_state(leader=False)).startswith(
            "only the leader rotates credentials"
        )
        assert admin_commands() == []

    @pytest.mark.parametrize("params,message", BAD_PARAMS.values(), ids=BAD_PARAMS)
    def test_bad_params_fail_with_the_reason(self, ctx, make_state, params, message):
        assert refusal(ctx, make_state(), **params) == f"Error in action parameters: {message}"

    def test_label_studio_down_fails_and_changes_nothing(
        self, ctx, make_state, healthy, admin_commands
    ):
        healthy["up"] = False
        assert refusal(ctx, make_state()) == "Label Studio is not ready: check `juju status`"
        assert admin_commands() == []

    def test_a_failed_command_leaves_the_secret_as_it_was(
        self, ctx, make_state, admin_command_fails
    ):
        with pytest.raises(testing.ActionFailed) as failed:
            ctx.run(ctx.on.action(ACTION, params={}), make_state())
        assert failed.value.message.startswith(
            "admin: Label Studio did not take the new credentials"
        )
        unchanged = content(by_label(failed_state(failed), self.LABEL))
        assert unchanged["admin-password"] == LS_ADMIN_PASSWORD
