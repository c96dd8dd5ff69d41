"""PostgreSQLRequirer against the data postgresql-k8s actually writes.

The provider databags below were captured by running, in ops.testing, the providers' own
libraries against this requirer: postgresql-k8s 16 (canonical/postgresql-k8s-operator, 16/edge,
src/relations/postgresql_provider.py on charms.data_platform_libs.v0.data_interfaces LIBPATCH 58)
and a v1 provider on dpcharmlibs-interfaces 1.2.2 (`ResourceProviderEventHandler.set_response`).
"""

import json
import subprocess
import sys
from pathlib import Path

import ops
import pytest
from ops import testing

from mlops_charms.postgresql import PostgreSQLConnection, PostgreSQLRequirer

META = {
    "name": "tracking",
    "requires": {"database": {"interface": "postgresql_client", "limit": 1, "optional": True}},
}
PRIMARY = "postgresql-k8s-primary.mlops.svc.cluster.local"
TLS_SECRET_ID = "secret:d1bcm7nmp25c7b3vhdb0"
# The CA postgresql-k8s publishes once related to a TLS provider (body shortened).
CA = "-----BEGIN CERTIFICATE-----\nMIIBpostgresCA\n-----END CERTIFICATE-----"


class DatabaseCharm(ops.CharmBase):
    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        self.database = PostgreSQLRequirer(self, "database", "mlflow")
        self.seen: list[PostgreSQLConnection | None] = []
        for event in self.database.events:
            framework.observe(event, self._reconcile)
        framework.observe(self.on.collect_unit_status, self._on_collect_status)

    def _reconcile(self, _: ops.EventBase):
        self.seen.append(self.database.connection())

    def _on_collect_status(self, event: ops.CollectStatusEvent):
        if status := self.database.unit_status():
            event.add_status(status)
        event.add_status(ops.ActiveStatus())


@pytest.fixture
def ctx():
    return testing.Context(DatabaseCharm, meta=META)


@pytest.fixture
def user_secret():
    # postgresql-k8s puts the `requested-secrets` of the user group in one secret.
    return testing.Secret(
        tracked_content={
            "username": "relation_id_4",
            "password": "Xk3v9qTz",
            "uris": f"postgresql://relation_id_4:Xk3v9qTz@{PRIMARY}:5432/mlflow",
        }
    )


def tls_secret(**content: str) -> testing.Secret:
    """The `tls` group secret: postgresql-k8s sets `tls` ("True"/"False") and, with TLS, `tls-ca`.

    It writes `tls` on every database request (`set_tls`), so `secret-tls` is always there.
    """
    return testing.Secret(id=TLS_SECRET_ID, tracked_content=content)


@pytest.fixture
def tls_off():
    return tls_secret(tls="False")


def pg16_databag(secret_id: str, **changes: str) -> dict[str, str]:
    """The application databag postgresql-k8s 16 writes once the database exists."""
    databag = {
        "data": json.dumps({"database": "mlflow", "version": "v1"}),
        "database": "mlflow",
        "endpoints": f"{PRIMARY}:5432",
        "read-only-endpoints": "postgresql-k8s-replicas.mlops.svc.cluster.local:5432",
        "secret-user": secret_id,
        "secret-tls": TLS_SECRET_ID,
        "version": "16.9",
    }
    databag.update(changes)
    return {k: v for k, v in databag.items() if v}


def v1_databag(secret_id: str, resource: str = "mlflow") -> dict[str, str]:
    """The application databag a v1 (dpcharmlibs) provider writes."""
    response = {
        "resource": resource,
        "request-id": "575f487b82ac407e",
        "salt": "fDFLxNpq6RiFyGuD",
        "endpoints": "10.1.0.5:5432,10.1.0.6:5432",
        "read-only-endpoints": None,
        "secret-user": secret_id,
        "secret-tls": None,
        "version": "16.9",
    }
    return {
        "data": json.dumps({"575f487b82ac407e": {"resource": resource}}),
        "version": "v1",
        "requests": json.dumps([response]),
    }


