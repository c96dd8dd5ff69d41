"""The mlops_dataset relation, pushed versions (Pebble notices) and the s3 relation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ops import pebble, testing
from registry_testing import consumer_relation, dataset_exec, provided, versions_output

import registry

S3_KEYS = {"access-key": "AKIAIOSFODNN7EXAMPLE", "secret-key": "wJalrXUtnFEMIK7MDENGbPxRfiCY"}


def test_consumer_gets_read_only_credentials_by_default(ctx, make_state, data_dir: Path):
    relation = consumer_relation()
    state = make_state(relations=[relation])
    out = ctx.run(ctx.on.relation_changed(relation), state)
    data = provided(out, relation)
    assert (
        data["registry_url"]
        == "http://data-versioning-k8s.mlops.svc.cluster.local:8080/registry.git"
    )
    assert data["remote_url"] == "s3://dvc"
    assert data["remote_endpoint"].endswith(":9001")
    assert data["access"] == "read"
    secret = out.get_secret(id=data["credentials_secret_id"])
    username = f"relation-{relation.id}"
    assert secret.latest_content["username"] == username
    assert secret.latest_content["access-key"] == username
    assert (data_dir / "conf" / "htgroup").read_text() == "writers: registry\n"
    assert (data_dir / "conf" / "htpasswd").read_text().count(username) == 1


def test_consumer_asking_for_write_joins_the_writers(ctx, make_state, data_dir: Path):
    relation = consumer_relation("write")
    state = make_state(relations=[relation])
    out = ctx.run(ctx.on.relation_changed(relation), state)
    data = provided(out, relation)
    assert data["access"] == "write"
    assert data["remote_endpoint"].endswith(":9000")
    assert (data_dir / "conf" / "htgroup").read_text() == (
        f"writers: registry relation-{relation.id}\n"
    )


def test_malformed_consumer_data_blocks_and_publishes_nothing(ctx, make_state):
    relation = consumer_relation(access="admin")
    state = make_state(relations=[relation])
    out = ctx.run(ctx.on.relation_changed(relation), state)
    assert isinstance(out.unit_status, testing.BlockedStatus)
    assert out.unit_status.message.startswith("mlops-dataset: invalid data from training")
    assert provided(out, relation) == {}


def test_non_json_consumer_data_does_not_raise(ctx, make_state):
    relation = testing.Relation(
        "mlops-dataset", remote_app_name="training", remote_app_data={"access": "{not json"}
    )
    state = make_state(relations=[relation])
    out = ctx.run(ctx.on.relation_changed(relation), state)
    assert isinstance(out.unit_status, testing.BlockedStatus)


def test_departed_consumer_loses_its_secret_and_user(ctx, make_state, data_dir: Path):
    relation = consumer_relation()
    state = make_state(relations=[relation])
    joined = ctx.run(ctx.on.relation_changed(relation), state)
    secret_id = provided(joined, relation)["credentials_secret_id"]
    out = ctx.run(ctx.on.relation_broken(joined.get_relation(relation.id)), joined)
    assert all(s.id != secret_id for s in out.secrets)
    assert f"relation-{relation.id}" not in (data_dir / "conf" / "htpasswd").read_text()


def _notice(tags: str) -> testing.Notice:
    return testing.Notice(key=registry.NOTICE_KEY, last_data={"tags": tags})


def test_pushed_valid_version_becomes_latest_for_consumers(ctx, make_state, make_container):
    relation = consumer_relation()
    notice = _notice("v3")
    container = make_container(
        dataset_exec("validate-version", {"version": "v3", "valid": True, "files": 4}),
        notices=[notice],
    )
    state = make_state(relations=[relation], container=container)
    out = ctx.run(ctx.on.pebble_custom_notice(container, notice), state)
    assert provided(out, relation)["latest_version"] == "v3"
    assert out.unit_status == testing.ActiveStatus("latest v3")


def test_pushed_version_without_data_is_reported_not_published(ctx, make_state, make_container):
    relation = consumer_relation()
    notice = _notice("v3")
    report = {"version": "v3", "valid": False, "reason": "2 files are not in the DVC remote"}
    container = make_container(dataset_exec("validate-version", report), notices=[notice])
    state = make_state(relations=[relation], container=container)
    out = ctx.run(ctx.on.pebble_custom_notice(container, notice), state)
    assert "latest_version" not in provided(out, relation)
    assert out.unit_status == testing.ActiveStatus("no versions yet; invalid (data missing): v3")


def test_notice_with_another_key_is_ignored(ctx, make_state, make_container):
    notice = testing.Notice(key="example.com/other", last_data={"tags": "v3"})
    container = make_container(notices=[notice])
    state = make_state(container=container)
    ctx.run(ctx.on.pebble_custom_notice(container, notice), state)
    assert not any("validate-version" in e.command for e in ctx.exec_history.get("registry", []))


def _s3_relation(secret: testing.Secret) -> testing.Relation:
    return testing.Relation(
        "s3-credentials",
        interface="s3",
        remote_app_name="s3-integrator",
        remote_app_data={
            "version": "1",
            "secret-extra": secret.id,
            "bucket": "datasets",
            "path": "/registry/",
            "endpoint": "http://rgw.ceph.svc.cluster.local:7480",
            "region": "eu-west-1",
            "s3-uri-style": "path",
        },
        remote_units_data={0: {}},
    )


@pytest.fixture
def s3_secret() -> testing.Secret:
    return testing.Secret(S3_KEYS)


def test_s3_relation_moves_the_remote_and_stops_the_embedded_servers(ctx, make_state, s3_secret):
    s3 = _s3_relation(s3_secret)
    consumer = consumer_relation()
    state = make_state(relations=[s3, consumer], secrets=[s3_secret])
    out = ctx.run(ctx.on.relation_changed(s3), state)
    plan = out.get_container("registry").plan
    assert plan.services["git-http"].startup == "enabled"
    assert {plan.services[name].startup for name in ("s3", "s3-read-only")} == {"disabled"}
    assert {p.port for p in out.opened_ports} == {8080}
    data = provided(out, consumer)
    assert data["remote_url"] == "s3://datasets/registry"
    assert data["remote_endpoint"] == "http://rgw.ceph.svc.cluster.local:7480"
    assert data["remote_region"] == "eu-west-1"
    secret = out.get_secret(id=data["credentials_secret_id"])
    assert secret.latest_content["access-key"] == S3_KEYS["access-key"]
    bootstrap = [e for e in ctx.exec_history["registry"] if e.command[0] == "/bin/sh"][-1]
    assert "s3://datasets/registry" in bootstrap.command[2]
    assert bootstrap.environment["AWS_ACCESS_KEY_ID"] == S3_KEYS["access-key"]


def test_switch_to_s3_stops_the_running_embedded_servers(
    ctx, make_state, make_container, s3_secret
):
    running = testing.Container(
        "registry",
        can_connect=True,
        mounts=make_container().mounts,
        execs=make_container().execs,
        layers={
            "registry": pebble.Layer(
                {
                    "services": {
                        name: {
                            "override": "replace",
                            "command": "rclone serve s3",
                            "startup": "enabled",
                        }
                        for name in ("s3", "s3-read-only")
                    }
                }
            )
        },
        service_statuses={
            "s3": pebble.ServiceStatus.ACTIVE,
            "s3-read-only": pebble.ServiceStatus.ACTIVE,
        },
    )
    s3 = _s3_relation(s3_secret)
    state = make_state(relations=[s3], secrets=[s3_secret], container=running)
    out = ctx.run(ctx.on.relation_changed(s3), state)
    statuses = out.get_container("registry").service_statuses
    assert statuses["s3"] == pebble.ServiceStatus.INACTIVE
    assert statuses["s3-read-only"] == pebble.ServiceStatus.INACTIVE
    assert statuses["git-http"] == pebble.ServiceStatus.ACTIVE


def test_incomplete_s3_relation_keeps_the_embedded_remote(ctx, make_state):
    s3 = testing.Relation("s3-credentials", interface="s3", remote_app_name="s3-integrator")
    state = make_state(relations=[s3])
    out = ctx.run(ctx.on.relation_changed(s3), state)
    assert isinstance(out.unit_status, testing.WaitingStatus)
    assert out.get_container("registry").plan.services == {}


def test_consumer_data_is_json_per_field(ctx, make_state):
    relation = consumer_relation()
    state = make_state(relations=[relation])
    out = ctx.run(ctx.on.relation_changed(relation), state)
    raw = out.get_relation(relation.id).local_app_data
    assert json.loads(raw["access"]) == "read"


def test_update_status_finds_versions_pushed_without_a_notice(ctx, make_state, make_container):
    """Juju before 3.6.25 drops notices from a non-root workload: update-status catches up."""
    relation = consumer_relation()
    container = make_container(
        dataset_exec("list-versions", versions_output("v1", "v2", "v3")),
        dataset_exec("validate-version", {"version": "v3", "valid": True, "files": 2}),
    )
    peers = testing.PeerRelation(
        "registry-peers", local_app_data={"versions-listed": "true", "latest-version": "v2"}
    )
    state = make_state(relations=[relation, peers], container=container)
    out = ctx.run(ctx.on.update_status(), state)
    validated = [
        e.command[3:] for e in ctx.exec_history["registry"] if "validate-version" in e.command
    ]
    assert validated == [["v3"]]
    assert provided(out, relation)["latest_version"] == "v3"
