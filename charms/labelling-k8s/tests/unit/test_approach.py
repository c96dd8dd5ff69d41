"""mlops-approach: annotators per task, the export gate, agreement reports and acknowledgements."""

from __future__ import annotations

import dataclasses
import json

import pytest
from ops import testing
from workload_jobs import LATER

from mlops_charms import label_studio
from mlops_charms.label_studio import ProjectCounts
from mlops_charms.rest import RESTError
from tests.labelling_testing import (
    approach_relation,
    dataset_relation,
    registry_secret,
    relabel_relation,
)

CONTAINER = "label-studio"
SERVING = "serving at http://labelling-k8s.mlops.svc.cluster.local:8080"
IMPORT = {"version": "v1", "project": "reviews", "preset": "text-classification", "labels": "a"}
EXPORTED = {
    "version": "v2",
    "parent": "v1",
    "project": "reviews",
    "labels_path": "labels/reviews.jsonl",
    "tasks_exported": 6,
    "annotations": 12,
    "skipped_annotations": 1,
    "krippendorff_alpha": 0.91,
    "compared_tasks": 5,
    "agreement_threshold": 0.8,
    "forced": False,
    "commit": "0123abcd",
}
REPORT = {
    "project": "reviews",
    "tasks": 6,
    "annotated_tasks": 6,
    "compared_tasks": 4,
    "krippendorff_alpha": 0.125,
    "inconsistent": [],
    "ambiguous": [],
    "annotations": 12,
    "skipped_annotations": 1,
}
REFUSED = (
    "Krippendorff's alpha 0.125 is below the agreement threshold 0.8: annotators disagree on "
    "texts/item-1.txt, texts/item-5.txt (consistency-report lists every task); fix them, or "
    "export with force=true"
)
REVIEWS = ProjectCounts("reviews", imported=True, annotations=12, skipped_annotations=1)


