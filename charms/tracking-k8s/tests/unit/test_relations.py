"""The relations: database and S3 arriving and leaving, ingress, and mlops-tracking consumers."""

from __future__ import annotations

import dataclasses
import json

import pytest
from ops import pebble, testing
from tracking_testing import (
    ADMIN_PASSWORD,
    AUTH_CONFIG,
    DB_HOST,
    DB_PASSWORD,
    DB_USERNAME,
    INGRESS_HOST,
    INGRESS_URL,
    INTERNAL_URL,
    S3_ACCESS_KEY,
    S3_ENDPOINT,
    S3_SECRET_KEY,
    SECRETS_ENV,
    allowed_hosts,
    consumer_relation,
    consumer_secret,
    database_relation,
    database_secret,
    environment,
    ingress_relation,
    option,
    s3_relation,
    s3_secret,
    server_args,
    stored,
)

POSTGRESQL_URL = f"postgresql+psycopg2://{DB_USERNAME}@{DB_HOST}:5432/mlflow"
SQLITE_URL = "sqlite:////var/lib/mlflow/mlflow.db"
LOCAL_ARTIFACTS = "/var/lib/mlflow/artifacts"


def local_app_data(state: testing.State, relation: testing.Relation) -> dict[str, str]:
    return dict(state.get_relation(relation.id).local_app_data)


# --- database ----------------------------------------------------------------------------


@pytest.fixture
def db_secret() -> testing.Secret:
    return database_secret()


@pytest.fixture
def db_relation(db_secret) -> testing.Relation:
    return database_relation(db_secret)


@pytest.fixture
def on_postgresql(ctx, make_state, db_relation, db_secret) -> testing.State:
    """A unit whose server already runs on PostgreSQL."""
    state_in = make_state(relations={db_relation}, secrets={db_secret})
    return ctx.run(ctx.on.relation_changed(db_relation), state_in)


def test_leader_requests_the_mlflow_database(ctx, make_state):
    relation = database_relation()
    state_out = ctx.run(ctx.on.relation_created(relation), make_state(relations={relation}))
    assert local_app_data(state_out, relation)["database"] == "mlflow"


def test_database_relation_switches_the_backend_store_to_postgresql(on_postgresql):
    assert option(server_args(on_postgresql), "--backend-store-uri") == POSTGRESQL_URL


def test_database_relation_moves_the_users_into_postgresql(on_postgresql, data_dir):
    assert f"database_uri = {POSTGRESQL_URL}\n" in stored(data_dir, AUTH_CONFIG).read_text()


def test_database_password_reaches_the_server_through_the_secrets_file(on_postgresql, data_dir):
    assert f"export PGPASSWORD={DB_PASSWORD}\n" in stored(data_dir, SECRETS_ENV).read_text()


def test_database_password_is_not_in_the_plan(on_postgresql):
    assert DB_PASSWORD not in on_postgresql.get_container("mlflow").plan.to_yaml()


def test_database_without_credentials_holds_back_the_first_start(ctx, make_state, pebble_calls):
    relation = database_relation()
    state_out = ctx.run(ctx.on.relation_changed(relation), make_state(relations={relation}))
    assert not state_out.get_container("mlflow").plan.services
    assert pebble_calls == []


def test_database_without_credentials_leaves_a_running_server_alone(ctx, make_state, pebble_calls):
    running = ctx.run(ctx.on.config_changed(), make_state())
    pebble_calls.clear()
    relation = database_relation()

    state_out = ctx.run(
        ctx.on.relation_changed(relation), dataclasses.replace(running, relations={relation})
    )

    assert option(server_args(state_out), "--backend-store-uri") == SQLITE_URL
    assert pebble_calls == []


def test_database_leaving_returns_the_backend_store_to_sqlite(ctx, on_postgresql, db_relation):
    state_out = ctx.run(
        ctx.on.relation_broken(on_postgresql.get_relation(db_relation.id)), on_postgresql
    )
    assert option(server_args(state_out), "--backend-store-uri") == SQLITE_URL


def test_database_leaving_removes_its_password_from_the_secrets_file(
    ctx, on_postgresql, db_relation, data_dir
):
    ctx.run(ctx.on.relation_broken(on_postgresql.get_relation(db_relation.id)), on_postgresql)
    assert "PGPASSWORD" not in stored(data_dir, SECRETS_ENV).read_text()


