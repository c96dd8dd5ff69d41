"""The actions: the cases shared with the machine charm, and the jobs they run under Pebble."""

from __future__ import annotations

import dataclasses
import json
import stat

import pytest
from ops import pebble, testing
from workload_jobs import LATER, WHILE_WAITED, Outcome

from mlops_charms import labelling_server
from tests.labelling_action_cases import ActionCases
from tests.labelling_testing import (
    ADMIN_TOKEN,
    DATA_DIR,
    REGISTRY_PASSWORD,
    REGISTRY_URL,
    REGISTRY_USER,
    S3_ENDPOINT,
    database_relation,
    database_secret,
    dataset_relation,
    migrated_peers,
    registry_secret,
    relabel_relation,
)

CONTAINER = "label-studio"
JOB_SERVICE = "labelling-job"
STILL_RUNNING = "still running: its end shows in list-jobs and in the unit's status"
IMPORT = {"version": "v1", "project": "reviews", "preset": "text-classification", "labels": "a"}
IMPORTED = {
    "project": "reviews",
    "project_id": 3,
    "version": "v1",
    "items": 6,
    "tasks_created": 6,
    "tasks_total": 6,
    "skipped_files": 3,
    "overlap": 2,
}
EXPORTED = {
    "version": "v2",
    "parent": "v1",
    "project": "reviews",
    "labels_path": "labels/reviews.jsonl",
    "tasks_exported": 6,
    "annotations": 12,
    "commit": "0123abcd",
}
REPORT = {
    "project": "reviews",
    "tasks": 6,
    "krippendorff_alpha": 0.125,
    "mean_observed_agreement": 0.5,
    "threshold": 0.5,
    "inconsistent": [{"item": "texts/item-1.txt", "labels": []}],
    "ambiguous": [],
}


@pytest.fixture
def registry_state(make_state):
    """A unit related to the registry, which granted write access."""

    def make(**kwargs) -> testing.State:
        secret = registry_secret()
        return make_state(relations={dataset_relation(secret)}, secrets={secret}, **kwargs)

    return make


class TestActions(ActionCases):
    """The shared action cases, on labelling-k8s."""


