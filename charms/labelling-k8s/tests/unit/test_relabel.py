"""mlops-relabel: each new batch is one relabel job, one at a time, acknowledged at its end."""

from __future__ import annotations

import dataclasses
import json

import pytest
from ops import pebble, testing
from workload_jobs import AT_START, LATER, WorkloadJobs

from tests.labelling_testing import ADMIN_TOKEN, DATA_DIR, relabel_relation

CONTAINER = "label-studio"
JOB_SERVICE = "labelling-job"
BATCH = {
    "batch_id": "run-42-misclassified",
    "items": ["texts/item-1.txt", "texts/item-5.txt"],
    "reason": "misclassified",
    "run_id": "42abc",
    "dataset_version": "v2",
    "project": "reviews",
}
OTHER = {"batch_id": "run-43-worst-slice", "items": ["texts/item-2.txt"], "project": "reviews"}
QUEUED = {"project": "reviews", "relabel_project": "reviews re-label", "queued": 2}
ACTIVE_ALONE = (
    "serving at http://labelling-k8s.mlops.svc.cluster.local:8080; no data registry related"
)


def _acknowledged(state: testing.State, relation: testing.Relation) -> dict:
    databag = state.get_relation(relation.id).local_app_data
    return {key: json.loads(value) for key, value in databag.items()}


