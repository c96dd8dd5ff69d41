"""The mlops_dataset relation: what each consumer is told, its own credentials, bad requests."""

from __future__ import annotations

import dataclasses
import json

import ops
import pytest
from ops import testing
from registry_testing import (
    HOST,
    WRITER_KEYS,
    WRITER_PASSWORD,
    consumer_relation,
    consumer_secret,
    provided,
    push_tags,
    with_relation,
    without_relation,
)

from mlops_charms import registry_server


def test_a_consumer_is_told_where_the_registry_and_its_remote_are(ctx, deployed):
    consumer = consumer_relation()
    state = deployed(relations=[consumer])
    assert provided(state, consumer) == {
        "registry_url": f"http://{HOST}:8080/registry.git",
        "remote_url": "s3://dvc",
        "remote_endpoint": f"http://{HOST}:9000",
        "access": "read",
        "credentials_secret_id": provided(state, consumer)["credentials_secret_id"],
    }


def test_the_urls_follow_public_host_and_the_ports(ctx, deployed):
    consumer = consumer_relation()
    config = {"public-host": "10.1.2.3", "git-port": 18080, "s3-port": 19000}
    state = deployed(relations=[consumer], config=config)
    data = provided(state, consumer)
    assert data["registry_url"] == "http://10.1.2.3:18080/registry.git"
    assert data["remote_endpoint"] == "http://10.1.2.3:19000"


def test_the_databag_is_json_per_field(ctx, deployed):
    consumer = consumer_relation()
    raw = deployed(relations=[consumer]).get_relation(consumer.id).local_app_data
    assert raw["access"] == '"read"'
    assert raw["remote_url"] == '"s3://dvc"'


def test_a_consumer_gets_its_own_user_with_its_own_s3_keys(ctx, deployed):
    consumer = consumer_relation()
    state = deployed(relations=[consumer])
    credentials = consumer_secret(state, consumer)
    assert credentials["username"] == f"relation-{consumer.id}"
    assert credentials["access-key"].startswith("mlops")
    assert len(credentials["password"]) == 32 and len(credentials["secret-key"]) == 40
    keys = {credentials["access-key"], credentials["secret-key"]}
    assert credentials["password"] not in keys
    assert keys.isdisjoint({WRITER_PASSWORD, *WRITER_KEYS.values()})


def test_two_consumers_have_different_credentials(ctx, deployed):
    first, second = consumer_relation(app="training"), consumer_relation(app="labelling")
    state = deployed(relations=[first, second])
    one, two = consumer_secret(state, first), consumer_secret(state, second)
    assert one["username"] != two["username"]
    assert {one["password"], one["access-key"], one["secret-key"]}.isdisjoint(two.values())


def test_a_reader_may_fetch_but_not_push_nor_write_objects(ctx, deployed, data_dir):
    consumer = consumer_relation()
    state = deployed(relations=[consumer])
    credentials = consumer_secret(state, consumer)
    conf = data_dir / "conf"
    assert (conf / "htgroup").read_text() == "writers: registry\n"
    assert credentials["username"] in (conf / "htpasswd").read_text()
    s3_env = (conf / "s3.env").read_text()
    writers = next(line for line in s3_env.splitlines() if " RCLONE_AUTH_KEY=" in line)
    readers = next(line for line in s3_env.splitlines() if "RCLONE_READ_ONLY_AUTH_KEY=" in line)
    assert credentials["access-key"] not in writers
    assert WRITER_KEYS["access-key"] in writers
    assert credentials["access-key"] in readers and WRITER_KEYS["access-key"] in readers
    # Apache refuses a reader's S3 writes before they reach a server.
    assert f'"Credential=({credentials["access-key"]})/"' in (conf / "httpd.conf").read_text()


def test_a_consumer_asking_for_write_joins_the_writers(ctx, deployed, data_dir):
    consumer = consumer_relation("write")
    state = deployed(relations=[consumer])
    credentials = consumer_secret(state, consumer)
    assert provided(state, consumer)["access"] == "write"
    conf = data_dir / "conf"
    assert (conf / "htgroup").read_text() == f"writers: registry {credentials['username']}\n"
    writers = next(
        line for line in (conf / "s3.env").read_text().splitlines() if " RCLONE_AUTH_KEY=" in line
    )
    assert credentials["access-key"] in writers
    assert "Credential=" not in (conf / "httpd.conf").read_text()


def test_a_reader_that_asks_for_write_later_becomes_a_writer(ctx, deployed, data_dir):
    consumer = consumer_relation()
    state = deployed(relations=[consumer])
    writer = dataclasses.replace(
        state.get_relation(consumer.id), remote_app_data={"access": json.dumps("write")}
    )
    out = ctx.run(ctx.on.relation_changed(writer), with_relation(state, writer))
    assert provided(out, consumer)["access"] == "write"
    assert f"relation-{consumer.id}" in (data_dir / "conf" / "htgroup").read_text()


