"""Actions: validated parameters, long work in jobs, structured results, one-line failures."""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable

import pytest
from ops import testing
from registry_testing import (
    COMMIT,
    STATE_DIR,
    WORKLOAD,
    WRITER_KEYS,
    JobOutcome,
    consumer_relation,
    dataset_exec,
    failed,
    job_ids,
    job_kinds,
    job_record,
    job_running,
    listed_version,
    provided,
    push_tags,
    running_job_id,
    unreported,
    with_container,
    workload_calls,
)

import charm
from mlops_charms import registry_server
from tests.registry_action_cases import ACTIONS as SHARED_ACTIONS
from tests.registry_action_cases import ActionCases, action_params

SOURCE = f"{STATE_DIR}/incoming/batch-7"


def _run(ctx, state, action, **params) -> testing.State:
    return ctx.run(ctx.on.action(action, params=params), state)


def _refused(ctx, state, action, **params) -> str:
    with pytest.raises(testing.ActionFailed) as failure:
        ctx.run(ctx.on.action(action, params=params), state)
    return failure.value.message


def _job_command(state: testing.State) -> list[str]:
    command = state.get_container(charm.CONTAINER).plan.services["registry-job"].command
    return shlex.split(command)[5:]  # after /bin/sh -c WRAPPER job FOLDER


def _with_exec(state: testing.State, *execs: testing.Exec) -> testing.State:
    container = state.get_container(charm.CONTAINER)
    prefixes = {tuple(e.command_prefix) for e in execs}
    kept = {e for e in container.execs if tuple(e.command_prefix) not in prefixes}
    return with_container(state, execs={*kept, *execs})


@pytest.fixture
def consumer() -> testing.Relation:
    return consumer_relation()


@pytest.fixture
def registry_with(ctx, deployed, consumer, data_dir):
    """A running registry with a consumer and these versions, the last one the latest."""

    def make(*versions: str, peers: dict[str, str] | None = None, **kwargs) -> testing.State:
        push_tags(data_dir, *versions)
        latest = {registry_server.LATEST_KEY: versions[-1]} if versions else {}
        return deployed(relations=[consumer], peer_data={**latest, **(peers or {})}, **kwargs)

    return make


# --- create-version ------------------------------------------------------------------------------


def test_create_version_waits_for_its_job_and_returns_the_version(
    ctx, registry_with, consumer, workload, data_dir
):
    state = registry_with("v1", config={"approach": "data-centric"})
    out = _run(ctx, state, "create-version", source=SOURCE, message="new photos")
    [job_id] = job_ids(data_dir)
    assert ctx.action_results == {
        "job": job_id,
        "state": "succeeded",
        "version": "v2",
        "parent": "v1",
        "commit": COMMIT,
        "files": 3,
        "bytes": 42,
        "source": "upload",
    }
    assert ctx.action_logs == [f"job {job_id} started"]
    assert provided(out, consumer)["latest_version"] == "v2"
    assert out.unit_status == testing.ActiveStatus("latest v2")
    assert unreported(data_dir) == []  # acted on in the action
    assert not job_running(out)
    assert 0 < workload.slept < 300


def test_create_version_runs_the_workload_cli_as_the_service_user(ctx, registry_with, data_dir):
    state = registry_with(config={"approach": "data-centric"})
    out = _run(ctx, state, "create-version", source=SOURCE, message="new photos", wait=False)
    assert _job_command(out) == [
        WORKLOAD, "dataset", "create-version",
        "--source", SOURCE, "--source-kind", "upload", "--message", "new photos",
        "--approach", "data-centric",
    ]  # fmt: skip
    job = out.get_container(charm.CONTAINER).plan.services["registry-job"]
    assert (job.user, job.group, job.working_dir) == ("_daemon_", "_daemon_", STATE_DIR)
    job_id = running_job_id(out.get_container(charm.CONTAINER))
    assert job_record(data_dir, job_id)["params"] == {"source": SOURCE}
    env = (data_dir / "jobs" / job_id / "env").read_text()
    assert f"export AWS_SECRET_ACCESS_KEY={WRITER_KEYS['secret-key']}" in env
    assert f"export MLOPS_REGISTRY_URL={STATE_DIR}/git/registry.git" in env
    assert "export MLOPS_DVC_ENDPOINT_URL=http://127.0.0.1:9001" in env


def test_create_version_from_s3_reads_the_registrys_own_s3_server(ctx, registry_with):
    out = _run(ctx, registry_with(), "create-version", source="s3://incoming/batch-7", wait=False)
    assert _job_command(out)[3:] == [
        "--source", "s3://incoming/batch-7", "--source-kind", "upload",
        "--source-endpoint-url", "http://127.0.0.1:9001",
    ]  # fmt: skip