def _arg(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def _job_running(state: testing.State) -> bool:
    statuses = state.get_container(CONTAINER).service_statuses
    return statuses.get(JOB_SERVICE) == pebble.ServiceStatus.ACTIVE


def _notified(ctx, workload_jobs: WorkloadJobs, state: testing.State) -> testing.State:
    """End the running job; run the hook its notice starts."""
    state, notice = workload_jobs.end(state)
    return ctx.run(ctx.on.pebble_custom_notice(state.get_container(CONTAINER), notice), state)


@pytest.fixture
def relabel_started(ctx, make_state, workload_jobs):
    """The leader got BATCH and started its job, which runs on."""
    workload_jobs.succeeds("relabel", QUEUED, ends=LATER)
    relation = relabel_relation(BATCH)
    state = ctx.run(ctx.on.relation_changed(relation), make_state(relations={relation}))
    return relation, state


def test_a_new_batch_starts_a_relabel_job_with_its_items(relabel_started, workload_jobs, data_dir):
    relation, state = relabel_started
    (run,) = workload_jobs.runs
    assert run.command[:3] == ["/opt/mlops/bin/mlops-workload", "labelling", "relabel"]
    assert _arg(run.command, "--project") == "reviews"
    assert json.loads(_arg(run.command, "--items")) == BATCH["items"]
    assert _arg(run.command, "--reason") == "misclassified (run 42abc)"
    assert _arg(run.command, "--batch") == "run-42-misclassified"
    assert run.working_dir == DATA_DIR
    assert _job_running(state)
    record = json.loads((data_dir / "jobs" / run.id / "job.json").read_text())
    assert (record["kind"], record["params"]) == ("relabel", {"batch": "run-42-misclassified"})
    assert _acknowledged(state, relation) == {}  # not before the job's end
    assert state.unit_status == testing.WaitingStatus("mlops-relabel: 1 batches to queue")


def test_a_relabel_job_reaches_label_studio_but_not_the_registry(
    ctx, relabel_started, workload_jobs
):
    _relation, state = relabel_started
    _notified(ctx, workload_jobs, state)
    env = workload_jobs.last.environment
    assert (env["LABEL_STUDIO_URL"], env["LABEL_STUDIO_API_KEY"]) == (
        "http://127.0.0.1:8080",
        ADMIN_TOKEN,
    )
    assert "MLOPS_REGISTRY_PASSWORD" not in env
    plan = state.get_container(CONTAINER).plan.to_yaml()
    assert ADMIN_TOKEN not in plan


def test_the_job_s_end_acknowledges_the_batch_as_queued(
    ctx, relabel_started, workload_jobs, data_dir
):
    relation, state = relabel_started
    state = _notified(ctx, workload_jobs, state)
    assert _acknowledged(state, relation) == {"queued": ["run-42-misclassified"]}
    assert state.unit_status == testing.ActiveStatus(ACTIVE_ALONE)
    assert list((data_dir / "jobs" / "unreported").iterdir()) == []  # acted on once
    assert len(workload_jobs.runs) == 1
    again = ctx.run(ctx.on.update_status(), state)
    assert len(workload_jobs.runs) == 1
    assert _acknowledged(again, relation) == {"queued": ["run-42-misclassified"]}


def test_a_later_hook_acknowledges_a_job_whose_notice_never_came(
    ctx, relabel_started, workload_jobs
):
    relation, state = relabel_started
    ended, _notice = workload_jobs.end(state)
    state = ctx.run(ctx.on.update_status(), ended)
    assert _acknowledged(state, relation) == {"queued": ["run-42-misclassified"]}


def test_a_job_ending_within_pebble_s_okay_delay_is_acknowledged_by_its_notice(
    ctx, make_state, workload_jobs
):
    workload_jobs.succeeds("relabel", QUEUED, ends=AT_START)
    relation = relabel_relation(BATCH)
    state = ctx.run(ctx.on.relation_changed(relation), make_state(relations={relation}))
    assert not _job_running(state)
    assert _acknowledged(state, relation) == {}  # it ended after this hook looked
    state, notice = workload_jobs.deliver(state)
    assert notice.last_data == {"job": workload_jobs.last.id}
    state = ctx.run(ctx.on.pebble_custom_notice(state.get_container(CONTAINER), notice), state)
    assert _acknowledged(state, relation) == {"queued": ["run-42-misclassified"]}


@pytest.mark.parametrize(
    ("outcome", "logged"),
    [
        (lambda jobs: jobs.fails("relabel", "unknown project 'reviews'", ends=LATER), "unknown"),
        (lambda jobs: jobs.prints("relabel", "queued\n", ends=LATER), "no JSON result"),
    ],
    ids=["the command fails", "no JSON result"],
)
def test_a_failed_relabel_job_blocks_once_and_is_never_retried(
    ctx, make_state, workload_jobs, outcome, logged
):
    outcome(workload_jobs)
    relation = relabel_relation(BATCH)
    started = ctx.run(ctx.on.relation_changed(relation), make_state(relations={relation}))
    state = _notified(ctx, workload_jobs, started)
    assert _acknowledged(state, relation) == {"failed": ["run-42-misclassified"]}
    assert state.unit_status == testing.BlockedStatus(
        "mlops-relabel: batches could not be queued: run-42-misclassified (list-jobs says why)"
    )
    assert any(logged in line.message for line in ctx.juju_log)
    later = ctx.run(ctx.on.update_status(), state)
    assert len(workload_jobs.runs) == 1
    assert not _job_running(later)
    assert _acknowledged(later, relation) == {"failed": ["run-42-misclassified"]}


def test_batches_are_queued_one_job_at_a_time(ctx, make_state, workload_jobs):
    workload_jobs.succeeds("relabel", QUEUED, ends=LATER)
    relation = relabel_relation(BATCH, OTHER)
    state = ctx.run(ctx.on.relation_changed(relation), make_state(relations={relation}))
    state = ctx.run(ctx.on.update_status(), state)  # the first still runs
    assert [_arg(run.command, "--batch") for run in workload_jobs.runs] == ["run-42-misclassified"]
    assert state.unit_status == testing.WaitingStatus("mlops-relabel: 2 batches to queue")

    state = _notified(ctx, workload_jobs, state)
    assert _acknowledged(state, relation) == {"queued": ["run-42-misclassified"]}
    assert [_arg(run.command, "--batch") for run in workload_jobs.runs] == [
        "run-42-misclassified",
        "run-43-worst-slice",
    ]
    assert _job_running(state)

    state = _notified(ctx, workload_jobs, state)
    assert _acknowledged(state, relation) == {
        "queued": ["run-42-misclassified", "run-43-worst-slice"]
    }
    assert state.unit_status == testing.ActiveStatus(ACTIVE_ALONE)


def test_the_acknowledgement_keeps_only_batches_still_offered(ctx, make_state, workload_jobs):
    relation = relabel_relation(
        BATCH,
        local_app_data={
            "queued": json.dumps(["run-42-misclassified", "run-1-withdrawn"]),
            "failed": json.dumps(["run-2-withdrawn"]),
        },
    )
    state = ctx.run(ctx.on.relation_changed(relation), make_state(relations={relation}))
    assert _acknowledged(state, relation) == {"queued": ["run-42-misclassified"]}
    assert workload_jobs.runs == []


def test_a_withdrawn_failed_batch_clears_the_blocked_status(ctx, make_state, workload_jobs):
    relation = relabel_relation(
        OTHER, local_app_data={"failed": json.dumps(["run-42-misclassified"])}
    )
    workload_jobs.succeeds("relabel", QUEUED, ends=LATER)
    state = ctx.run(ctx.on.relation_changed(relation), make_state(relations={relation}))
    assert _acknowledged(state, relation) == {}
    assert state.unit_status == testing.WaitingStatus("mlops-relabel: 1 batches to queue")


def test_a_batch_waits_for_an_action_s_job_in_the_slot(ctx, make_state, workload_jobs):
    workload_jobs.succeeds("consistency-report", {"project": "reviews"}, ends=LATER)
    workload_jobs.succeeds("relabel", QUEUED, ends=LATER)
    relation = relabel_relation(BATCH)
    state = make_state(relations={relation})
    params = {"project": "reviews", "wait": False}
    state = ctx.run(ctx.on.action("consistency-report", params=params), state)
    state = ctx.run(ctx.on.relation_changed(relation), state)
    assert [run.command[2] for run in workload_jobs.runs] == ["consistency-report"]

    state = _notified(ctx, workload_jobs, state)
    assert [run.command[2] for run in workload_jobs.runs] == ["consistency-report", "relabel"]
    assert _acknowledged(state, relation) == {}  # an action's job acknowledges no batch


def test_a_relabel_job_ending_after_the_relation_left_is_reported_and_forgotten(
    ctx, relabel_started, workload_jobs, data_dir
):
    _relation, state = relabel_started
    state = dataclasses.replace(state, relations=frozenset())
    state = _notified(ctx, workload_jobs, state)
    assert list((data_dir / "jobs" / "unreported").iterdir()) == []
    assert state.unit_status == testing.ActiveStatus(ACTIVE_ALONE)


def test_a_batch_without_a_reason_says_where_it_came_from(ctx, make_state, workload_jobs):
    workload_jobs.succeeds("relabel", QUEUED, ends=LATER)
    batch = {"batch_id": "b1", "items": ["texts/item-1.txt"], "project": "reviews"}
    relation = relabel_relation(batch)
    ctx.run(ctx.on.relation_changed(relation), make_state(relations={relation}))
    assert _arg(workload_jobs.last.command, "--reason") == "sent back by error analysis"


def test_a_batch_without_a_project_uses_the_relabel_project_option(ctx, make_state, workload_jobs):
    workload_jobs.succeeds("relabel", QUEUED, ends=LATER)
    batch = {key: value for key, value in BATCH.items() if key != "project"}
    relation = relabel_relation(batch)
    blocked = ctx.run(ctx.on.relation_changed(relation), make_state(relations={relation}))
    assert blocked.unit_status == testing.BlockedStatus(
        "mlops-relabel: a batch names no project: set relabel-project"
    )
    assert workload_jobs.runs == []

    configured = dataclasses.replace(blocked, config={"relabel-project": "reviews"})
    ctx.run(ctx.on.config_changed(), configured)
    assert _arg(workload_jobs.last.command, "--project") == "reviews"


@pytest.mark.parametrize(
    "batches",
    [
        [{"items": ["/etc/passwd"], "batch_id": "b1"}],
        [{"items": ["../up.txt"], "batch_id": "b1"}],
        [{"items": ["a.txt"], "batch_id": "has space"}],
        [{"items": ["a.txt"], "batch_id": "b1", "dataset_version": "latest"}],
    ],
)
def test_malformed_relabel_data_blocks_and_starts_nothing(ctx, make_state, workload_jobs, batches):
    relation = relabel_relation(raw={"batches": json.dumps(batches)})
    state = ctx.run(ctx.on.relation_changed(relation), make_state(relations={relation}))
    assert isinstance(state.unit_status, testing.BlockedStatus)
    assert state.unit_status.message.startswith("mlops-relabel: invalid data from training-k8s")
    assert workload_jobs.runs == []


def test_undecodable_relabel_data_blocks(ctx, make_state, workload_jobs):
    relation = relabel_relation(raw={"batches": "[{not json"})
    state = ctx.run(ctx.on.relation_changed(relation), make_state(relations={relation}))
    assert isinstance(state.unit_status, testing.BlockedStatus)
    assert state.unit_status.message.startswith("mlops-relabel: invalid data from training-k8s")
    assert workload_jobs.runs == []


@pytest.mark.parametrize(
    "batch",
    [
        {"batch_id": "b1", "project": "reviews"},
        {"batch_id": "b1", "items": [], "project": "reviews"},
        {"items": ["texts/item-1.txt"], "project": "reviews"},
    ],
    ids=["no items", "empty items", "no batch_id"],
)
def test_an_incomplete_batch_blocks_and_starts_nothing(ctx, make_state, workload_jobs, batch):
    workload_jobs.succeeds("relabel", QUEUED, ends=LATER)
    relation = relabel_relation(batch)
    state = ctx.run(ctx.on.relation_changed(relation), make_state(relations={relation}))
    assert state.unit_status == testing.BlockedStatus(
        "mlops-relabel: a batch lacks batch_id or items"
    )
    assert workload_jobs.runs == []


def test_relabel_batches_wait_while_label_studio_is_down(ctx, make_state, workload_jobs, healthy):
    healthy["up"] = False
    workload_jobs.fails("relabel", "cannot reach Label Studio: connection refused", ends=LATER)
    relation = relabel_relation(BATCH)
    state = ctx.run(ctx.on.relation_changed(relation), make_state(relations={relation}))
    assert workload_jobs.runs == []
    assert not _job_running(state)


def test_a_follower_neither_queues_batches_nor_reads_the_acknowledgements(
    ctx, make_state, workload_jobs
):
    relation = relabel_relation(BATCH)
    state_in = make_state(leader=False, relations={relation})
    state = ctx.run(ctx.on.relation_changed(relation), state_in)
    assert workload_jobs.runs == []
    assert state.unit_status == testing.ActiveStatus(ACTIVE_ALONE)


def test_the_end_of_an_action_s_job_acknowledges_no_batch(ctx, make_state, workload_jobs):
    # The provider's data is bad, so nothing prunes what the job's end might have written.
    workload_jobs.succeeds("consistency-report", {"project": "reviews"}, ends=LATER)
    relation = relabel_relation(raw={"batches": "[{not json"})
    params = {"project": "reviews", "wait": False}
    state = ctx.run(
        ctx.on.action("consistency-report", params=params), make_state(relations={relation})
    )
    state = _notified(ctx, workload_jobs, state)
    assert _acknowledged(state, relation) == {}
