"""The relations: database and S3 arriving and leaving (TLS included), and ingress."""

from __future__ import annotations

import dataclasses
import json
import stat

import pytest
from ops import testing

from tests.tracking_testing import (
    ADMIN_PASSWORD,
    AUTH_CONFIG,
    DATA_DIR,
    DB_CA,
    DB_HOST,
    DB_PASSWORD,
    DB_USERNAME,
    FLASK_SECRET_KEY,
    INGRESS_HOST,
    S3_ACCESS_KEY,
    S3_ENDPOINT,
    S3_INTERMEDIATE_CA,
    S3_ROOT_CA,
    S3_SECRET_KEY,
    SECRETS_ENV,
    allowed_hosts,
    database_relation,
    database_secret,
    database_tls_secret,
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
POSTGRESQL_CA = f"{DATA_DIR}/secrets/postgresql-ca.pem"
S3_CA = f"{DATA_DIR}/secrets/s3-ca.pem"


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


# --- database TLS ------------------------------------------------------------------------


def on_database_with_tls(ctx, make_state, db_secret, tls_secret) -> testing.State:
    relation = database_relation(db_secret, tls_secret=tls_secret)
    state_in = make_state(relations={relation}, secrets={db_secret, tls_secret})
    return ctx.run(ctx.on.relation_changed(relation), state_in)


@pytest.fixture
def ca_secret() -> testing.Secret:
    return database_tls_secret()


@pytest.fixture
def on_verified_postgresql(ctx, make_state, db_secret, ca_secret) -> testing.State:
    """A unit whose server reaches PostgreSQL over TLS, verified against the provider's CA."""
    return on_database_with_tls(ctx, make_state, db_secret, ca_secret)


def test_database_ca_makes_the_server_verify_postgresql(on_verified_postgresql):
    env = environment(on_verified_postgresql)
    assert (env["PGSSLMODE"], env["PGSSLROOTCERT"]) == ("verify-full", POSTGRESQL_CA)


def test_database_ca_is_pushed_where_the_server_reads_it(on_verified_postgresql, data_dir):
    ca_file = stored(data_dir, POSTGRESQL_CA)
    assert ca_file.read_text() == DB_CA + "\n"
    assert stat.S_IMODE(ca_file.stat().st_mode) == 0o600


def test_database_tls_without_a_ca_requires_tls(ctx, make_state, db_secret, data_dir):
    state_out = on_database_with_tls(ctx, make_state, db_secret, database_tls_secret(ca=None))
    env = environment(state_out)
    assert env["PGSSLMODE"] == "require"
    assert "PGSSLROOTCERT" not in env
    assert not stored(data_dir, POSTGRESQL_CA).exists()


def test_database_without_tls_leaves_the_ssl_mode_to_libpq(ctx, make_state, db_secret):
    state_out = on_database_with_tls(
        ctx, make_state, db_secret, database_tls_secret(tls="False", ca=None)
    )
    assert not {"PGSSLMODE", "PGSSLROOTCERT"} & environment(state_out).keys()


def test_rotated_database_ca_restarts_the_server_without_replanning(
    ctx, on_verified_postgresql, ca_secret, data_dir, pebble_calls
):
    new_ca = DB_CA.replace("postgresqlCA", "renewedCA")
    rotated = testing.Secret({"tls": "True", "tls-ca": new_ca}, id=ca_secret.id)
    state_in = dataclasses.replace(
        on_verified_postgresql, secrets={*on_verified_postgresql.secrets} - {ca_secret} | {rotated}
    )

    ctx.run(ctx.on.secret_changed(rotated), state_in)

    assert stored(data_dir, POSTGRESQL_CA).read_text() == new_ca + "\n"
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


def on_bucket(ctx, make_state, keys_secret, **changes: str) -> testing.State:
    relation = s3_relation(keys_secret, **changes)
    state_in = make_state(relations={relation}, secrets={keys_secret})
    return ctx.run(ctx.on.relation_changed(relation), state_in)


def test_s3_ca_chain_makes_the_server_trust_the_endpoints_ca(ctx, make_state, keys_secret):
    chain = json.dumps([S3_ROOT_CA, S3_INTERMEDIATE_CA])
    state_out = on_bucket(ctx, make_state, keys_secret, **{"tls-ca-chain": chain})
    assert environment(state_out)["AWS_CA_BUNDLE"] == S3_CA


def test_s3_ca_chain_is_pushed_where_boto_reads_it(ctx, make_state, keys_secret, data_dir):
    chain = json.dumps([S3_ROOT_CA, S3_INTERMEDIATE_CA])
    on_bucket(ctx, make_state, keys_secret, **{"tls-ca-chain": chain})
    ca_file = stored(data_dir, S3_CA)
    assert ca_file.read_text() == f"{S3_ROOT_CA}\n{S3_INTERMEDIATE_CA}\n"
    assert stat.S_IMODE(ca_file.stat().st_mode) == 0o600


def test_artifact_uploads_send_their_length_as_every_s3_server_takes_them(ctx, make_state, on_s3):
    # botocore's default aws-chunked checksums over HTTPS: some S3 servers refuse them
    # (MissingContentLength); tests/workload/registry/test_backup_archive.py shows it.
    assert environment(on_s3)["AWS_REQUEST_CHECKSUM_CALCULATION"] == "when_required"
    embedded = ctx.run(ctx.on.config_changed(), make_state())
    assert "AWS_REQUEST_CHECKSUM_CALCULATION" not in environment(embedded)


def test_s3_without_a_ca_chain_trusts_the_system_cas(on_s3, data_dir):
    assert "AWS_CA_BUNDLE" not in environment(on_s3)
    assert not stored(data_dir, S3_CA).exists()


@pytest.mark.parametrize(
    ("uri_style", "addressing_style"), [("path", "path"), ("host", "virtual")]
)
def test_s3_uri_style_reaches_mlflows_own_addressing_switch(
    ctx, make_state, keys_secret, uri_style, addressing_style
):
    state_out = on_bucket(ctx, make_state, keys_secret, **{"s3-uri-style": uri_style})
    assert environment(state_out)["MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE"] == addressing_style


def test_s3_without_a_uri_style_leaves_addressing_to_mlflow(ctx, make_state, keys_secret):
    state_out = on_bucket(ctx, make_state, keys_secret, **{"s3-uri-style": ""})
    assert "MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE" not in environment(state_out)


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


BAD_INGRESS_HOSTS = {
    "wildcard": "http://*.example.com/mlops-tracking-k8s",
    "list": "http://mlops.example.com,evil.example.net/mlops-tracking-k8s",
    "user info": "http://admin@mlops.example.com/mlops-tracking-k8s",
}


@pytest.mark.parametrize("url", BAD_INGRESS_HOSTS.values(), ids=BAD_INGRESS_HOSTS.keys())
def test_ingress_url_with_a_bad_host_never_reaches_the_allowed_hosts(ctx, make_state, url):
    without_ingress = allowed_hosts(ctx.run(ctx.on.config_changed(), make_state()))
    relation = ingress_relation(url)

    state_out = ctx.run(ctx.on.relation_changed(relation), make_state(relations={relation}))

    assert allowed_hosts(state_out) == without_ingress


# --- secrets never in the plan -----------------------------------------------------------


def test_plan_holds_no_secret_with_every_store_related(
    ctx, make_state, db_secret, ca_secret, keys_secret
):
    database = database_relation(db_secret, tls_secret=ca_secret)
    bucket = s3_relation(keys_secret, **{"tls-ca-chain": json.dumps([S3_ROOT_CA])})
    state_in = make_state(
        relations={database, bucket, ingress_relation()},
        secrets={db_secret, ca_secret, keys_secret},
    )

    plan = ctx.run(ctx.on.config_changed(), state_in).get_container("mlflow").plan.to_yaml()

    for secret in (ADMIN_PASSWORD, FLASK_SECRET_KEY, DB_PASSWORD, S3_ACCESS_KEY, S3_SECRET_KEY):
        assert secret not in plan