def test_rotated_database_password_restarts_the_server_without_replanning(
    ctx, on_postgresql, db_secret, data_dir, pebble_calls
):
    rotated = testing.Secret(
        {**db_secret.latest_content, "password": "rotated-Pa55"}, id=db_secret.id
    )
    state_in = dataclasses.replace(
        on_postgresql, secrets={*on_postgresql.secrets} - {db_secret} | {rotated}
    )

    ctx.run(ctx.on.secret_changed(rotated), state_in)

    assert "export PGPASSWORD=rotated-Pa55\n" in stored(data_dir, SECRETS_ENV).read_text()
    assert pebble_calls == ["restart"]


# --- S3 ----------------------------------------------------------------------------------


@pytest.fixture
def keys_secret() -> testing.Secret:
    return s3_secret()


@pytest.fixture
def bucket_relation(keys_secret) -> testing.Relation:
    return s3_relation(keys_secret)


@pytest.fixture
def on_s3(ctx, make_state, bucket_relation, keys_secret) -> testing.State:
    """A unit whose server already keeps its artifacts in S3."""
    state_in = make_state(relations={bucket_relation}, secrets={keys_secret})
    return ctx.run(ctx.on.relation_changed(bucket_relation), state_in)


def test_leader_requests_the_mlflow_bucket(ctx, make_state):
    relation = s3_relation()
    state_out = ctx.run(
        ctx.on.relation_joined(relation, remote_unit=0), make_state(relations={relation})
    )
    assert local_app_data(state_out, relation)["bucket"] == "mlflow"


def test_s3_relation_switches_artifacts_to_the_bucket(on_s3):
    assert option(server_args(on_s3), "--artifacts-destination") == "s3://mlflow-artifacts/team-a"


def test_s3_artifacts_are_still_proxied_by_the_server(on_s3):
    assert "--serve-artifacts" in server_args(on_s3)


def test_s3_endpoint_and_region_reach_the_server_environment(on_s3):
    env = environment(on_s3)
    assert env["MLFLOW_S3_ENDPOINT_URL"] == S3_ENDPOINT
    assert env["AWS_DEFAULT_REGION"] == "eu-west-1"


def test_s3_keys_reach_the_server_through_the_secrets_file(on_s3, data_dir):
    secrets_env = stored(data_dir, SECRETS_ENV).read_text()
    assert f"export AWS_ACCESS_KEY_ID={S3_ACCESS_KEY}\n" in secrets_env
    assert f"export AWS_SECRET_ACCESS_KEY={S3_SECRET_KEY}\n" in secrets_env


def test_s3_keys_are_not_in_the_plan(on_s3):
    plan = on_s3.get_container("mlflow").plan.to_yaml()
    assert S3_ACCESS_KEY not in plan
    assert S3_SECRET_KEY not in plan


def test_s3_without_credentials_holds_back_the_first_start(ctx, make_state):
    relation = s3_relation()
    state_out = ctx.run(ctx.on.relation_changed(relation), make_state(relations={relation}))
    assert not state_out.get_container("mlflow").plan.services


def test_s3_leaving_returns_artifacts_to_the_storage(ctx, on_s3, bucket_relation):
    state_out = ctx.run(ctx.on.relation_broken(on_s3.get_relation(bucket_relation.id)), on_s3)
    assert option(server_args(state_out), "--artifacts-destination") == LOCAL_ARTIFACTS
    assert "MLFLOW_S3_ENDPOINT_URL" not in environment(state_out)


def test_s3_leaving_removes_the_keys_from_the_secrets_file(ctx, on_s3, bucket_relation, data_dir):
    ctx.run(ctx.on.relation_broken(on_s3.get_relation(bucket_relation.id)), on_s3)
    assert S3_SECRET_KEY not in stored(data_dir, SECRETS_ENV).read_text()


def test_database_and_s3_together_make_the_server_stateless(
    ctx, make_state, db_relation, db_secret, bucket_relation, keys_secret
):
    state_in = make_state(
        relations={db_relation, bucket_relation}, secrets={db_secret, keys_secret}
    )
    state_out = ctx.run(ctx.on.config_changed(), state_in)
    args = server_args(state_out)
    assert option(args, "--backend-store-uri") == POSTGRESQL_URL
    assert option(args, "--artifacts-destination") == "s3://mlflow-artifacts/team-a"