def _arg(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def _failure(ctx, event, state) -> str:
    with pytest.raises(testing.ActionFailed) as failure:
        ctx.run(event, state)
    return failure.value.message


def _acknowledged(state: testing.State, relation: testing.Relation) -> dict:
    databag = state.get_relation(relation.id).local_app_data
    return {key: json.loads(value) for key, value in databag.items()}


@pytest.fixture
def registry_state(make_state):
    """A unit related to the registry (write access) and, if given, to the approach switch."""

    def make(*relations: testing.Relation, **kwargs) -> testing.State:
        secret = registry_secret()
        return make_state(
            relations={dataset_relation(secret), *relations}, secrets={secret}, **kwargs
        )

    return make


@pytest.fixture
def projects(monkeypatch: pytest.MonkeyPatch) -> list[list[ProjectCounts]]:
    """Label Studio's answer counts, as the one request of an update-status reads them.

    Each request pops the next answer; a test that expects none leaves the list empty.
    """
    answers: list[list[ProjectCounts]] = []

    def project_counts(_settings) -> list[ProjectCounts]:
        assert answers, "the charm asked Label Studio for the projects' counts"
        return answers.pop(0)

    monkeypatch.setattr(label_studio, "project_counts", project_counts)
    return answers


# --- annotators per task ------------------------------------------------------------------------


def test_data_centric_imports_get_the_policys_annotators_per_task(
    ctx, registry_state, workload_jobs
):
    workload_jobs.succeeds("import-version", {"project": "reviews"})
    state = registry_state(approach_relation(), config={"overlap": 2})
    ctx.run(ctx.on.action("import-version", params=IMPORT), state)
    assert _arg(workload_jobs.last.command, "--overlap") == "3"


def test_an_overlap_param_wins_over_the_policy(ctx, registry_state, workload_jobs):
    workload_jobs.succeeds("import-version", {"project": "reviews"})
    params = {**IMPORT, "overlap": 5}
    ctx.run(ctx.on.action("import-version", params=params), registry_state(approach_relation()))
    assert _arg(workload_jobs.last.command, "--overlap") == "5"


def test_model_centric_imports_keep_the_overlap_option(ctx, registry_state, workload_jobs):
    workload_jobs.succeeds("import-version", {"project": "reviews"})
    state = registry_state(approach_relation("model-centric"), config={"overlap": 2})
    ctx.run(ctx.on.action("import-version", params=IMPORT), state)
    assert _arg(workload_jobs.last.command, "--overlap") == "2"


def test_data_centric_relabel_projects_get_the_policys_annotators_too(
    ctx, make_state, workload_jobs
):
    workload_jobs.succeeds("relabel", {"queued": 1}, ends=LATER)
    batch = {"batch_id": "b1", "items": ["texts/a.txt"], "project": "reviews"}
    relabel = relabel_relation(batch)
    ctx.run(ctx.on.relation_changed(relabel), make_state(relations={relabel, approach_relation()}))
    assert _arg(workload_jobs.last.command, "--overlap") == "3"


def test_without_the_approach_relabel_projects_take_their_sources_annotators(
    ctx, make_state, workload_jobs
):
    workload_jobs.succeeds("relabel", {"queued": 1}, ends=LATER)
    relabel = relabel_relation({"batch_id": "b1", "items": ["texts/a.txt"], "project": "reviews"})
    ctx.run(ctx.on.relation_changed(relabel), make_state(relations={relabel}))
    assert "--overlap" not in workload_jobs.last.command


def test_data_centric_requeues_into_a_relabel_project_with_the_policys_annotators(
    ctx, make_state, workload_jobs
):
    workload_jobs.succeeds("consistency-report", REPORT)
    params = {"project": "reviews", "requeue": True}
    state = make_state(relations={approach_relation()})
    ctx.run(ctx.on.action("consistency-report", params=params), state)
    assert _arg(workload_jobs.last.command, "--overlap") == "3"


# --- the export gate ----------------------------------------------------------------------------


def test_data_centric_exports_pass_the_gate_to_their_job(
    ctx, registry_state, workload_jobs, data_dir
):
    workload_jobs.succeeds("export-annotations", EXPORTED)
    export = ctx.on.action("export-annotations", params={"project": "reviews"})
    ctx.run(export, registry_state(approach_relation()))
    run = workload_jobs.last
    assert _arg(run.command, "--agreement-threshold") == "0.8"
    assert "--force" not in run.command
    record = json.loads((data_dir / "jobs" / run.id / "job.json").read_text())
    assert record["params"] == {"project": "reviews", "agreement-threshold": "0.8"}


@pytest.mark.parametrize("mode", ["model-centric", None])
def test_without_data_centric_exports_have_no_gate_even_forced(
    ctx, registry_state, workload_jobs, mode
):
    workload_jobs.succeeds("export-annotations", {**EXPORTED, "agreement_threshold": None})
    relations = (approach_relation(mode),) if mode else ()
    params = {"project": "reviews", "force": True}
    ctx.run(ctx.on.action("export-annotations", params=params), registry_state(*relations))
    command = workload_jobs.last.command
    assert "--agreement-threshold" not in command
    assert "--force" not in command


def test_force_exports_below_the_gate(ctx, registry_state, workload_jobs):
    workload_jobs.succeeds("export-annotations", {**EXPORTED, "forced": True})
    export = ctx.on.action("export-annotations", params={"project": "reviews", "force": True})
    ctx.run(export, registry_state(approach_relation()))
    assert "--force" in workload_jobs.last.command
    assert ctx.action_results is not None
    assert (ctx.action_results["forced"], ctx.action_results["krippendorff-alpha"]) == (
        "True",
        "0.91",
    )


def test_force_is_a_boolean_juju_checks_and_off_by_default(charm_spec):
    force = charm_spec["actions"]["export-annotations"]["params"]["force"]
    assert (force["type"], force["default"]) == ("boolean", False)
    assert charm_spec["actions"]["export-annotations"]["additionalProperties"] is False


def test_an_export_the_gate_refuses_fails_in_one_line(ctx, registry_state, workload_jobs):
    workload_jobs.fails("export-annotations", REFUSED)
    export = ctx.on.action("export-annotations", params={"project": "reviews"})
    message = _failure(ctx, export, registry_state(approach_relation()))
    assert message == f"export-annotations failed: {REFUSED}"


def test_an_export_reports_its_alpha(ctx, registry_state, workload_jobs):
    workload_jobs.succeeds("export-annotations", EXPORTED)
    export = ctx.on.action("export-annotations", params={"project": "reviews"})
    ctx.run(export, registry_state(approach_relation()))
    assert ctx.action_results is not None
    results = ctx.action_results
    assert (results["krippendorff-alpha"], results["agreement-threshold"]) == ("0.91", "0.8")
    assert results["forced"] == "False"


# --- acknowledgements ---------------------------------------------------------------------------


def test_the_leader_acknowledges_the_revision_once_label_studio_serves(ctx, make_state):
    relation = approach_relation(revision=4)
    state = ctx.run(ctx.on.relation_changed(relation), make_state(relations={relation}))
    assert _acknowledged(state, relation) == {"service": "labelling", "applied_revision": 4}


def test_until_label_studio_serves_the_previous_revision_stays_acknowledged(
    ctx, make_state, healthy
):
    healthy["up"] = False
    relation = dataclasses.replace(
        approach_relation(revision=5),
        local_app_data={"service": '"labelling"', "applied_revision": "4"},
    )
    state = ctx.run(ctx.on.relation_changed(relation), make_state(relations={relation}))
    assert _acknowledged(state, relation) == {
        "service": "labelling",
        "applied_revision": 4,
        "reason": "waiting for Label Studio",
        "waiting": True,
    }


def test_a_first_revision_waits_for_label_studio_with_nothing_applied(
    ctx, make_state, make_container
):
    relation = approach_relation(revision=1)
    state_in = make_state(relations={relation}, container=make_container(can_connect=False))
    state = ctx.run(ctx.on.relation_created(relation), state_in)
    assert _acknowledged(state, relation) == {
        "service": "labelling",
        "applied_revision": 0,
        "reason": "waiting for Label Studio",
        "waiting": True,
    }


def test_a_blocked_config_is_the_reason_a_revision_is_not_applied(ctx, make_state):
    relation = approach_relation(revision=2)
    state = ctx.run(
        ctx.on.relation_changed(relation), make_state(relations={relation}, config={"port": 8})
    )
    assert _acknowledged(state, relation)["reason"] == (
        "invalid config: port: must be between 1024 and 65535"
    )


def test_a_follower_acknowledges_nothing(ctx, make_state):
    relation = approach_relation()
    state_in = make_state(relations={relation}, leader=False)
    state = ctx.run(ctx.on.relation_changed(relation), state_in)
    assert _acknowledged(state, relation) == {}


def test_bad_approach_data_blocks_and_labelling_follows_its_config(
    ctx, registry_state, workload_jobs
):
    relation = approach_relation(raw={"mode": '"sideways"', "revision": "3", "policy": "{}"})
    state = ctx.run(ctx.on.relation_changed(relation), registry_state(relation))
    assert isinstance(state.unit_status, testing.BlockedStatus)
    assert state.unit_status.message.startswith("mlops-approach: ")
    assert "\n" not in state.unit_status.message
    assert _acknowledged(state, relation)["reason"] == state.unit_status.message
    workload_jobs.succeeds("import-version", {"project": "reviews"})
    ctx.run(ctx.on.action("import-version", params=IMPORT), state)
    assert _arg(workload_jobs.last.command, "--overlap") == "1"


def test_undecodable_approach_data_is_a_status_not_a_traceback(ctx, make_state):
    relation = approach_relation(raw={"mode": "data-centric", "revision": "x", "policy": "["})
    state = ctx.run(ctx.on.update_status(), make_state(relations={relation}))
    assert isinstance(state.unit_status, testing.BlockedStatus)
    assert state.unit_status.message.startswith("mlops-approach: ")


def test_a_removed_approach_leaves_labelling_to_its_config(
    ctx, registry_state, workload_jobs, data_dir
):
    relation = approach_relation()
    (data_dir / "agreement.json").write_text(
        json.dumps(
            {
                "reviews": {
                    "annotations": 12,
                    "skipped_annotations": 1,
                    "job": "j",
                    "krippendorff_alpha": 0.1,
                    "compared_tasks": 4,
                }
            }
        )
    )
    state = ctx.run(ctx.on.relation_broken(relation), registry_state(relation))
    assert state.unit_status == testing.ActiveStatus(SERVING)  # no gate, so no clause
    workload_jobs.succeeds("export-annotations", EXPORTED)
    without = registry_state()
    ctx.run(ctx.on.action("export-annotations", params={"project": "reviews"}), without)
    assert "--agreement-threshold" not in workload_jobs.last.command


# --- reports when answers change ---------------------------------------------------------------


def test_update_status_reports_on_a_project_whose_answers_changed(
    ctx, make_state, workload_jobs, projects, data_dir
):
    workload_jobs.succeeds("consistency-report", REPORT, ends=LATER)
    projects.append([ProjectCounts("pets", False, 4, 0), REVIEWS])
    ctx.run(ctx.on.update_status(), make_state(relations={approach_relation()}))
    run = workload_jobs.last
    assert run.command[2:] == ["consistency-report", "--project", "reviews", "--threshold", "0.5"]
    record = json.loads((data_dir / "jobs" / run.id / "job.json").read_text())
    assert record["params"] == {
        "project": "reviews",
        "annotations": "12",
        "skipped-annotations": "1",
        "started-by": "update-status",
    }


def test_a_report_below_the_gate_shows_in_the_status_and_in_list_jobs(
    ctx, make_state, workload_jobs, projects
):
    workload_jobs.succeeds("consistency-report", REPORT)
    projects.append([REVIEWS])
    state = ctx.run(ctx.on.update_status(), make_state(relations={approach_relation()}))
    state, notice = workload_jobs.deliver(state)
    state = ctx.run(ctx.on.pebble_custom_notice(state.get_container(CONTAINER), notice), state)
    assert state.unit_status == testing.ActiveStatus(
        f"{SERVING}; no data registry related; agreement below 0.8: reviews"
    )
    ctx.run(ctx.on.action("list-jobs"), state)
    assert ctx.action_results is not None
    (shown,) = json.loads(ctx.action_results["agreement"])
    assert shown == {
        "project": "reviews",
        "annotations": 12,
        "skipped_annotations": 1,
        "job": workload_jobs.last.id,
        "krippendorff_alpha": 0.125,
        "compared_tasks": 4,
    }


def test_unchanged_answers_start_no_report(ctx, make_state, workload_jobs, projects):
    workload_jobs.succeeds("consistency-report", REPORT)
    projects.extend([[REVIEWS], [REVIEWS]])
    state = ctx.run(ctx.on.update_status(), make_state(relations={approach_relation()}))
    state, notice = workload_jobs.deliver(state)
    state = ctx.run(ctx.on.pebble_custom_notice(state.get_container(CONTAINER), notice), state)
    ctx.run(ctx.on.update_status(), state)
    assert len(workload_jobs.runs) == 1


def test_a_failed_report_is_not_started_again_until_the_answers_change(
    ctx, make_state, workload_jobs, projects
):
    workload_jobs.fails("consistency-report", "Label Studio refused GET /api/users/ (500)")
    more = ProjectCounts("reviews", True, 14, 1)
    projects.extend([[REVIEWS], [REVIEWS], [more]])
    state = ctx.run(ctx.on.update_status(), make_state(relations={approach_relation()}))
    state, notice = workload_jobs.deliver(state)
    state = ctx.run(ctx.on.pebble_custom_notice(state.get_container(CONTAINER), notice), state)
    state = ctx.run(ctx.on.update_status(), state)
    assert len(workload_jobs.runs) == 1
    assert state.unit_status == testing.ActiveStatus(f"{SERVING}; no data registry related")
    ctx.run(ctx.on.update_status(), state)
    assert len(workload_jobs.runs) == 2


def test_a_passing_export_clears_the_project_from_the_status(
    ctx, registry_state, workload_jobs, data_dir
):
    (data_dir / "agreement.json").write_text(
        json.dumps(
            {
                "reviews": {
                    "annotations": 12,
                    "skipped_annotations": 1,
                    "job": "j",
                    "krippendorff_alpha": 0.125,
                    "compared_tasks": 4,
                }
            }
        )
    )
    workload_jobs.succeeds("export-annotations", EXPORTED)
    state = registry_state(approach_relation())
    assert ctx.run(ctx.on.update_status(), state).unit_status == testing.ActiveStatus(
        f"{SERVING}; agreement below 0.8: reviews"
    )
    out = ctx.run(ctx.on.action("export-annotations", params={"project": "reviews"}), state)
    assert out.unit_status == testing.ActiveStatus(SERVING)


@pytest.mark.parametrize("mode", ["model-centric", None])
def test_without_data_centric_update_status_asks_label_studio_nothing(
    ctx, make_state, workload_jobs, projects, mode
):
    relations = {approach_relation(mode)} if mode else set()
    ctx.run(ctx.on.update_status(), make_state(relations=relations))
    assert workload_jobs.runs == []


def test_no_report_starts_while_a_labelling_job_runs(ctx, make_state, workload_jobs, projects):
    workload_jobs.succeeds("relabel", {"queued": 1}, ends=LATER)
    relabel = relabel_relation({"batch_id": "b1", "items": ["texts/a.txt"], "project": "reviews"})
    state = make_state(relations={relabel, approach_relation()})
    ctx.run(ctx.on.update_status(), state)  # the batch's job starts; no request for counts
    assert [run.command[2] for run in workload_jobs.runs] == ["relabel"]


def test_label_studio_unreachable_skips_the_report_without_a_traceback(
    ctx, make_state, workload_jobs, monkeypatch
):
    def unreachable(_settings):
        raise RESTError("Label Studio unreachable: connection refused")

    monkeypatch.setattr(label_studio, "project_counts", unreachable)
    state = ctx.run(ctx.on.update_status(), make_state(relations={approach_relation()}))
    assert workload_jobs.runs == []
    assert state.unit_status == testing.ActiveStatus(f"{SERVING}; no data registry related")


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        '["reviews"]',
        '{"reviews": {"annotations": 12}}',
        '{"reviews": {"annotations": "12", "skipped_annotations": 1, "job": "j"}}',
    ],
    ids=["not json", "not an object", "missing fields", "wrong types"],
)
def test_an_unreadable_agreement_record_is_measured_again(
    ctx, make_state, workload_jobs, projects, data_dir, content
):
    (data_dir / "agreement.json").write_text(content)
    workload_jobs.succeeds("consistency-report", REPORT, ends=LATER)
    projects.append([REVIEWS])
    state = ctx.run(ctx.on.update_status(), make_state(relations={approach_relation()}))
    assert [run.command[2] for run in workload_jobs.runs] == ["consistency-report"]
    assert state.unit_status == testing.ActiveStatus(f"{SERVING}; no data registry related")
