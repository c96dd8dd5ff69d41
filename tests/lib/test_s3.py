"""S3Requirer against the data s3-integrator actually writes.

The provider databags below were captured by running, in ops.testing, the providers' own
libraries against this requirer: s3-integrator 2/ (canonical/object-storage-integrator, on
object-storage-charmlib 1.0.0 `S3Provider.set_storage_connection_info`) and s3-integrator 1/
(canonical/s3-integrator, on the v0 `s3` library's `update_connection_info`).
"""

import json

import ops
import pytest
from ops import testing

from mlops_charms.s3 import S3Connection, S3Requirer

META = {
    "name": "tracking",
    "requires": {"object-storage": {"interface": "s3", "limit": 1, "optional": True}},
}
ENDPOINT = "http://rgw.ceph.svc.cluster.local:7480"
# PEM certificates as s3-integrator's `tls-ca-chain` option holds them (bodies shortened).
ROOT_CA = "-----BEGIN CERTIFICATE-----\nMIIBrootCA\n-----END CERTIFICATE-----\n"
INTERMEDIATE_CA = "-----BEGIN CERTIFICATE-----\nMIIBinterCA\n-----END CERTIFICATE-----"

# object-storage-charmlib 1.0.0 calls ops' deprecated JujuVersion.from_environ().
pytestmark = pytest.mark.filterwarnings("ignore:JujuVersion.from_environ:DeprecationWarning")


class ObjectStorageCharm(ops.CharmBase):
    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        self.storage = S3Requirer(self, "object-storage", "mlflow-artifacts")
        self.seen: list[S3Connection | None] = []
        for event in self.storage.events:
            framework.observe(event, self._reconcile)
        framework.observe(self.on.collect_unit_status, self._on_collect_status)

    def _reconcile(self, _: ops.EventBase):
        self.seen.append(self.storage.connection())

    def _on_collect_status(self, event: ops.CollectStatusEvent):
        if status := self.storage.unit_status():
            event.add_status(status)
        event.add_status(ops.ActiveStatus())


@pytest.fixture
def ctx():
    return testing.Context(ObjectStorageCharm, meta=META)


@pytest.fixture
def keys_secret():
    # s3-integrator 2/ puts the requested secret fields in one `extra` group secret.
    return testing.Secret(
        tracked_content={
            "access-key": "AKIAIOSFODNN7EXAMPLE",
            "secret-key": "wJalrXUtnFEMI/K7MDENG",
        }
    )


def integrator_2_databag(secret_id: str, **changes: str) -> dict[str, str]:
    """The application databag s3-integrator 2/ writes (empty options are left out)."""
    databag = {
        "version": "1",
        "secret-extra": secret_id,
        "bucket": "mlflow-artifacts",
        "path": "/team-a/",
        "endpoint": ENDPOINT,
        "s3-uri-style": "path",
    }
    databag.update(changes)
    return {k: v for k, v in databag.items() if v}


def integrator_1_databag(**changes: str) -> dict[str, str]:
    """The application databag s3-integrator 1/ writes: keys in clear, no version."""
    databag = {
        "data": json.dumps({"bucket": "mlflow-artifacts"}),
        "access-key": "AKIAIOSFODNN7EXAMPLE",
        "secret-key": "wJalrXUtnFEMI/K7MDENG",
        "bucket": "mlflow-artifacts",
        "endpoint": "https://s3.eu-west-1.amazonaws.com",
        "region": "eu-west-1",
        "tls-ca-chain": json.dumps([ROOT_CA]),
    }
    databag.update(changes)
    return {k: v for k, v in databag.items() if v}


def s3_relation(**remote_app_data: str) -> testing.Relation:
    return testing.Relation(
        "object-storage",
        remote_app_name="s3-integrator",
        remote_app_data=remote_app_data,
        remote_units_data={0: {}},
    )


def reconcile(ctx, relation, *secrets, leader=True) -> S3Connection | None:
    state = testing.State(leader=leader, relations={relation}, secrets=set(secrets))
    with ctx(ctx.on.relation_changed(relation), state) as manager:
        manager.run()
        return manager.charm.seen[-1]


def unit_status(ctx, relation, *secrets) -> ops.StatusBase:
    state = testing.State(leader=True, relations={relation}, secrets=set(secrets))
    return ctx.run(ctx.on.relation_changed(relation), state).unit_status


# The request


def test_leader_requests_the_bucket_with_keys_in_a_secret(ctx):
    relation = s3_relation()
    state = testing.State(leader=True, relations={relation})
    state = ctx.run(ctx.on.relation_created(relation), state)
    state = ctx.run(ctx.on.relation_joined(state.get_relation(relation.id), remote_unit=0), state)
    ours = state.get_relation(relation.id).local_app_data
    assert ours["bucket"] == "mlflow-artifacts"
    assert ours["version"] == "1"
    assert json.loads(ours["requested-secrets"]) == ["access-key", "secret-key"]


# The answer