# --- ingress -----------------------------------------------------------------------------


def test_leader_requests_ingress_for_the_app_on_its_port(ctx, make_state):
    relation = ingress_relation(url=None)
    state_out = ctx.run(ctx.on.relation_joined(relation), make_state(relations={relation}))
    request = local_app_data(state_out, relation)
    assert (request["model"], request["name"], request["port"]) == (
        '"mlops"',
        '"tracking-k8s"',
        "5000",
    )


def test_ingress_request_follows_the_port_option(ctx, make_state):
    relation = ingress_relation(url=None)
    state_in = make_state(relations={relation}, config={"port": 8080})
    state_out = ctx.run(ctx.on.config_changed(), state_in)
    assert local_app_data(state_out, relation)["port"] == "8080"


def test_non_leader_publishes_only_its_unit_address_for_ingress(ctx, make_state):
    relation = ingress_relation(url=None)
    state_out = ctx.run(
        ctx.on.relation_joined(relation), make_state(leader=False, relations={relation})
    )
    published = state_out.get_relation(relation.id)
    assert "host" in published.local_unit_data
    assert not published.local_app_data


def test_ingress_host_is_an_allowed_host(ctx, make_state):
    relation = ingress_relation()
    state_out = ctx.run(ctx.on.relation_changed(relation), make_state(relations={relation}))
    assert {INGRESS_HOST, f"{INGRESS_HOST}:*"} <= set(allowed_hosts(state_out))


def test_ingress_leaving_drops_its_host_from_the_allowed_hosts(ctx, make_state):
    relation = ingress_relation()
    state_in = make_state(relations={relation})
    with_ingress = ctx.run(ctx.on.relation_changed(relation), state_in)

    state_out = ctx.run(
        ctx.on.relation_broken(with_ingress.get_relation(relation.id)), with_ingress
    )

    assert INGRESS_HOST not in allowed_hosts(state_out)


# --- mlops-tracking consumers ------------------------------------------------------------


@pytest.fixture
def consumer() -> testing.Relation:
    return consumer_relation("trainer", experiment="fraud")


def provision(ctx, make_state, *relations, **state) -> testing.State:
    """Run relation-changed for the first consumer with all of ``relations`` in the state."""
    return ctx.run(
        ctx.on.relation_changed(relations[0]), make_state(relations=set(relations), **state)
    )


def consumer_credentials(state: testing.State, relation: testing.Relation) -> dict[str, str]:
    secret_id = json.loads(local_app_data(state, relation)["credentials_secret_id"])
    return dict(state.get_secret(id=secret_id).latest_content)


def test_leader_creates_an_mlflow_user_for_the_consumer(ctx, make_state, consumer, mlflow):
    state_out = provision(ctx, make_state, consumer)
    credentials = consumer_credentials(state_out, consumer)
    assert credentials["username"] == f"relation-{consumer.id}-trainer"
    assert mlflow.users[credentials["username"]]["password"] == credentials["password"]


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


def test_consumer_gets_edit_on_the_experiment_it_asked_for(ctx, make_state, consumer, mlflow):
    provision(ctx, make_state, consumer)
    experiment_id = mlflow.experiments["fraud"]
    assert mlflow.permissions[experiment_id, f"relation-{consumer.id}-trainer"] == "EDIT"


def test_consumer_without_an_experiment_gets_the_default_one(ctx, make_state, mlflow):
    relation = consumer_relation("labeller", experiment=None)
    state_out = provision(ctx, make_state, relation, config={"default-experiment": "shared"})
    assert json.loads(local_app_data(state_out, relation)["default_experiment"]) == "shared"
    assert (
        mlflow.permissions[mlflow.experiments["shared"], f"relation-{relation.id}-labeller"]
        == "EDIT"
    )


def test_consumers_get_the_external_url_when_there_is_ingress(ctx, make_state, consumer):
    state_out = provision(ctx, make_state, consumer, ingress_relation())
    assert json.loads(local_app_data(state_out, consumer)["external_tracking_uri"]) == INGRESS_URL


def test_leader_provisions_as_the_admin_on_the_local_server(ctx, make_state, consumer, mlflow):
    provision(ctx, make_state, consumer)
    assert set(mlflow.clients) == {("http://localhost:5000", "admin", ADMIN_PASSWORD)}