def db_relation(**remote_app_data: str) -> testing.Relation:
    return testing.Relation(
        "database", remote_app_name="postgresql-k8s", remote_app_data=remote_app_data
    )


def reconcile(ctx, relation, *secrets, leader=True) -> PostgreSQLConnection | None:
    state = testing.State(leader=leader, relations={relation}, secrets=set(secrets))
    with ctx(ctx.on.relation_changed(relation), state) as manager:
        manager.run()
        return manager.charm.seen[-1]


def unit_status(ctx, relation, *secrets) -> ops.StatusBase:
    state = testing.State(leader=True, relations={relation}, secrets=set(secrets))
    return ctx.run(ctx.on.relation_changed(relation), state).unit_status


# The request


def test_leader_requests_the_database_in_both_contracts(ctx):
    relation = db_relation()
    state = ctx.run(
        ctx.on.relation_created(relation), testing.State(leader=True, relations={relation})
    )
    ours = state.get_relation(relation.id).local_app_data
    # v0, what postgresql-k8s 16 acts on: credentials and URIs only in secrets.
    assert ours["database"] == "mlflow"
    assert {"username", "password", "uris", "read-only-uris"} <= set(
        json.loads(ours["requested-secrets"])
    )
    # v1, written by dpcharmlibs.interfaces.
    assert ours["version"] == "v1"
    [request] = json.loads(ours["requests"])
    assert request["resource"] == "mlflow"
    assert request["request-id"]


def test_request_is_written_once(ctx):
    relation = db_relation()
    state = ctx.run(
        ctx.on.relation_created(relation), testing.State(leader=True, relations={relation})
    )
    first = dict(state.get_relation(relation.id).local_app_data)
    state = ctx.run(ctx.on.relation_changed(state.get_relation(relation.id)), state)
    assert dict(state.get_relation(relation.id).local_app_data) == first


def test_new_leader_completes_a_request_left_unwritten(ctx):
    relation = db_relation()
    state = ctx.run(ctx.on.leader_elected(), testing.State(leader=True, relations={relation}))
    ours = state.get_relation(relation.id).local_app_data
    assert ours["database"] == "mlflow"
    assert json.loads(ours["requests"])[0]["resource"] == "mlflow"


def test_non_leader_writes_no_request(ctx):
    relation = db_relation()
    state = ctx.run(ctx.on.relation_created(relation), testing.State(relations={relation}))
    assert not state.get_relation(relation.id).local_app_data


# The answer


def test_no_relation_means_no_connection_and_no_status(ctx):
    with ctx(ctx.on.update_status(), testing.State(leader=True)) as manager:
        state = manager.run()
        assert manager.charm.database.connection() is None
        assert manager.charm.database.status() is None
    assert state.unit_status == ops.ActiveStatus()


def test_relation_without_answer_waits_for_credentials(ctx):
    relation = db_relation()
    assert reconcile(ctx, relation) is None
    assert unit_status(ctx, relation) == ops.WaitingStatus("waiting for database credentials")


def test_postgresql_k8s_16_answer_gives_a_connection(ctx, user_secret, tls_off):
    relation = db_relation(**pg16_databag(user_secret.id))
    connection = reconcile(ctx, relation, user_secret, tls_off)
    # TLS off: tls=False, ca=None (the defaults).
    assert connection == PostgreSQLConnection(PRIMARY, 5432, "mlflow", "relation_id_4", "Xk3v9qTz")
    assert unit_status(ctx, relation, user_secret, tls_off) == ops.ActiveStatus()


def test_non_leader_reads_the_same_connection(ctx, user_secret, tls_off):
    relation = db_relation(**pg16_databag(user_secret.id))
    connection = reconcile(ctx, relation, user_secret, tls_off, leader=False)
    assert connection is not None
    assert connection.username == "relation_id_4"