def test_no_relation_means_no_connection_and_no_status(ctx):
    with ctx(ctx.on.update_status(), testing.State(leader=True)) as manager:
        state = manager.run()
        assert manager.charm.storage.connection() is None
        assert manager.charm.storage.status() is None
    assert state.unit_status == ops.ActiveStatus()


def test_relation_without_answer_waits_for_credentials(ctx):
    relation = s3_relation()
    assert reconcile(ctx, relation) is None
    assert unit_status(ctx, relation) == ops.WaitingStatus("waiting for S3 credentials")


def test_integrator_2_answer_gives_a_connection(ctx, keys_secret):
    relation = s3_relation(**integrator_2_databag(keys_secret.id))
    connection = reconcile(ctx, relation, keys_secret)
    assert connection == S3Connection(
        endpoint=ENDPOINT,
        bucket="mlflow-artifacts",
        path="team-a",
        region=None,
        access_key="AKIAIOSFODNN7EXAMPLE",
        secret_key="wJalrXUtnFEMI/K7MDENG",
        path_style=True,
    )
    assert unit_status(ctx, relation, keys_secret) == ops.ActiveStatus()


def test_non_leader_reads_the_same_connection(ctx, keys_secret):
    relation = s3_relation(**integrator_2_databag(keys_secret.id))
    connection = reconcile(ctx, relation, keys_secret, leader=False)
    assert connection is not None
    assert connection.access_key == "AKIAIOSFODNN7EXAMPLE"


def test_integrator_1_legacy_answer_gives_a_connection(ctx):
    relation = s3_relation(**integrator_1_databag())
    connection = reconcile(ctx, relation)
    assert connection == S3Connection(
        endpoint="https://s3.eu-west-1.amazonaws.com",
        bucket="mlflow-artifacts",
        path="",
        region="eu-west-1",
        access_key="AKIAIOSFODNN7EXAMPLE",
        secret_key="wJalrXUtnFEMI/K7MDENG",
        ca_chain=ROOT_CA,
    )


def test_provider_bucket_wins_over_the_requested_one(ctx, keys_secret):
    relation = s3_relation(**integrator_2_databag(keys_secret.id, bucket="shared-bucket"))
    connection = reconcile(ctx, relation, keys_secret)
    assert connection is not None
    assert connection.bucket == "shared-bucket"


def test_keys_without_bucket_wait_for_the_bucket(ctx, keys_secret):
    relation = s3_relation(**integrator_2_databag(keys_secret.id, bucket=""))
    assert reconcile(ctx, relation, keys_secret) is None
    assert unit_status(ctx, relation, keys_secret) == ops.WaitingStatus("waiting for S3 bucket")


def test_rotated_keys_are_read_on_secret_changed(ctx, keys_secret):
    rotated = testing.Secret(
        id=keys_secret.id,
        tracked_content=keys_secret.tracked_content,
        latest_content={"access-key": "AKIANEW", "secret-key": "newSecret"},
    )
    relation = s3_relation(**integrator_2_databag(rotated.id))
    state = testing.State(leader=True, relations={relation}, secrets={rotated})
    with ctx(ctx.on.secret_changed(rotated), state) as manager:
        manager.run()
        connection = manager.charm.seen[-1]
    assert connection is not None
    assert (connection.access_key, connection.secret_key) == ("AKIANEW", "newSecret")


def test_broken_relation_gives_no_connection(ctx, keys_secret):
    relation = s3_relation(**integrator_2_databag(keys_secret.id))
    state = testing.State(leader=True, relations={relation}, secrets={keys_secret})
    with ctx(ctx.on.relation_broken(relation), state) as manager:
        state = manager.run()
        assert manager.charm.seen == [None]
    assert state.unit_status == ops.ActiveStatus()


# Bad provider data: a status, never an exception


def test_missing_secret_blocks(ctx):
    relation = s3_relation(**integrator_2_databag("secret:cvh7kruupa1s46bqvuig"))
    assert reconcile(ctx, relation) is None
    assert unit_status(ctx, relation) == ops.BlockedStatus("S3 credentials secret not found")


def test_unreadable_secret_blocks(ctx, keys_secret, monkeypatch):
    get_secret = ops.Model.get_secret

    def permission_denied(model, id=None, label=None):
        if id == keys_secret.id:
            raise ops.ModelError("ERROR permission denied")
        return get_secret(model, id=id, label=label)

    monkeypatch.setattr(ops.Model, "get_secret", permission_denied)
    relation = s3_relation(**integrator_2_databag(keys_secret.id))
    assert reconcile(ctx, relation, keys_secret) is None
    assert unit_status(ctx, relation, keys_secret) == ops.BlockedStatus(
        "S3 credentials secret is not readable"
    )


def test_secret_without_secret_key_blocks(ctx):
    secret = testing.Secret(tracked_content={"access-key": "AKIAIOSFODNN7EXAMPLE"})
    relation = s3_relation(**integrator_2_databag(secret.id))
    assert reconcile(ctx, relation, secret) is None
    assert unit_status(ctx, relation, secret) == ops.BlockedStatus(
        "S3 credentials secret lacks access-key or secret-key"
    )


