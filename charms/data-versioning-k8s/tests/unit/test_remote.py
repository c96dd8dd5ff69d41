"""Moves of the DVC remote's objects: the s3-credentials relation, a job, then the switch.

The services keep serving the bucket in use (conf/backend.json) until a ``move-remote`` job
has copied and checked every object; consumers always see the registry's own remote.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import stat

import pytest
from ops import pebble, testing
from registry_testing import (
    CA_CERT,
    ENDPOINT,
    HOST,
    S3_KEYS,
    STATE_DIR,
    JobOutcome,
    backend,
    consumer_relation,
    consumer_secret,
    integrator_1,
    integrator_2,
    job_ids,
    job_kinds,
    job_record,
    job_running,
    peer_data,
    provided,
    push_tags,
    running_job_id,
    s3_relation,
    with_relation,
    with_secrets,
    without_relation,
)

import charm
from mlops_charms import registry_server

LOCATION = f"{ENDPOINT}/datasets/registry"
MOVING = testing.MaintenanceStatus(f"moving the DVC remote to {LOCATION}")
RCLONE_FAILURE = (
    "2025/05/01 10:00:00 ERROR : Attempt 3/3 failed with 1 errors and: "
    "RequestError: send request failed\n"
    "2025/05/01 10:00:00 Failed to copy: RequestError: send request failed\n"
)


def _serves(state: testing.State | pebble.Plan) -> str:
    """What the read-write S3 server serves: the storage's folder or the external front."""
    plan = state if isinstance(state, pebble.Plan) else state.get_container(charm.CONTAINER).plan
    command = shlex.split(plan.services["s3"].command)
    launch = shlex.split(command[2])  # . s3.env && ... exec rclone serve s3 ROOT --addr ...
    return launch[launch.index("serve") + 2]


@pytest.fixture
def s3():
    return integrator_2()


@pytest.fixture
def moving(ctx, deployed, s3) -> testing.State:
    """A registry on its storage, with a consumer, that s3-integrator was just related to."""
    relation, keys = s3
    state = deployed(relations=[consumer_relation()])
    state = with_secrets(with_relation(state, relation), keys)
    return ctx.run(ctx.on.relation_changed(relation), state)


@pytest.fixture
def moved(ctx, moving, workload) -> testing.State:
    """The move's job ended well, its notice handled: the services serve the bucket."""
    state, notice = workload.end(moving)
    return ctx.run(
        ctx.on.pebble_custom_notice(state.get_container(charm.CONTAINER), notice), state
    )


# --- the move ------------------------------------------------------------------------------------


def test_an_s3_relation_starts_a_move_and_keeps_serving_the_storage(moving, data_dir):
    assert job_kinds(data_dir) == ["move-remote"]
    assert job_running(moving)
    assert backend(data_dir) == {}
    assert _serves(moving) == f"{STATE_DIR}/s3"
    assert moving.unit_status == MOVING


def test_the_move_copies_every_object_then_checks_the_copy(moving, data_dir):
    job_id = running_job_id(moving.get_container(charm.CONTAINER))
    assert job_record(data_dir, job_id)["params"] == {"to": LOCATION}
    command = shlex.split(
        moving.get_container(charm.CONTAINER).plan.services["registry-job"].command
    )
    script = command[7]  # /bin/sh -c WRAPPER job FOLDER /bin/sh -c SCRIPT
    *reach, copy, check, echo = script.split(" && ")
    assert [step.split(" lsf ")[-1] for step in reach] == [
        "--max-depth 1 target:datasets/registry >/dev/null"
    ]
    assert copy.endswith(f"copy {STATE_DIR}/s3/dvc target:datasets/registry")
    assert check.endswith(f"check --one-way {STATE_DIR}/s3/dvc target:datasets/registry")
    assert "--retries 2" in copy and "--contimeout 15s" in copy
    assert echo == f"""echo '{{"target": "{LOCATION}"}}'"""