def test_v1_answer_gives_a_connection_on_the_first_endpoint(ctx, user_secret):
    relation = db_relation(**v1_databag(user_secret.id))
    connection = reconcile(ctx, relation, user_secret)
    assert connection == PostgreSQLConnection(
        "10.1.0.5", 5432, "mlflow", "relation_id_4", "Xk3v9qTz"
    )


def test_v1_answer_for_another_database_is_still_waiting(ctx, user_secret):
    relation = db_relation(**v1_databag(user_secret.id, resource="labelstudio"))
    assert reconcile(ctx, relation, user_secret) is None
    assert unit_status(ctx, relation, user_secret) == ops.WaitingStatus(
        "waiting for database credentials"
    )


def test_credentials_without_endpoints_wait_for_endpoints(ctx, user_secret, tls_off):
    relation = db_relation(**pg16_databag(user_secret.id, endpoints=""))
    assert reconcile(ctx, relation, user_secret, tls_off) is None
    assert unit_status(ctx, relation, user_secret, tls_off) == ops.WaitingStatus(
        "waiting for database endpoints"
    )


def test_rotated_password_is_read_on_secret_changed(ctx, user_secret, tls_off):
    rotated = testing.Secret(
        id=user_secret.id,
        tracked_content=user_secret.tracked_content,
        latest_content={**user_secret.tracked_content, "password": "n3wPassw0rd"},
    )
    relation = db_relation(**pg16_databag(rotated.id))
    state = testing.State(leader=True, relations={relation}, secrets={rotated, tls_off})
    with ctx(ctx.on.secret_changed(rotated), state) as manager:
        manager.run()
        connection = manager.charm.seen[-1]
    assert connection is not None
    assert connection.password == "n3wPassw0rd"


def test_broken_relation_gives_no_connection(ctx, user_secret):
    relation = db_relation(**pg16_databag(user_secret.id))
    state = testing.State(leader=True, relations={relation}, secrets={user_secret})
    with ctx(ctx.on.relation_broken(relation), state) as manager:
        state = manager.run()
        assert manager.charm.seen == [None]
    assert state.unit_status == ops.ActiveStatus()


# Bad provider data: a status, never an exception


@pytest.mark.parametrize(
    "endpoints",
    ["postgresql-k8s-primary", "primary:0", "primary:99999", "primary:port", "user@primary:5432"],
)
def test_bad_endpoints_block_with_the_reason(ctx, user_secret, tls_off, endpoints):
    relation = db_relation(**pg16_databag(user_secret.id, endpoints=endpoints))
    assert reconcile(ctx, relation, user_secret, tls_off) is None
    status = unit_status(ctx, relation, user_secret, tls_off)
    assert status == ops.BlockedStatus(f"database provider sent bad endpoints {endpoints!r}")


def test_missing_secret_blocks(ctx):
    relation = db_relation(**pg16_databag("secret:cvh7kruupa1s46bqvuig"))
    assert reconcile(ctx, relation) is None
    assert unit_status(ctx, relation) == ops.BlockedStatus("database credentials secret not found")


def test_unreadable_secret_blocks(ctx, user_secret, monkeypatch):
    def permission_denied(*_, **__):
        raise ops.ModelError("ERROR permission denied")

    monkeypatch.setattr(ops.Model, "get_secret", permission_denied)
    relation = db_relation(**pg16_databag(user_secret.id))
    assert reconcile(ctx, relation, user_secret) is None
    assert unit_status(ctx, relation, user_secret) == ops.BlockedStatus(
        "database credentials secret is not readable"
    )


def test_secret_without_password_blocks(ctx, tls_off):
    secret = testing.Secret(tracked_content={"username": "relation_id_4"})
    relation = db_relation(**pg16_databag(secret.id))
    assert reconcile(ctx, relation, secret, tls_off) is None
    assert unit_status(ctx, relation, secret, tls_off) == ops.BlockedStatus(
        "database credentials secret lacks username or password"
    )