def test_create_version_without_waiting_returns_the_running_job(
    ctx, registry_with, consumer, workload, data_dir
):
    out = _run(ctx, registry_with(), "create-version", source=SOURCE, wait=False)
    [job_id] = job_ids(data_dir)
    assert ctx.action_results == {
        "job": job_id,
        "state": "running",
        "message": "still running: its end shows in list-jobs and in the unit's status",
    }
    assert workload.slept == 0
    assert job_running(out)
    assert "latest_version" not in provided(out, consumer)


def test_a_job_longer_than_the_wait_returns_its_id(ctx, registry_with, workload, data_dir):
    workload.outcomes["create-version"] = JobOutcome(seconds=600)
    workload.min_sleep = 10.0
    out = _run(ctx, registry_with(), "create-version", source=SOURCE)
    assert ctx.action_results["state"] == "running"
    assert ctx.action_results["job"] == job_ids(data_dir)[0]
    assert 300 <= workload.slept <= 310
    assert job_running(out)


def test_a_failed_create_version_says_why_and_publishes_nothing(
    ctx, registry_with, consumer, workload, data_dir
):
    workload.outcomes["create-version"] = failed(
        "cannot upload the data to the DVC remote: Could not connect to the endpoint URL"
    )
    with pytest.raises(testing.ActionFailed) as failure:
        _run(ctx, registry_with("v1"), "create-version", source=SOURCE)
    assert failure.value.message == (
        "create-version failed: cannot upload the data to the DVC remote: "
        "Could not connect to the endpoint URL"
    )
    out = failure.value.state
    assert isinstance(out, testing.State)
    assert provided(out, consumer)["latest_version"] == "v1"
    assert unreported(data_dir) == []


def test_a_source_identical_to_the_latest_fails(ctx, registry_with, workload):
    workload.outcomes["create-version"] = failed("no change: the source is identical to v1")
    message = _refused(ctx, registry_with("v1"), "create-version", source=SOURCE)
    assert message == "create-version failed: no change: the source is identical to v1"


@pytest.mark.parametrize("kind", ["labelling-export", "augmentation"])
def test_create_version_records_the_source_kind(ctx, registry_with, kind):
    _run(ctx, registry_with(), "create-version", source=SOURCE, **{"source-kind": kind})
    assert ctx.action_results["source"] == kind


def test_a_busy_slot_fails_the_action_with_the_running_job(ctx, registry_with, data_dir):
    push_tags(data_dir, "v1")
    state = ctx.run(ctx.on.update_status(), registry_with())
    [validation] = job_ids(data_dir)
    message = _refused(ctx, state, "create-version", source=SOURCE)
    assert message == f"job {validation} (validate-version) is running; wait for it (list-jobs)"
    assert job_kinds(data_dir) == ["validate-version"]


# --- rollback ------------------------------------------------------------------------------------


def test_rollback_creates_the_next_version_with_older_data(ctx, registry_with, consumer, data_dir):
    state = registry_with("v1", "v2", config={"approach": "model-centric"})
    out = _run(ctx, state, "rollback", to="v1", message="undo v2")
    assert ctx.action_results["version"] == "v3"
    assert ctx.action_results["parent"] == "v2"
    assert ctx.action_results["source"] == "rollback"
    assert provided(out, consumer)["latest_version"] == "v3"
    [job_id] = job_ids(data_dir)
    assert job_record(data_dir, job_id)["params"] == {"to": "v1"}


def test_rollback_passes_its_target_and_message_to_the_cli(ctx, registry_with):
    state = registry_with("v1", "v2", config={"approach": "model-centric"})
    out = _run(ctx, state, "rollback", to="v1", message="undo v2", wait=False)
    assert _job_command(out)[2:] == [
        "rollback", "--to", "v1", "--message", "undo v2", "--approach", "model-centric"
    ]  # fmt: skip
    assert ctx.action_results["state"] == "running"


def test_a_rollback_to_a_missing_version_fails_with_the_clis_reason(ctx, registry_with, workload):
    workload.outcomes["rollback"] = failed("no version v9 in the registry")
    message = _refused(ctx, registry_with("v1"), "rollback", to="v9")
    assert message == "rollback failed: no version v9 in the registry"


# --- list-versions, diff-versions: short CLI runs ------------------------------------------------


def test_list_versions_returns_them_with_the_pinned_one(ctx, registry_with):
    listed = [listed_version("v1"), listed_version("v2", message="more photos")]
    state = registry_with("v1", "v2", peers={registry_server.PINNED_KEY: "v1"})
    state = _with_exec(state, dataset_exec("list-versions", {"versions": listed}))
    _run(ctx, state, "list-versions")
    assert ctx.action_results == {
        "count": 2,
        "latest": "v2",
        "pinned": "v1",
        "versions": json.dumps(listed),
    }
    [run] = [e for e in ctx.exec_history[charm.CONTAINER] if "list-versions" in e.command]
    assert run.command == [WORKLOAD, "dataset", "list-versions"]
    assert (run.user, run.group, run.working_dir) == ("_daemon_", "_daemon_", STATE_DIR)
    assert run.environment["AWS_ACCESS_KEY_ID"] == WRITER_KEYS["access-key"]
    assert run.environment["MLOPS_REGISTRY_WORKSPACE"] == f"{STATE_DIR}/workspace/registry"


