"""Versions: tags read from the bare repository, pushed ones validated in a job, one at a time.

A validation's end (its notice, or any later hook) publishes the version, or records it as
invalid; the latest version follows the repository when it loses tags.
"""

from __future__ import annotations

import shlex

import pytest
from ops import testing
from registry_testing import (
    STATE_DIR,
    WORKLOAD,
    JobOutcome,
    consumer_relation,
    delete_repository,
    delete_tags,
    failed,
    job_kinds,
    job_record,
    job_running,
    pack_tags,
    peer_data,
    provided,
    push_tags,
    running_job_id,
    succeeded,
    validation,
    with_container,
)

import charm
from mlops_charms import registry, registry_server


def _tags_pushed(state: testing.State, tags: str) -> tuple[testing.State, testing.Notice]:
    """What the post-receive hook records when a user pushes tags."""
    notice = testing.Notice(registry.NOTICE_KEY, last_data={"tags": tags})
    container = state.get_container(charm.CONTAINER)
    return with_container(state, notices=[*container.notices, notice]), notice


def _notice_hook(ctx, state, notice):
    return ctx.run(
        ctx.on.pebble_custom_notice(state.get_container(charm.CONTAINER), notice), state
    )


@pytest.fixture
def consumer() -> testing.Relation:
    return consumer_relation()


@pytest.fixture
def validating(ctx, deployed, consumer, data_dir) -> testing.State:
    """A user pushed v1; the charm heard of it and started its validation."""
    state = deployed(relations=[consumer])
    push_tags(data_dir, "v1")
    state, notice = _tags_pushed(state, "v1")
    return _notice_hook(ctx, state, notice)


def _end(ctx, workload, state, outcome=None) -> testing.State:
    state, notice = workload.end(state, outcome)
    return _notice_hook(ctx, state, notice)


# --- validation ----------------------------------------------------------------------------------


def test_a_pushed_tag_is_validated_in_a_job_not_published_yet(validating, consumer, data_dir):
    assert job_kinds(data_dir) == ["validate-version"]
    job_id = running_job_id(validating.get_container(charm.CONTAINER))
    assert job_record(data_dir, job_id)["params"] == {"version": "v1"}
    command = shlex.split(
        validating.get_container(charm.CONTAINER).plan.services["registry-job"].command
    )
    assert command[5:] == [WORKLOAD, "dataset", "validate-version", "v1"]
    assert "latest_version" not in provided(validating, consumer)
    assert validating.unit_status == testing.ActiveStatus("no versions yet")


def test_a_valid_version_is_published_when_its_validation_ends(
    ctx, validating, workload, consumer, data_dir
):
    out = _end(ctx, workload, validating)
    assert peer_data(out)[registry_server.LATEST_KEY] == "v1"
    assert provided(out, consumer)["latest_version"] == "v1"
    assert out.unit_status == testing.ActiveStatus("latest v1")
    assert not job_running(out)


def test_a_validation_whose_notice_was_lost_is_seen_by_the_next_hook(
    ctx, validating, workload, consumer
):
    state, _notice = workload.end(validating)
    out = ctx.run(ctx.on.update_status(), state)
    assert provided(out, consumer)["latest_version"] == "v1"


def test_a_version_whose_data_is_missing_is_recorded_invalid_not_published(
    ctx, validating, workload, consumer, data_dir
):
    out = _end(ctx, workload, validating, succeeded(validation("v1", missing=2)))
    assert peer_data(out)[registry_server.INVALID_KEY] == "v1"
    assert "latest_version" not in provided(out, consumer)
    assert out.unit_status == testing.ActiveStatus("no versions yet; invalid (data missing): v1")
    again = ctx.run(ctx.on.update_status(), out)
    assert job_kinds(data_dir) == ["validate-version"]  # never validated again
    assert not job_running(again)


def test_a_validation_that_failed_counts_as_invalid(ctx, validating, workload, consumer):
    outcome = failed("cannot reach the DVC remote: Could not connect to the endpoint URL")
    out = _end(ctx, workload, validating, outcome)
    assert peer_data(out)[registry_server.INVALID_KEY] == "v1"
    assert "latest_version" not in provided(out, consumer)


def test_a_validation_that_printed_no_result_counts_as_invalid(ctx, validating, workload):
    out = _end(ctx, workload, validating, JobOutcome(stdout="Traceback (most recent call last)\n"))
    assert peer_data(out)[registry_server.INVALID_KEY] == "v1"


def test_versions_are_validated_one_at_a_time_oldest_first(ctx, deployed, workload, data_dir):
    state = deployed()
    push_tags(data_dir, "v2", "v1", "v3")
    state, notice = _tags_pushed(state, "v1 v2 v3")
    state = _notice_hook(ctx, state, notice)
    validated = [job_record(data_dir, running_job_id(state.get_container(charm.CONTAINER)))]
    for _ in range(2):
        state = _end(ctx, workload, state)
        validated.append(
            job_record(data_dir, running_job_id(state.get_container(charm.CONTAINER)))
        )
    out = _end(ctx, workload, state)
    assert [v["params"]["version"] for v in validated] == ["v1", "v2", "v3"]
    assert peer_data(out)[registry_server.LATEST_KEY] == "v3"
    assert not job_running(out)


def test_one_invalid_version_does_not_hold_back_the_next(ctx, deployed, workload, data_dir):
    state = deployed()
    push_tags(data_dir, "v1", "v2")
    state = ctx.run(ctx.on.update_status(), state)
    workload.outcomes["validate-version"] = lambda record, _command: (
        succeeded(validation("v1", missing=1))
        if record["params"]["version"] == "v1"
        else succeeded(validation("v2"))
    )
    state = _end(ctx, workload, state)
    out = _end(ctx, workload, state)
    assert peer_data(out)[registry_server.LATEST_KEY] == "v2"
    assert out.unit_status == testing.ActiveStatus("latest v2; invalid (data missing): v1")