def test_password_with_a_line_break_blocks(ctx, tls_off):
    secret = testing.Secret(tracked_content={"username": "u", "password": "a\nb"})
    relation = db_relation(**pg16_databag(secret.id))
    assert reconcile(ctx, relation, secret, tls_off) is None
    assert unit_status(ctx, relation, secret, tls_off) == ops.BlockedStatus(
        "database name or credentials contain a line break"
    )


@pytest.mark.parametrize("requests", ["not json", json.dumps([{"endpoints": 5432}]), "{}"])
def test_malformed_v1_answer_blocks(ctx, requests):
    relation = db_relation(version="v1", requests=requests)
    assert reconcile(ctx, relation) is None
    assert unit_status(ctx, relation) == ops.BlockedStatus("database provider sent malformed data")


def test_v1_answer_with_missing_secret_blocks(ctx):
    relation = db_relation(**v1_databag("secret:cvh7kruupa1s46bqvuig"))
    assert reconcile(ctx, relation) is None
    assert unit_status(ctx, relation) == ops.BlockedStatus("database credentials secret not found")


# TLS


def test_tls_with_a_ca_in_the_tls_secret_verifies_the_server(ctx, user_secret):
    tls = tls_secret(tls="True", **{"tls-ca": CA})
    relation = db_relation(**pg16_databag(user_secret.id))
    connection = reconcile(ctx, relation, user_secret, tls)
    assert connection is not None
    assert (connection.tls, connection.ca) == (True, CA + "\n")
    assert connection.sslmode == "verify-full"


def test_tls_without_a_ca_requires_tls(ctx, user_secret):
    tls = tls_secret(tls="True")
    relation = db_relation(**pg16_databag(user_secret.id))
    connection = reconcile(ctx, relation, user_secret, tls)
    assert connection is not None
    assert (connection.tls, connection.ca, connection.sslmode) == (True, None, "require")


@pytest.mark.parametrize(
    "content", [{"tls": "False"}, {"tls": "False", "tls-ca": ""}, {"tls": "false"}]
)
def test_tls_off_means_no_sslmode(ctx, user_secret, content):
    relation = db_relation(**pg16_databag(user_secret.id))
    connection = reconcile(ctx, relation, user_secret, tls_secret(**content))
    assert connection is not None
    assert (connection.tls, connection.ca, connection.sslmode) == (False, None, None)


def test_tls_in_clear_in_the_databag_is_read_too(ctx, user_secret):
    # A provider that could not put `tls`/`tls-ca` in a secret writes them in clear.
    databag = pg16_databag(user_secret.id, **{"secret-tls": "", "tls": "True", "tls-ca": CA})
    connection = reconcile(ctx, db_relation(**databag), user_secret)
    assert connection is not None
    assert connection.sslmode == "verify-full"
    assert connection.ca == CA + "\n"


def test_missing_tls_secret_blocks(ctx, user_secret):
    relation = db_relation(**pg16_databag(user_secret.id))
    assert reconcile(ctx, relation, user_secret) is None
    assert unit_status(ctx, relation, user_secret) == ops.BlockedStatus(
        "database TLS secret not found"
    )


def test_unreadable_tls_secret_blocks(ctx, user_secret, tls_off, monkeypatch):
    get_secret = ops.Model.get_secret

    def permission_denied(model, id=None, label=None):
        if id == TLS_SECRET_ID:
            raise ops.ModelError("ERROR permission denied")
        return get_secret(model, id=id, label=label)

    monkeypatch.setattr(ops.Model, "get_secret", permission_denied)
    relation = db_relation(**pg16_databag(user_secret.id))
    assert reconcile(ctx, relation, user_secret, tls_off) is None
    assert unit_status(ctx, relation, user_secret, tls_off) == ops.BlockedStatus(
        "database TLS secret is not readable"
    )