def test_the_moves_keys_are_in_the_jobs_private_env_only(moving, data_dir):
    job_id = running_job_id(moving.get_container(charm.CONTAINER))
    env = data_dir / "jobs" / job_id / "env"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    text = env.read_text()
    assert (
        f"export RCLONE_CONFIG_TARGET_SECRET_ACCESS_KEY={shlex.quote(S3_KEYS['secret-key'])}"
        in text
    )
    assert f"export RCLONE_CONFIG_TARGET_ENDPOINT={ENDPOINT}" in text
    assert "export RCLONE_CONFIG_TARGET_FORCE_PATH_STYLE=true" in text
    plan = str(moving.get_container(charm.CONTAINER).plan.to_dict())
    record = (data_dir / "jobs" / job_id / "job.json").read_text()
    assert S3_KEYS["secret-key"] not in plan + record


def test_the_services_switch_to_the_bucket_once_the_move_succeeded(
    ctx, moving, workload, data_dir, service_changes
):
    state, notice = workload.end(moving)
    service_changes.clear()
    out = ctx.run(ctx.on.pebble_custom_notice(state.get_container(charm.CONTAINER), notice), state)
    assert backend(data_dir)["bucket"] == "datasets"
    assert stat.S_IMODE((data_dir / "conf" / "backend.json").stat().st_mode) == 0o600
    assert _serves(out) == "front:"
    s3_env = (data_dir / "conf" / "s3.env").read_text()
    assert "export RCLONE_CONFIG_FRONT_UPSTREAMS=dvc=external:datasets/registry" in s3_env
    assert f"export RCLONE_CONFIG_EXTERNAL_ACCESS_KEY_ID={S3_KEYS['access-key']}" in s3_env
    assert service_changes == ["restart"]
    assert out.unit_status == testing.ActiveStatus("no versions yet")
    assert not job_running(out)
    assert job_kinds(data_dir) == ["move-remote"]


def test_a_later_hook_switches_when_the_moves_notice_was_lost(ctx, moving, workload, data_dir):
    state, _notice = workload.end(moving)
    out = ctx.run(ctx.on.update_status(), state)
    assert backend(data_dir)["bucket"] == "datasets"
    assert _serves(out) == "front:"


def test_consumers_keep_the_registrys_own_remote_and_keys(ctx, deployed, s3, moved):
    consumer = moved.get_relations(registry_server.DATASET_ENDPOINT)[0]
    data = provided(moved, consumer)
    assert data["remote_url"] == "s3://dvc"
    assert data["remote_endpoint"] == f"http://{HOST}:9000"
    assert "remote_region" not in data
    keys = consumer_secret(moved, consumer)
    assert {keys["access-key"], keys["secret-key"]}.isdisjoint(S3_KEYS.values())
    assert not any(key in str(data) for key in S3_KEYS.values())


def test_new_keys_for_the_bucket_in_use_switch_at_once_without_a_move(
    ctx, moved, s3, data_dir, service_changes
):
    _relation, keys = s3
    rotated = dataclasses.replace(
        keys,
        tracked_content={"access-key": "AKIANEWKEY", "secret-key": "new-secret"},
        latest_content={"access-key": "AKIANEWKEY", "secret-key": "new-secret"},
    )
    out = ctx.run(ctx.on.secret_changed(rotated), with_secrets(moved, rotated))
    assert backend(data_dir)["access_key"] == "AKIANEWKEY"
    assert (
        "RCLONE_CONFIG_EXTERNAL_SECRET_ACCESS_KEY=new-secret"
        in (data_dir / "conf" / "s3.env").read_text()
    )
    assert service_changes == ["restart"]
    assert job_kinds(data_dir) == ["move-remote"]  # the first move's only
    assert out.unit_status == testing.ActiveStatus("no versions yet")