def _arg(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def _failure(ctx, event, state) -> str:
    with pytest.raises(testing.ActionFailed) as failure:
        ctx.run(event, state)
    return failure.value.message


# --- import-version ------------------------------------------------------------------------


def test_import_version_runs_a_job_with_the_registry_credentials(
    ctx, registry_state, workload_jobs, data_dir
):
    workload_jobs.succeeds("import-version", IMPORTED)
    params = {**IMPORT, "labels": "positive, negative"}
    state = ctx.run(
        ctx.on.action("import-version", params=params), registry_state(config={"overlap": 2})
    )
    (run,) = workload_jobs.runs
    assert run.command[:3] == ["/opt/mlops/bin/mlops-workload", "labelling", "import-version"]
    assert (_arg(run.command, "--version"), _arg(run.command, "--project")) == ("v1", "reviews")
    assert _arg(run.command, "--preset") == "text-classification"
    assert _arg(run.command, "--labels") == "positive,negative"
    assert _arg(run.command, "--overlap") == "2"  # from config
    env = run.environment
    assert (env["MLOPS_REGISTRY_URL"], env["MLOPS_DVC_ENDPOINT_URL"]) == (
        REGISTRY_URL,
        S3_ENDPOINT,
    )
    assert (env["MLOPS_REGISTRY_USERNAME"], env["MLOPS_REGISTRY_PASSWORD"]) == (
        REGISTRY_USER,
        REGISTRY_PASSWORD,
    )
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == (
        REGISTRY_USER,
        REGISTRY_PASSWORD,
    )
    assert env["MLOPS_REGISTRY_WORKSPACE"] == f"{DATA_DIR}/registry-workspace"
    assert env["LABEL_STUDIO_API_KEY"] == ADMIN_TOKEN
    assert "AWS_DEFAULT_REGION" not in env  # the registry's own remote has no region
    assert ctx.action_results == {
        "job": run.id,
        "project": "reviews",
        "project-id": "3",
        "version": "v1",
        "items": "6",
        "tasks-created": "6",
        "tasks-total": "6",
        "skipped-files": "3",
        "overlap": "2",
    }
    # The credentials are in the job's private env file only.
    env_file = data_dir / "jobs" / run.id / "env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert REGISTRY_PASSWORD in env_file.read_text()
    assert REGISTRY_PASSWORD not in state.get_container(CONTAINER).plan.to_yaml()
    record = json.loads((data_dir / "jobs" / run.id / "job.json").read_text())
    assert record["params"] == {"project": "reviews", "version": "v1"}


def test_import_version_passes_a_custom_label_config(ctx, registry_state, workload_jobs):
    workload_jobs.succeeds("import-version", IMPORTED)
    config = '<View><Text name="t" value="$text"/><Choices name="c" toName="t"/></View>'
    params = {"version": "v1", "project": "reviews", "label-config": config, "overlap": 3}
    ctx.run(ctx.on.action("import-version", params=params), registry_state())
    command = workload_jobs.last.command
    assert _arg(command, "--label-config") == config
    assert _arg(command, "--overlap") == "3"
    assert "--preset" not in command


def test_a_failed_job_fails_the_action_with_its_one_line(ctx, registry_state, workload_jobs):
    workload_jobs.fails("import-version", "unknown version v9: the registry has no such tag")
    message = _failure(
        ctx, ctx.on.action("import-version", params={**IMPORT, "version": "v9"}), registry_state()
    )
    assert message == "import-version failed: unknown version v9: the registry has no such tag"


def test_import_version_of_another_version_into_a_project_is_refused(
    ctx, registry_state, workload_jobs
):
    # The workload refuses (see tests/workload/labelling/test_reimport.py); its reason reaches
    # the operator as the action's failure.
    workload_jobs.fails(
        "import-version", "project 'reviews' labels v1: import v2 into a new project"
    )
    message = _failure(
        ctx, ctx.on.action("import-version", params={**IMPORT, "version": "v2"}), registry_state()
    )
    assert message == (
        "import-version failed: project 'reviews' labels v1: import v2 into a new project"
    )


def test_a_job_printing_no_json_fails_the_action(ctx, registry_state, workload_jobs):
    workload_jobs.prints("import-version", "imported\n")
    message = _failure(ctx, ctx.on.action("import-version", params=IMPORT), registry_state())
    assert message == "import-version failed: the job printed no JSON result"


def test_a_failed_job_without_a_reason_gives_its_exit_code(ctx, registry_state, workload_jobs):
    workload_jobs.outcomes["import-version"] = Outcome(exit_code=137)  # killed, silent
    message = _failure(ctx, ctx.on.action("import-version", params=IMPORT), registry_state())
    assert message == "import-version failed: exit code 137"


def test_an_action_waits_for_a_job_that_ends_while_it_waits(ctx, registry_state, workload_jobs):
    workload_jobs.succeeds("import-version", IMPORTED, ends=WHILE_WAITED)
    state = ctx.run(ctx.on.action("import-version", params=IMPORT), registry_state())
    assert ctx.action_results is not None
    assert ctx.action_results["tasks-created"] == "6"
    statuses = state.get_container(CONTAINER).service_statuses
    assert statuses[JOB_SERVICE] == pebble.ServiceStatus.INACTIVE


def test_an_action_that_does_not_wait_returns_the_job_at_once(
    ctx, registry_state, workload_jobs, data_dir
):
    workload_jobs.succeeds("import-version", IMPORTED, ends=LATER)
    state = ctx.run(
        ctx.on.action("import-version", params={**IMPORT, "wait": False}), registry_state()
    )
    job_id = workload_jobs.last.id
    assert ctx.action_results == {"job": job_id, "state": "running", "message": STILL_RUNNING}
    assert ctx.action_logs == [f"job {job_id} started"]

    # Its end: the notice's hook takes note of it once; list-jobs shows how it ended.
    state, notice = workload_jobs.end(state)
    state = ctx.run(ctx.on.pebble_custom_notice(state.get_container(CONTAINER), notice), state)
    assert list((data_dir / "jobs" / "unreported").iterdir()) == []
    ctx.run(ctx.on.action("list-jobs"), state)
    assert ctx.action_results is not None
    (listed,) = json.loads(ctx.action_results["jobs"])
    assert (listed["id"], listed["state"]) == (job_id, "succeeded")


def test_a_job_outlasting_the_wait_is_returned_running(
    ctx, registry_state, workload_jobs, monkeypatch
):
    monkeypatch.setattr(labelling_server, "ACTION_WAIT", 0.0)
    workload_jobs.succeeds("export-annotations", EXPORTED, ends=LATER)
    ctx.run(ctx.on.action("export-annotations", params={"project": "reviews"}), registry_state())
    assert ctx.action_results == {
        "job": workload_jobs.last.id,
        "state": "running",
        "message": STILL_RUNNING,
    }


def test_a_failed_job_reported_to_its_action_is_not_reported_again(
    ctx, registry_state, workload_jobs, data_dir
):
    workload_jobs.fails("import-version", "unknown version v9")
    state = registry_state()
    with pytest.raises(testing.ActionFailed):
        ctx.run(ctx.on.action("import-version", params=IMPORT), state)
    assert list((data_dir / "jobs" / "unreported").iterdir()) == []
    state, notice = workload_jobs.deliver(state)
    ctx.run(ctx.on.pebble_custom_notice(state.get_container(CONTAINER), notice), state)
    assert not [line for line in ctx.juju_log if "unknown version v9" in line.message]


def test_the_end_of_a_job_no_action_waited_for_is_logged_once(ctx, registry_state, workload_jobs):
    workload_jobs.fails("import-version", "unknown version v9", ends=LATER)
    state = ctx.run(
        ctx.on.action("import-version", params={**IMPORT, "wait": False}), registry_state()
    )
    state, notice = workload_jobs.end(state)
    state = ctx.run(ctx.on.pebble_custom_notice(state.get_container(CONTAINER), notice), state)
    job_id = workload_jobs.last.id
    logged = f"job {job_id} (import-version) failed: unknown version v9"
    assert [line.level for line in ctx.juju_log if line.message == logged] == ["WARNING"]
    ctx.run(ctx.on.update_status(), state)
    assert [line.level for line in ctx.juju_log if line.message == logged] == ["WARNING"]


def test_an_action_on_a_busy_slot_fails_naming_the_running_job(ctx, registry_state, workload_jobs):
    workload_jobs.succeeds("relabel", {"queued": 1}, ends=LATER)
    workload_jobs.succeeds("import-version", IMPORTED)
    relation = relabel_relation({"batch_id": "b1", "items": ["a.txt"], "project": "reviews"})
    state_in = registry_state()
    state_in = dataclasses.replace(state_in, relations={*state_in.relations, relation})
    busy = ctx.run(ctx.on.relation_changed(relation), state_in)
    relabel_job = workload_jobs.last.id
    message = _failure(ctx, ctx.on.action("import-version", params=IMPORT), busy)
    assert message == f"job {relabel_job} (relabel) is running; wait for it (list-jobs)"
    assert [run.command[2] for run in workload_jobs.runs] == ["relabel"]


def test_actions_fail_without_pebble(ctx, registry_state, make_container, workload_jobs):
    state = registry_state(container=make_container(can_connect=False))
    message = _failure(ctx, ctx.on.action("import-version", params=IMPORT), state)
    assert message == "the label-studio container is not ready yet"


# --- export-annotations --------------------------------------------------------------------


def test_export_annotations_returns_the_new_version(ctx, registry_state, workload_jobs):
    workload_jobs.succeeds("export-annotations", EXPORTED)
    params = {"project": "reviews", "message": "first labels"}
    ctx.run(ctx.on.action("export-annotations", params=params), registry_state())
    run = workload_jobs.last
    assert run.command[2:] == [
        "export-annotations",
        "--project",
        "reviews",
        "--message",
        "first labels",
    ]
    assert run.environment["MLOPS_REGISTRY_PASSWORD"] == REGISTRY_PASSWORD
    assert ctx.action_results is not None
    assert (ctx.action_results["version"], ctx.action_results["parent"]) == ("v2", "v1")
    assert ctx.action_results["labels-path"] == "labels/reviews.jsonl"


def test_export_annotations_without_a_message_passes_none(ctx, registry_state, workload_jobs):
    workload_jobs.succeeds("export-annotations", {**EXPORTED, "parent": None})
    ctx.run(ctx.on.action("export-annotations", params={"project": "reviews"}), registry_state())
    assert "--message" not in workload_jobs.last.command
    assert ctx.action_results is not None
    assert ctx.action_results["parent"] == ""


def test_export_annotations_reports_no_annotations(ctx, registry_state, workload_jobs):
    workload_jobs.fails("export-annotations", "project 'reviews' has no annotations")
    message = _failure(
        ctx, ctx.on.action("export-annotations", params={"project": "reviews"}), registry_state()
    )
    assert message == "export-annotations failed: project 'reviews' has no annotations"


# --- consistency-report --------------------------------------------------------------------


def test_consistency_report_uses_the_configured_threshold_and_lists_tasks(
    ctx, make_state, workload_jobs
):
    workload_jobs.succeeds("consistency-report", REPORT)
    state = make_state(config={"consistency-threshold": 0.75})
    ctx.run(ctx.on.action("consistency-report", params={"project": "reviews"}), state)
    run = workload_jobs.last
    assert _arg(run.command, "--threshold") == "0.75"
    assert "--requeue" not in run.command
    assert "MLOPS_REGISTRY_PASSWORD" not in run.environment  # needs no registry
    results = ctx.action_results
    assert results is not None
    assert results["krippendorff-alpha"] == "0.125"
    assert (results["inconsistent-count"], results["ambiguous-count"]) == ("1", "0")
    assert json.loads(results["inconsistent"]) == REPORT["inconsistent"]
    assert json.loads(results["ambiguous"]) == []


def test_consistency_report_requeues_on_request(ctx, make_state, workload_jobs):
    requeue = {
        "relabel_project": "reviews re-label",
        "queued": 1,
        "already_queued": 0,
        "missing": [],
    }
    workload_jobs.succeeds("consistency-report", {**REPORT, "requeue": requeue})
    params = {"project": "reviews", "threshold": 0.9, "requeue": True}
    ctx.run(ctx.on.action("consistency-report", params=params), make_state())
    command = workload_jobs.last.command
    assert _arg(command, "--threshold") == "0.9"
    assert "--requeue" in command
    assert ctx.action_results is not None
    assert ctx.action_results["requeue"] == {
        "relabel-project": "reviews re-label",
        "queued": "1",
        "already-queued": "0",
        "missing": "[]",
        "missing-count": "0",
    }


def test_consistency_report_fails_for_an_unknown_project(ctx, make_state, workload_jobs):
    workload_jobs.fails("consistency-report", "unknown project 'nope'")
    message = _failure(
        ctx, ctx.on.action("consistency-report", params={"project": "nope"}), make_state()
    )
    assert message == "consistency-report failed: unknown project 'nope'"


# --- list-jobs -----------------------------------------------------------------------------


def test_list_jobs_lists_every_job_newest_first_with_its_end(ctx, registry_state, workload_jobs):
    workload_jobs.fails("consistency-report", "unknown project 'nope'")
    workload_jobs.succeeds("import-version", IMPORTED, ends=LATER)
    state = registry_state()
    with pytest.raises(testing.ActionFailed):
        ctx.run(ctx.on.action("consistency-report", params={"project": "nope"}), state)
    params = {**IMPORT, "wait": False}
    state = ctx.run(ctx.on.action("import-version", params=params), state)
    failed, running = workload_jobs.runs

    ctx.run(ctx.on.action("list-jobs"), state)
    results = ctx.action_results
    assert results is not None
    assert (results["count"], results["running"]) == (2, running.id)
    listed = json.loads(results["jobs"])
    assert [(job["id"], job["kind"], job["state"]) for job in listed] == [
        (running.id, "import-version", "running"),
        (failed.id, "consistency-report", "failed"),
    ]
    assert listed[0]["params"] == {"project": "reviews", "version": "v1"}
    assert listed[1]["error"] == "unknown project 'nope'"
    assert "finished" in listed[1] and "finished" not in listed[0]


def test_list_jobs_shows_a_job_lost_with_its_container_as_failed(
    ctx, registry_state, workload_jobs
):
    workload_jobs.succeeds("import-version", IMPORTED, ends=LATER)
    state = ctx.run(
        ctx.on.action("import-version", params={**IMPORT, "wait": False}), registry_state()
    )
    # The container restarted: Pebble's plan is new, the job's folder has no exit.
    container = dataclasses.replace(state.get_container(CONTAINER), layers={}, service_statuses={})
    ctx.run(ctx.on.action("list-jobs"), dataclasses.replace(state, containers={container}))
    assert ctx.action_results is not None
    (listed,) = json.loads(ctx.action_results["jobs"])
    assert (listed["state"], listed["error"]) == (
        "failed",
        "the job ended without recording a result",
    )


def test_list_jobs_fails_without_pebble(ctx, make_state, make_container):
    message = _failure(
        ctx, ctx.on.action("list-jobs"), make_state(container=make_container(can_connect=False))
    )
    assert message == "the label-studio container is not ready yet"


def test_a_follower_takes_note_of_the_end_of_its_own_action_s_job(
    ctx, make_state, workload_jobs, data_dir
):
    workload_jobs.fails("consistency-report", "unknown project 'nope'", ends=LATER)
    secret = database_secret()
    relation = database_relation(secret)
    state = make_state(
        leader=False, planned_units=2, relations={relation, migrated_peers()}, secrets={secret}
    )
    params = {"project": "nope", "wait": False}
    state = ctx.run(ctx.on.action("consistency-report", params=params), state)
    state, notice = workload_jobs.end(state)
    ctx.run(ctx.on.pebble_custom_notice(state.get_container(CONTAINER), notice), state)
    assert list((data_dir / "jobs" / "unreported").iterdir()) == []