@pytest.mark.parametrize("where", ["secret", "databag"])
def test_ca_that_is_no_pem_certificate_blocks(ctx, user_secret, where):
    bad_ca = "MIIBpostgresCA"
    if where == "secret":
        secrets = (user_secret, tls_secret(tls="True", **{"tls-ca": bad_ca}))
        databag = pg16_databag(user_secret.id)
    else:
        secrets = (user_secret,)
        databag = pg16_databag(
            user_secret.id, **{"secret-tls": "", "tls": "True", "tls-ca": bad_ca}
        )
    relation = db_relation(**databag)
    assert reconcile(ctx, relation, *secrets) is None
    assert unit_status(ctx, relation, *secrets) == ops.BlockedStatus(
        "database provider sent a bad tls-ca"
    )


def v1_tls_databag(secret_id: str) -> dict[str, str]:
    """A v1 answer with TLS: `secret-tls` in the response, as dpcharmlibs writes it."""
    databag = v1_databag(secret_id)
    [response] = json.loads(databag["requests"])
    response["secret-tls"] = TLS_SECRET_ID
    return {**databag, "requests": json.dumps([response])}


def test_v1_answer_with_tls_and_a_ca_verifies_the_server(ctx, user_secret):
    # dpcharmlibs stores the `tls` group's fields JSON-encoded: `tls` is "true".
    tls = tls_secret(tls="true", **{"tls-ca": CA})
    relation = db_relation(**v1_tls_databag(user_secret.id))
    connection = reconcile(ctx, relation, user_secret, tls)
    assert connection is not None
    assert (connection.host, connection.tls, connection.sslmode) == (
        "10.1.0.5",
        True,
        "verify-full",
    )
    assert connection.ca == CA + "\n"


def test_v1_answer_without_tls_has_no_sslmode(ctx, user_secret):
    relation = db_relation(**v1_databag(user_secret.id))
    connection = reconcile(ctx, relation, user_secret)
    assert connection is not None
    assert connection.sslmode is None


def test_v1_answer_with_a_bad_ca_blocks(ctx, user_secret):
    tls = tls_secret(tls="true", **{"tls-ca": "not a certificate"})
    relation = db_relation(**v1_tls_databag(user_secret.id))
    assert reconcile(ctx, relation, user_secret, tls) is None
    assert unit_status(ctx, relation, user_secret, tls) == ops.BlockedStatus(
        "database provider sent a bad tls-ca"
    )


@pytest.mark.parametrize(
    ("tls", "ca", "sslmode"),
    [
        (False, None, None),
        (True, None, "require"),
        (True, CA, "verify-full"),
        (False, CA, "verify-full"),
    ],
)
def test_sslmode_follows_tls_and_the_ca(tls, ca, sslmode):
    connection = PostgreSQLConnection(PRIMARY, 5432, "mlflow", "u", "p", tls=tls, ca=ca)
    assert connection.sslmode == sslmode


# The value


def test_sqlalchemy_url_names_the_driver_and_leaves_the_password_out():
    connection = PostgreSQLConnection(PRIMARY, 5432, "mlflow", "relation_id_4", "Xk3v9qTz")
    url = connection.sqlalchemy_url()
    assert url == f"postgresql+psycopg2://relation_id_4@{PRIMARY}:5432/mlflow"
    assert "Xk3v9qTz" not in url


def test_sqlalchemy_url_quotes_user_and_brackets_ipv6():
    connection = PostgreSQLConnection("fd00::5", 5433, "ml flow", "a@b:c", "pw")
    assert (
        connection.sqlalchemy_url() == "postgresql+psycopg2://a%40b%3Ac@[fd00::5]:5433/ml%20flow"
    )


def test_repr_hides_the_password():
    connection = PostgreSQLConnection(PRIMARY, 5432, "mlflow", "relation_id_4", "Xk3v9qTz")
    assert "Xk3v9qTz" not in repr(connection)


def test_importing_the_adapter_leaves_the_interface_library_unloaded():
    lib = Path(__file__).parents[2] / "lib"
    # (pydantic is loaded anyway: ops[tracing] imports it with ops.)
    code = "import sys, mlops_charms.postgresql; assert 'dpcharmlibs' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": str(lib)})