def test_removing_the_s3_relation_moves_the_objects_back_to_the_storage(
    ctx, moved, s3, workload, data_dir
):
    relation = moved.get_relation(s3[0].id)
    out = ctx.run(ctx.on.relation_broken(relation), moved)
    assert job_kinds(data_dir) == ["move-remote", "move-remote"]
    job_id = running_job_id(out.get_container(charm.CONTAINER))
    assert job_record(data_dir, job_id)["params"] == {"to": "the unit's storage"}
    env = (data_dir / "jobs" / job_id / "env").read_text()
    assert f"RCLONE_CONFIG_SOURCE_ACCESS_KEY_ID={S3_KEYS['access-key']}" in env
    assert out.unit_status == testing.MaintenanceStatus(
        "moving the DVC remote to the unit's storage"
    )
    assert _serves(out) == "front:"  # still the bucket, until the copy is checked

    gone = without_relation(out, relation)
    state, notice = workload.end(gone)
    back = ctx.run(
        ctx.on.pebble_custom_notice(state.get_container(charm.CONTAINER), notice), state
    )
    assert backend(data_dir) == {}
    assert _serves(back) == f"{STATE_DIR}/s3"
    assert back.unit_status == testing.ActiveStatus("no versions yet")


# --- failures ------------------------------------------------------------------------------------


@pytest.fixture
def failed_move(ctx, moving, workload) -> testing.State:
    state, notice = workload.end(moving, JobOutcome(code=1, stderr=RCLONE_FAILURE))
    return ctx.run(
        ctx.on.pebble_custom_notice(state.get_container(charm.CONTAINER), notice), state
    )


def test_a_failed_move_blocks_with_its_reason_and_keeps_the_storage(failed_move, data_dir):
    assert failed_move.unit_status == testing.BlockedStatus(
        "moving the DVC remote failed (retried on update-status): "
        "2025/05/01 10:00:00 Failed to copy: RequestError: send request failed"
    )
    assert backend(data_dir) == {}
    assert _serves(failed_move) == f"{STATE_DIR}/s3"
    assert not job_running(failed_move)


@pytest.mark.parametrize("event", ["config_changed", "upgrade_charm", "leader_elected"])
def test_a_failed_move_is_not_retried_by_other_hooks(ctx, failed_move, data_dir, event):
    out = ctx.run(getattr(ctx.on, event)(), failed_move)
    assert job_kinds(data_dir) == ["move-remote"]
    assert isinstance(out.unit_status, testing.BlockedStatus)


def test_a_failed_move_is_retried_on_update_status(ctx, failed_move, workload, data_dir):
    retrying = ctx.run(ctx.on.update_status(), failed_move)
    assert job_kinds(data_dir) == ["move-remote", "move-remote"]
    assert job_running(retrying)
    state, notice = workload.end(retrying)
    out = ctx.run(ctx.on.pebble_custom_notice(state.get_container(charm.CONTAINER), notice), state)
    assert backend(data_dir)["bucket"] == "datasets"
    assert registry_server.MOVE_ERROR_KEY not in peer_data(out)
    assert out.unit_status == testing.ActiveStatus("no versions yet")


def test_removing_the_relation_after_a_failed_move_clears_the_failure(
    ctx, failed_move, s3, data_dir
):
    relation = failed_move.get_relation(s3[0].id)
    out = ctx.run(ctx.on.relation_broken(relation), failed_move)
    assert registry_server.MOVE_ERROR_KEY not in peer_data(out)
    assert job_kinds(data_dir) == ["move-remote"]  # nothing to move: the storage is in use
    assert out.unit_status == testing.ActiveStatus("no versions yet")


def test_a_new_bucket_after_a_failed_move_is_tried_at_once(ctx, failed_move, s3, data_dir):
    relation = failed_move.get_relation(s3[0].id)
    fixed = dataclasses.replace(
        relation, remote_app_data={**relation.remote_app_data, "endpoint": "http://minio:9000"}
    )
    ctx.run(ctx.on.relation_changed(fixed), with_relation(failed_move, fixed))
    assert job_kinds(data_dir) == ["move-remote", "move-remote"]