def test_the_consumers_secret_is_granted_once_and_keeps_its_id(
    ctx, deployed, monkeypatch: pytest.MonkeyPatch
):
    grants: list[int] = []
    grant = ops.Secret.grant

    def spy(secret, relation, *, unit=None):
        grants.append(relation.id)
        return grant(secret, relation, unit=unit)

    monkeypatch.setattr(ops.Secret, "grant", spy)
    consumer = consumer_relation()
    state = deployed(relations=[consumer])
    secret_id = provided(state, consumer)["credentials_secret_id"]
    out = ctx.run(ctx.on.relation_changed(state.get_relation(consumer.id)), state)
    assert grants == [consumer.id]
    assert provided(out, consumer)["credentials_secret_id"] == secret_id
    assert consumer.id in out.get_secret(id=secret_id).remote_grants


def test_a_departed_consumer_loses_its_secret_and_its_user(ctx, deployed, data_dir):
    consumer, staying = consumer_relation(), consumer_relation("write", app="labelling")
    state = deployed(relations=[consumer, staying])
    gone = consumer_secret(state, consumer)
    secret_id = provided(state, consumer)["credentials_secret_id"]
    out = ctx.run(ctx.on.relation_broken(state.get_relation(consumer.id)), state)
    assert secret_id not in {s.id for s in out.secrets}
    conf = data_dir / "conf"
    assert gone["username"] not in (conf / "htpasswd").read_text()
    assert gone["access-key"] not in (conf / "s3.env").read_text()
    assert gone["access-key"] not in (conf / "httpd.conf").read_text()
    assert consumer_secret(out, staying)["username"] in (conf / "htpasswd").read_text()


def test_a_consumer_secret_from_before_s3_keys_gains_keys(ctx, deployed, data_dir):
    consumer = consumer_relation()
    state = deployed(relations=[consumer])
    published = provided(state, consumer)["credentials_secret_id"]
    secret = state.get_secret(id=published)
    old_content = {"username": f"relation-{consumer.id}", "password": "old-password-0123456789"}
    old = dataclasses.replace(secret, tracked_content=old_content, latest_content=old_content)
    state = dataclasses.replace(
        state, secrets={*(s for s in state.secrets if s.id != old.id), old}
    )
    out = ctx.run(ctx.on.upgrade_charm(), state)
    credentials = consumer_secret(out, consumer)
    assert credentials["password"] == "old-password-0123456789"
    assert credentials["access-key"].startswith("mlops")
    assert credentials["secret-key"] not in ("", "old-password-0123456789")
    assert credentials["access-key"] in (data_dir / "conf" / "s3.env").read_text()
    assert provided(out, consumer)["credentials_secret_id"] == published


def test_versions_reach_every_consumer(ctx, deployed, data_dir):
    push_tags(data_dir, "v1", "v2")
    first, second = consumer_relation(), consumer_relation("write", app="labelling")
    peers = {registry_server.LATEST_KEY: "v2", registry_server.PINNED_KEY: "v1"}
    state = deployed(relations=[first, second], peer_data=peers)
    for consumer in (first, second):
        data = provided(state, consumer)
        assert (data["latest_version"], data["pinned_version"]) == ("v2", "v1")


def test_a_non_leader_publishes_nothing(ctx, make_state):
    consumer = consumer_relation()
    state = make_state(relations=[consumer], leader=False)
    out = ctx.run(ctx.on.relation_changed(consumer), state)
    assert provided(out, consumer) == {}
    assert [s for s in out.secrets if s.label and s.label.startswith("mlops-dataset-")] == []


# --- bad requests --------------------------------------------------------------------------------


BAD_REQUESTS = {
    "unknown access": (
        {"access": json.dumps("admin")},
        "access: Input should be 'read' or 'write'",
    ),
    "not json": ({"access": "{not json"}, "Expecting property name enclosed in double quotes"),
    "not a string": ({"access": "3"}, "access: Input should be 'read' or 'write'"),
}


@pytest.mark.parametrize(("databag", "reason"), BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
def test_a_bad_request_blocks_and_is_told_nothing(ctx, deployed, databag, reason):
    bad, good = consumer_relation(databag=databag), consumer_relation(app="labelling")
    state = deployed(relations=[good])
    out = ctx.run(
        ctx.on.relation_changed(bad), dataclasses.replace(state, relations={*state.relations, bad})
    )
    assert isinstance(out.unit_status, testing.BlockedStatus)
    assert out.unit_status.message.startswith("mlops-dataset: invalid data from training: ")
    assert reason in out.unit_status.message
    assert provided(out, bad) == {}
    assert provided(out, good)["access"] == "read"


def test_a_request_fixed_later_is_served(ctx, deployed):
    bad = consumer_relation("admin")
    state = deployed(relations=[bad])
    fixed = dataclasses.replace(state.get_relation(bad.id), remote_app_data={})
    out = ctx.run(ctx.on.relation_changed(fixed), with_relation(state, fixed))
    assert provided(out, fixed)["access"] == "read"
    assert out.unit_status == testing.ActiveStatus("no versions yet")


def test_a_consumer_that_joined_and_left_leaves_no_trace(ctx, deployed, data_dir):
    consumer = consumer_relation()
    state = deployed(relations=[consumer])
    out = ctx.run(ctx.on.relation_broken(state.get_relation(consumer.id)), state)
    out = without_relation(out, consumer)
    assert (data_dir / "conf" / "htgroup").read_text() == "writers: registry\n"
    assert (data_dir / "conf" / "htpasswd").read_text().count("\n") == 1
    assert [s.label for s in out.secrets] == [registry_server.REGISTRY_SECRET]