def test_existing_consumer_keeps_its_user_and_password(ctx, make_state, consumer, mlflow):
    secret = consumer_secret(consumer, password="kept-password")
    username = secret.latest_content["username"]
    mlflow.users[username] = {"username": username, "password": "kept-password"}

    state_out = provision(ctx, make_state, consumer, secrets={secret})

    assert mlflow.called("create_user") == []
    assert consumer_credentials(state_out, consumer)["password"] == "kept-password"


def test_consumer_user_missing_on_the_server_is_recreated_from_its_secret(
    ctx, make_state, consumer, mlflow
):
    secret = consumer_secret(consumer, password="kept-password")
    provision(ctx, make_state, consumer, secrets={secret})
    assert mlflow.called("create_user") == [(secret.latest_content["username"], "kept-password")]


def test_non_leader_does_not_provision_consumers(ctx, make_state, consumer, mlflow):
    state_out = provision(ctx, make_state, consumer, leader=False)
    assert mlflow.called("create_user") == []
    assert not local_app_data(state_out, consumer)


def test_consumers_wait_for_a_healthy_server(ctx, make_state, consumer, mlflow):
    mlflow.healthy = False
    state_out = provision(ctx, make_state, consumer)
    assert mlflow.called("create_user") == []
    assert not local_app_data(state_out, consumer)


def test_waiting_consumers_are_provisioned_when_the_ready_check_recovers(
    ctx, make_state, consumer
):
    recovered = testing.CheckInfo("mlflow-ready", level=pebble.CheckLevel.READY)
    running = ctx.run(ctx.on.config_changed(), make_state())
    container = dataclasses.replace(running.get_container("mlflow"), check_infos={recovered})
    state_in = dataclasses.replace(running, containers={container}, relations={consumer})

    state_out = ctx.run(ctx.on.pebble_check_recovered(container, recovered), state_in)

    assert local_app_data(state_out, consumer)["default_experiment"] == '"fraud"'


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
    assert mlflow.called("create_user") == []
    assert not local_app_data(state_out, relation)


def test_malformed_consumer_does_not_hold_up_the_others(ctx, make_state, consumer, mlflow):
    bad = consumer_relation("broken-app", databag={"experiment": "not json"})
    state_out = provision(ctx, make_state, bad, consumer)
    assert local_app_data(state_out, consumer)["default_experiment"] == '"fraud"'


def test_refused_provisioning_publishes_nothing_and_fails_no_hook(
    ctx, make_state, consumer, mlflow
):
    mlflow.fail("create_user", "database is locked")
    state_out = provision(ctx, make_state, consumer)
    assert not local_app_data(state_out, consumer)


@pytest.fixture
def provisioned(ctx, make_state, consumer, mlflow) -> testing.State:
    return provision(ctx, make_state, consumer)


def test_consumer_leaving_deletes_its_mlflow_user(ctx, provisioned, consumer, mlflow):
    ctx.run(ctx.on.relation_broken(provisioned.get_relation(consumer.id)), provisioned)
    assert mlflow.called("delete_user") == [(f"relation-{consumer.id}-trainer",)]
    assert f"relation-{consumer.id}-trainer" not in mlflow.users


def test_consumer_leaving_removes_its_credentials_secret(ctx, provisioned, consumer):
    state_out = ctx.run(ctx.on.relation_broken(provisioned.get_relation(consumer.id)), provisioned)
    assert not [s for s in state_out.secrets if s.label == f"mlops-tracking-{consumer.id}"]


def test_consumer_leaving_removes_its_secret_even_when_the_server_refuses(
    ctx, provisioned, consumer, mlflow
):
    mlflow.fail("delete_user", "server is read-only")
    state_out = ctx.run(ctx.on.relation_broken(provisioned.get_relation(consumer.id)), provisioned)
    assert not [s for s in state_out.secrets if s.label == f"mlops-tracking-{consumer.id}"]


def test_consumer_leaving_a_non_leader_deletes_nothing(ctx, provisioned, consumer, mlflow):
    state_in = dataclasses.replace(provisioned, leader=False)
    state_out = ctx.run(ctx.on.relation_broken(state_in.get_relation(consumer.id)), state_in)
    assert mlflow.called("delete_user") == []
    assert [s for s in state_out.secrets if s.label == f"mlops-tracking-{consumer.id}"]