def test_a_version_is_never_cut_onto_the_bucket_a_finished_move_leaves(
    ctx, moving, workload, data_dir
):
    # The move ended; its notice is not handled yet (Juju before 3.6.25 drops notices of a
    # non-root workload: update-status, minutes later, would see the end).
    state, _notice = workload.end(moving)
    try:
        ctx.run(ctx.on.action("create-version", params={"source": f"{STATE_DIR}/in"}), state)
    except testing.ActionFailed:
        return  # refusing until the switch is fine too
    [create] = [
        j for j in job_ids(data_dir) if job_record(data_dir, j)["kind"] == "create-version"
    ]
    assert _serves(workload.plans_at_start[create]) == "front:"


# --- one job at a time, and a target that changes ------------------------------------------------


def test_the_move_waits_for_a_running_validation(ctx, deployed, s3, workload, data_dir):
    relation, keys = s3
    push_tags(data_dir, "v1")
    validating = ctx.run(ctx.on.update_status(), deployed())
    assert job_kinds(data_dir) == ["validate-version"]
    state = with_secrets(with_relation(validating, relation), keys)
    waiting = ctx.run(ctx.on.relation_changed(relation), state)
    assert job_kinds(data_dir) == ["validate-version"]
    assert waiting.unit_status == MOVING

    state, notice = workload.end(waiting)
    out = ctx.run(ctx.on.pebble_custom_notice(state.get_container(charm.CONTAINER), notice), state)
    assert job_kinds(data_dir) == ["validate-version", "move-remote"]
    assert out.unit_status == MOVING


def test_a_bucket_changed_during_a_move_gets_a_move_of_its_own(
    ctx, moving, s3, workload, data_dir
):
    relation, _keys = s3
    other = dataclasses.replace(
        relation, remote_app_data={**relation.remote_app_data, "bucket": "other"}
    )
    state = ctx.run(ctx.on.relation_changed(other), with_relation(moving, other))
    assert job_kinds(data_dir) == ["move-remote"]  # the first one still runs
    state, notice = workload.end(state)
    out = ctx.run(ctx.on.pebble_custom_notice(state.get_container(charm.CONTAINER), notice), state)
    assert backend(data_dir) == {}  # the copy went to a bucket no longer wanted
    assert job_kinds(data_dir) == ["move-remote", "move-remote"]
    job_id = running_job_id(out.get_container(charm.CONTAINER))
    assert job_record(data_dir, job_id)["params"] == {"to": f"{ENDPOINT}/other/registry"}
    assert out.unit_status == testing.MaintenanceStatus(
        f"moving the DVC remote to {ENDPOINT}/other/registry"
    )


def test_a_non_leader_moves_nothing(ctx, make_state, s3, data_dir):
    relation, keys = s3
    state = make_state(relations=[relation], secrets=[keys], leader=False)
    out = ctx.run(ctx.on.relation_changed(relation), state)
    assert job_kinds(data_dir) == []
    assert (
        out.get_container(charm.CONTAINER).service_statuses.get("s3")
        == pebble.ServiceStatus.ACTIVE
    )


# --- what the provider sends ---------------------------------------------------------------------


def test_s3_integrator_1_keys_in_clear_and_a_ca_chain_are_understood(ctx, deployed, data_dir):
    relation = integrator_1()
    out = ctx.run(ctx.on.relation_changed(relation), with_relation(deployed(), relation))
    assert (data_dir / "conf" / "s3-ca.pem").read_text() == CA_CERT + "\n"
    job_id = running_job_id(out.get_container(charm.CONTAINER))
    env = (data_dir / "jobs" / job_id / "env").read_text()
    assert f"export RCLONE_CA_CERT={STATE_DIR}/conf/s3-ca.pem" in env
    assert "export RCLONE_CONFIG_TARGET_REGION=eu-west-1" in env
    assert out.unit_status == testing.MaintenanceStatus(
        "moving the DVC remote to https://s3.eu-west-1.amazonaws.com/datasets"
    )