def test_list_versions_fails_with_the_clis_reason(ctx, registry_with):
    state = _with_exec(
        registry_with(), dataset_exec("list-versions", fail="another command holds the lock")
    )
    assert _refused(ctx, state, "list-versions") == "another command holds the lock"


def test_a_cli_that_prints_no_json_fails_the_action(ctx, registry_with):
    garbled = testing.Exec([WORKLOAD, "dataset", "list-versions"], stdout="Traceback\n")
    state = _with_exec(registry_with(), garbled)
    assert _refused(ctx, state, "list-versions") == "list-versions gave no JSON result"


DIFF = {
    "from": "v1",
    "to": "v2",
    "added": ["data/c.jpg"],
    "removed": [],
    "modified": ["data/a.jpg"],
    "added_bytes": 10,
    "removed_bytes": 0,
    "modified_bytes": 5,
}


def test_diff_versions_returns_paths_and_bytes(ctx, registry_with):
    state = _with_exec(registry_with("v1", "v2"), dataset_exec("diff-versions", DIFF))
    _run(ctx, state, "diff-versions", **{"from": "v1", "to": "v2"})
    assert ctx.action_results == {
        "from": "v1",
        "to": "v2",
        "added": '["data/c.jpg"]',
        "removed": "[]",
        "modified": '["data/a.jpg"]',
        "added-bytes": 10,
        "removed-bytes": 0,
        "modified-bytes": 5,
    }
    assert workload_calls(ctx, "diff-versions") == [
        [WORKLOAD, "dataset", "diff-versions", "v1", "v2"]
    ]


def test_diff_versions_of_an_unknown_version_fails_with_the_clis_reason(ctx, registry_with):
    failing = dataset_exec("diff-versions", fail="no version v9 in the registry")
    state = _with_exec(registry_with("v1"), failing)
    message = _refused(ctx, state, "diff-versions", **{"from": "v1", "to": "v9"})
    assert message == "no version v9 in the registry"


# --- list-jobs -----------------------------------------------------------------------------------


def test_list_jobs_shows_every_job_newest_first(ctx, registry_with, workload, data_dir):
    workload.outcomes["create-version"] = failed("the source /var/lib/registry/x holds no files")
    with pytest.raises(testing.ActionFailed) as failure:
        _run(ctx, registry_with(), "create-version", source=f"{STATE_DIR}/x")
    state = failure.value.state
    assert isinstance(state, testing.State)
    workload.outcomes.clear()
    state = _run(ctx, state, "create-version", source=SOURCE)
    state = _run(ctx, state, "rollback", to="v1", wait=False)
    _run(ctx, state, "list-jobs")
    first, second, third = job_ids(data_dir)
    assert ctx.action_results["count"] == 3
    assert ctx.action_results["running"] == third
    jobs = json.loads(ctx.action_results["jobs"])
    assert [(j["id"], j["kind"], j["state"]) for j in jobs] == [
        (third, "rollback", "running"),
        (second, "create-version", "succeeded"),
        (first, "create-version", "failed"),
    ]
    assert jobs[2]["error"] == "the source /var/lib/registry/x holds no files"
    assert jobs[2]["params"] == {"source": f"{STATE_DIR}/x"}
    assert "finished" in jobs[1] and "finished" not in jobs[0]


# --- every action refuses to run where it cannot -------------------------------------------------


class TestActions(ActionCases):
    """The action tests data-versioning shares (tests/registry_action_cases.py)."""


@pytest.fixture
def commands_run(ctx) -> Callable[[], list]:
    """What the charm ran in the registry container since it came up (Pebble execs)."""
    return lambda: ctx.exec_history.get(charm.CONTAINER, [])


ACTIONS = {name: action_params(params, STATE_DIR) for name, params in SHARED_ACTIONS.items()}


@pytest.mark.parametrize(("action", "params"), ACTIONS.items(), ids=ACTIONS.keys())
def test_every_action_refuses_before_pebble_is_ready(
    ctx, make_state, make_container, action, params
):
    state = make_state(container=make_container(can_connect=False))
    assert _refused(ctx, state, action, **params) == (
        "the registry is not ready: waiting for Pebble in the registry container"
    )


@pytest.mark.parametrize(("action", "params"), ACTIONS.items(), ids=ACTIONS.keys())
def test_no_action_replans_or_restarts_the_services(
    ctx, registry_with, service_changes, action, params
):
    state = _with_exec(registry_with("v1", "v2"), dataset_exec("diff-versions", DIFF))
    service_changes.clear()
    _run(ctx, state, action, **params)
    # A job's one-shot service is started; the registry's services are left alone.
    assert service_changes == (["start"] if action in ("create-version", "rollback") else [])