@pytest.mark.parametrize("endpoint", ["rgw.ceph.svc:7480", "ftp://rgw", "http://", "http://a b"])
def test_bad_endpoint_blocks_with_the_reason(ctx, keys_secret, endpoint):
    relation = s3_relation(**integrator_2_databag(keys_secret.id, endpoint=endpoint))
    assert reconcile(ctx, relation, keys_secret) is None
    assert unit_status(ctx, relation, keys_secret) == ops.BlockedStatus(
        f"S3 provider sent a bad endpoint {endpoint!r}"
    )


def test_bad_bucket_name_blocks(ctx, keys_secret):
    relation = s3_relation(**integrator_2_databag(keys_secret.id, bucket="a/b"))
    assert reconcile(ctx, relation, keys_secret) is None
    assert unit_status(ctx, relation, keys_secret) == ops.BlockedStatus(
        "S3 provider sent a bad bucket name 'a/b'"
    )


def test_keys_with_a_line_break_block(ctx):
    relation = s3_relation(**integrator_1_databag(**{"secret-key": "abc\n[evil]"}))
    assert reconcile(ctx, relation) is None
    assert unit_status(ctx, relation) == ops.BlockedStatus("S3 credentials contain whitespace")


def test_unparsable_provider_version_does_not_fail_the_hook(ctx, keys_secret):
    relation = s3_relation(**integrator_2_databag(keys_secret.id, version="one"))
    assert reconcile(ctx, relation, keys_secret) is not None


# TLS and addressing


def test_ca_chain_from_the_json_list_becomes_one_pem_text(ctx, keys_secret):
    chain = json.dumps([INTERMEDIATE_CA, ROOT_CA])
    relation = s3_relation(**integrator_2_databag(keys_secret.id, **{"tls-ca-chain": chain}))
    connection = reconcile(ctx, relation, keys_secret)
    assert connection is not None
    # Each certificate on its own lines, in the provider's order, the text ending in a newline.
    assert connection.ca_chain == f"{INTERMEDIATE_CA}\n{ROOT_CA}"


@pytest.mark.parametrize("chain", ["", "[]"])
def test_no_or_an_empty_ca_chain_means_the_system_cas(ctx, keys_secret, chain):
    relation = s3_relation(**integrator_2_databag(keys_secret.id, **{"tls-ca-chain": chain}))
    connection = reconcile(ctx, relation, keys_secret)
    assert connection is not None
    assert connection.ca_chain is None


@pytest.mark.parametrize(
    "chain",
    [
        ROOT_CA,  # PEM, not a JSON list
        "not json",
        json.dumps({"ca": ROOT_CA}),
        json.dumps(["MIIBrootCA"]),
        json.dumps([ROOT_CA, 42]),
        json.dumps([ROOT_CA, ""]),
    ],
    ids=["bare pem", "not json", "object", "no pem", "not a string", "empty entry"],
)
def test_malformed_ca_chain_blocks(ctx, keys_secret, chain):
    relation = s3_relation(**integrator_2_databag(keys_secret.id, **{"tls-ca-chain": chain}))
    assert reconcile(ctx, relation, keys_secret) is None
    assert unit_status(ctx, relation, keys_secret) == ops.BlockedStatus(
        "S3 provider sent a bad tls-ca-chain"
    )


@pytest.mark.parametrize(
    ("style", "path_style"), [("path", True), ("host", False), ("virtual", False), ("", None)]
)
def test_uri_style_says_whether_buckets_are_addressed_by_path(ctx, keys_secret, style, path_style):
    relation = s3_relation(**integrator_2_databag(keys_secret.id, **{"s3-uri-style": style}))
    connection = reconcile(ctx, relation, keys_secret)
    assert connection is not None
    assert connection.path_style is path_style


def test_unknown_uri_style_blocks(ctx, keys_secret):
    relation = s3_relation(**integrator_2_databag(keys_secret.id, **{"s3-uri-style": "dns"}))
    assert reconcile(ctx, relation, keys_secret) is None
    assert unit_status(ctx, relation, keys_secret) == ops.BlockedStatus(
        "S3 provider sent a bad s3-uri-style 'dns'"
    )


# The value


@pytest.mark.parametrize(
    ("path", "parts", "url"),
    [
        ("", (), "s3://mlflow-artifacts"),
        ("", ("mlflow",), "s3://mlflow-artifacts/mlflow"),
        ("team-a", ("mlflow", "/1/"), "s3://mlflow-artifacts/team-a/mlflow/1"),
    ],
)
def test_url_joins_bucket_path_and_parts(path, parts, url):
    connection = S3Connection(None, "mlflow-artifacts", path, None, "AK", "SK")
    assert connection.url(*parts) == url


def test_repr_hides_the_keys():
    connection = S3Connection(ENDPOINT, "mlflow-artifacts", "", None, "AKIAEXAMPLE", "s3cr3t")
    assert "AKIAEXAMPLE" not in repr(connection)
    assert "s3cr3t" not in repr(connection)