def test_tags_in_packed_refs_are_versions_too(ctx, deployed, data_dir):
    state = deployed()
    push_tags(data_dir, "v1")
    pack_tags(data_dir)
    ctx.run(ctx.on.update_status(), state)
    assert job_kinds(data_dir) == ["validate-version"]


@pytest.mark.parametrize("name", ["release-1", "v0", "v01", "V2", "v2-rc1"])
def test_tags_that_are_not_version_names_are_ignored(ctx, deployed, data_dir, name):
    state = deployed()
    push_tags(data_dir, name)
    out = ctx.run(ctx.on.update_status(), state)
    assert job_kinds(data_dir) == []
    assert out.unit_status == testing.ActiveStatus("no versions yet")


def test_tags_older_than_the_latest_are_not_validated(ctx, deployed, data_dir):
    push_tags(data_dir, "v1", "v2", "v3")
    state = deployed(peer_data={registry_server.LATEST_KEY: "v3"})
    ctx.run(ctx.on.update_status(), state)
    assert job_kinds(data_dir) == []


def test_a_tags_notice_during_a_validation_starts_nothing_more(ctx, validating, data_dir):
    push_tags(data_dir, "v2")
    state, notice = _tags_pushed(validating, "v2")
    out = _notice_hook(ctx, state, notice)
    assert job_kinds(data_dir) == ["validate-version"]
    assert job_running(out)


def test_validation_never_runs_inside_a_hook(ctx, validating, workload):
    _end(ctx, workload, validating)
    commands = [e.command for e in ctx.exec_history.get(charm.CONTAINER, [])]
    assert [c for c in commands if "validate-version" in c] == []


def test_a_non_leader_validates_nothing(ctx, make_state, data_dir):
    push_tags(data_dir, "v1")
    ctx.run(ctx.on.update_status(), make_state(leader=False))
    assert job_kinds(data_dir) == []


# --- versions made by the registry's own jobs ----------------------------------------------------


def test_a_version_cut_by_a_job_is_published_without_validation(
    ctx, deployed, workload, consumer, data_dir
):
    state = deployed(relations=[consumer])
    source = f"{STATE_DIR}/incoming/batch-1"
    started = ctx.run(
        ctx.on.action("create-version", params={"source": source, "wait": False}), state
    )
    out = _end(ctx, workload, started)
    assert provided(out, consumer)["latest_version"] == "v1"
    assert job_kinds(data_dir) == ["create-version"]


# --- the repository loses versions ---------------------------------------------------------------


def test_the_latest_version_is_lowered_when_the_repository_lacks_it(
    ctx, deployed, consumer, data_dir
):
    push_tags(data_dir, "v1", "v2", "v3")
    state = deployed(relations=[consumer], peer_data={registry_server.LATEST_KEY: "v3"})
    delete_tags(data_dir, "v3")
    out = ctx.run(ctx.on.storage_attached(next(iter(state.storages))), state)
    assert peer_data(out)[registry_server.LATEST_KEY] == "v2"
    assert provided(out, consumer)["latest_version"] == "v2"
    assert job_kinds(data_dir) == []


def test_an_invalid_version_is_never_the_lowered_latest(ctx, deployed, data_dir):
    push_tags(data_dir, "v1", "v2", "v3")
    state = deployed(
        peer_data={registry_server.LATEST_KEY: "v3", registry_server.INVALID_KEY: "v2"}
    )
    delete_tags(data_dir, "v3")
    out = ctx.run(ctx.on.update_status(), state)
    assert peer_data(out)[registry_server.LATEST_KEY] == "v1"


def test_a_new_empty_storage_leaves_no_version_to_publish(ctx, deployed, consumer, data_dir):
    push_tags(data_dir, "v1", "v2")
    state = deployed(relations=[consumer], peer_data={registry_server.LATEST_KEY: "v2"})
    state = ctx.run(ctx.on.update_status(), state)
    assert provided(state, consumer)["latest_version"] == "v2"
    delete_repository(data_dir)
    out = ctx.run(ctx.on.storage_attached(next(iter(state.storages))), state)
    assert registry_server.LATEST_KEY not in peer_data(out)
    assert "latest_version" not in provided(out, consumer)
    assert out.unit_status == testing.ActiveStatus("no versions yet")


def test_a_pin_to_a_version_the_repository_lacks_is_dropped(ctx, deployed, consumer, data_dir):
    push_tags(data_dir, "v1", "v2")
    pins = {registry_server.LATEST_KEY: "v2", registry_server.PINNED_KEY: "v2"}
    state = deployed(relations=[consumer], peer_data=pins)
    assert provided(state, consumer)["pinned_version"] == "v2"
    delete_tags(data_dir, "v2")
    out = ctx.run(ctx.on.update_status(), state)
    assert registry_server.PINNED_KEY not in peer_data(out)
    assert "pinned_version" not in provided(out, consumer)
    assert out.unit_status == testing.ActiveStatus("latest v1")


def test_a_pin_the_repository_has_stays(ctx, deployed, consumer, data_dir):
    push_tags(data_dir, "v1", "v2")
    state = deployed(relations=[consumer], peer_data={registry_server.LATEST_KEY: "v2"})
    pinned = ctx.run(ctx.on.action("pin-version", params={"version": "v1"}), state)
    out = ctx.run(ctx.on.update_status(), pinned)
    assert provided(out, consumer)["pinned_version"] == "v1"
    assert out.unit_status == testing.ActiveStatus("latest v2; pinned v1")