def test_the_request_names_the_bucket_option(ctx, make_state):
    relation = s3_relation({})
    state = make_state(relations=[relation], config={"bucket": "team-datasets"})
    state = ctx.run(ctx.on.relation_created(relation), state)
    state = ctx.run(ctx.on.relation_joined(state.get_relation(relation.id), remote_unit=0), state)
    request = state.get_relation(relation.id).local_app_data
    assert request["bucket"] == "team-datasets"
    assert json.loads(request["requested-secrets"]) == ["access-key", "secret-key"]


INCOMPLETE = {
    "no answer yet": ({}, "waiting for S3 credentials"),
    "keys but no bucket": (
        {"access-key": "AKIA", "secret-key": "secret"},
        "waiting for S3 bucket",
    ),
}


@pytest.mark.parametrize(("databag", "message"), INCOMPLETE.values(), ids=INCOMPLETE.keys())
def test_an_incomplete_answer_waits_and_keeps_the_bucket_in_use(
    ctx, deployed, data_dir, databag, message
):
    relation = s3_relation(databag)
    out = ctx.run(ctx.on.relation_changed(relation), with_relation(deployed(), relation))
    assert out.unit_status == testing.WaitingStatus(message)
    assert job_kinds(data_dir) == []
    assert _serves(out) == f"{STATE_DIR}/s3"


BAD_ANSWERS = {
    "secret gone": (
        lambda: (s3_relation({"version": "1", "secret-extra": "secret:nonexistent"}), None),
        "S3 credentials secret not found",
    ),
    "secret without keys": (
        lambda: integrator_2(access_key="", secret_key=""),
        "S3 credentials secret lacks access-key or secret-key",
    ),
    "whitespace in keys": (
        lambda: (integrator_1(**{"secret-key": "two words"}), None),
        "S3 credentials contain whitespace",
    ),
    "bucket with a slash": (
        lambda: integrator_2(bucket="a/b"),
        "S3 provider sent a bad bucket name 'a/b'",
    ),
    "endpoint not http": (
        lambda: integrator_2(endpoint="ftp://rgw:21"),
        "S3 provider sent a bad endpoint 'ftp://rgw:21'",
    ),
    "ca chain not PEM": (
        lambda: (integrator_1(**{"tls-ca-chain": json.dumps(["not a certificate"])}), None),
        "S3 provider sent a bad tls-ca-chain",
    ),
    "unknown uri style": (
        lambda: integrator_2(**{"s3-uri-style": "sideways"}),
        "S3 provider sent a bad s3-uri-style 'sideways'",
    ),
}


@pytest.mark.parametrize(("answer", "message"), BAD_ANSWERS.values(), ids=BAD_ANSWERS.keys())
def test_bad_provider_data_blocks_and_moves_nothing(ctx, deployed, data_dir, answer, message):
    relation, keys = answer()
    state = with_relation(deployed(), relation)
    if keys is not None:
        state = with_secrets(state, keys)
    out = ctx.run(ctx.on.relation_changed(relation), state)
    assert out.unit_status == testing.BlockedStatus(message)
    assert job_kinds(data_dir) == []
    assert _serves(out) == f"{STATE_DIR}/s3"


def test_bad_data_on_the_relation_in_use_keeps_serving_its_bucket(ctx, moved, s3, data_dir):
    relation = moved.get_relation(s3[0].id)
    broken = dataclasses.replace(
        relation, remote_app_data={**relation.remote_app_data, "endpoint": "rgw:7480"}
    )
    out = ctx.run(ctx.on.relation_changed(broken), with_relation(moved, broken))
    assert out.unit_status == testing.BlockedStatus("S3 provider sent a bad endpoint 'rgw:7480'")
    assert job_kinds(data_dir) == ["move-remote"]  # the first move's only
    assert backend(data_dir)["bucket"] == "datasets"
    assert _serves(out) == "front:"
