"""Reconcile: the watcher's layer, what the charm asks of its providers, and jobs' ends.

A job's end is played as in a cluster: the fake API ends the Job, the watcher's own code
records it into the unit's storage, and the Pebble notice it raises runs the charm.
"""

from __future__ import annotations

import dataclasses
import json
import shlex

import pytest
from ops import pebble, testing
from training_testing import APP, JOBS_DIR, MODEL, app_data, relabel_relation

import charm
from job_watcher import JOBS, TRAINJOBS
from mlops_charms.jobs import NOTICE_KEY
from tests.charm_testing import record_service_changes
from tests.fake_kubernetes import TRAINJOB_CRD

BATCH = {
    "batch_id": "error-analysis-r9",
    "items": ["texts/0003.txt", "texts/0007.txt"],
    "reason": "suspected label error",
    "run_id": "r9",
    "dataset_version": "v2",
    "project": "reviews",
}


def _notice(ctx, state: testing.State, job_id: str) -> testing.State:
    """The hook the watcher's notice starts."""
    notice = testing.Notice(NOTICE_KEY, last_data={"job": job_id})
    container = dataclasses.replace(state.get_container("training"), notices=[notice])
    state = dataclasses.replace(state, containers={container})
    return ctx.run(ctx.on.pebble_custom_notice(container, notice), state)


def _start(ctx, state: testing.State, action: str, **params) -> tuple[str, str]:
    ctx.run(ctx.on.action(action, params=params), state)
    results = ctx.action_results
    assert results is not None
    return results["job"], results["name"]


def _end(
    kubernetes, watcher, name: str, log: str, *, succeeded: bool = True, plural: str = "jobs"
):
    kubernetes.run_pod(MODEL, name, log, exit_code=0 if succeeded else 1)
    kubernetes.finish(MODEL, plural, name, succeeded=succeeded)
    watcher.sync(TRAINJOBS if plural == "trainjobs" else JOBS)


def test_the_leader_runs_the_watcher_on_its_jobs_folder(ctx, make_state, kubernetes):
    out = ctx.run(ctx.on.pebble_ready(make_state().get_container("training")), make_state())
    container = out.get_container("training")
    service = container.plan.services["job-watcher"]
    words = shlex.split(service.command)
    assert words[:2] == ["/opt/mlops/bin/python3", "/opt/training/job_watcher.py"]
    assert words[words.index("--selector") + 1] == f"mlops-stack.dev/app={APP}"
    assert words[words.index("--jobs-dir") + 1] == JOBS_DIR
    assert words[words.index("--namespace") + 1] == MODEL
    assert json.loads(words[words.index("--notify-command") + 1])[-2:] == ["notify", NOTICE_KEY]
    assert "--trainjobs" not in words
    assert container.service_statuses["job-watcher"] == pebble.ServiceStatus.ACTIVE


def test_a_non_leader_stops_its_watcher(ctx, make_state, kubernetes):
    leader = ctx.run(ctx.on.config_changed(), make_state())
    follower = dataclasses.replace(leader, leader=False)
    out = ctx.run(ctx.on.leader_elected(), follower)
    assert (
        out.get_container("training").service_statuses["job-watcher"]
        == pebble.ServiceStatus.INACTIVE
    )


def test_multi_node_config_makes_the_watcher_follow_trainjobs(ctx, make_state, kubernetes):
    out = ctx.run(ctx.on.config_changed(), make_state(config={"num-nodes": 2}))
    assert "--trainjobs" in out.get_container("training").plan.services["job-watcher"].command


def test_a_second_reconcile_changes_nothing(ctx, make_state, kubernetes, monkeypatch):
    state = ctx.run(ctx.on.config_changed(), make_state())
    calls = record_service_changes(monkeypatch)
    ctx.run(ctx.on.update_status(), state)
    assert calls == []


def test_the_charm_asks_for_write_access_and_its_experiment(ctx, make_state, kubernetes):
    state = make_state(config={"experiment": "reviews-classifier"})
    out = ctx.run(ctx.on.config_changed(), state)
    by_endpoint = {r.endpoint: r for r in out.relations}
    assert app_data(out, by_endpoint["mlops-dataset"]) == {"access": "write"}
    assert app_data(out, by_endpoint["mlops-tracking"]) == {"experiment": "reviews-classifier"}
    default = ctx.run(ctx.on.config_changed(), make_state())
    tracking = next(r for r in default.relations if r.endpoint == "mlops-tracking")
    assert app_data(default, tracking) == {"experiment": APP}


def test_an_error_analysis_batch_is_offered_to_labelling(
    ctx, make_state, kubernetes, watcher, data_dir
):
    relabel = relabel_relation()
    state = make_state(relations={relabel})
    job_id, name = _start(ctx, state, "error-analysis", spec="text-tfidf-logreg")
    _end(kubernetes, watcher, name, json.dumps({"run_id": "r9", "relabel_batch": BATCH}) + "\n")
    out = _notice(ctx, state, job_id)
    assert app_data(out, relabel) == {"batches": [BATCH]}
    assert not (data_dir / "jobs" / "unreported" / job_id).exists()  # reported once
    again = _notice(ctx, out, job_id)
    assert app_data(again, relabel) == {"batches": [BATCH]}


def test_batches_labelling_has_queued_or_failed_are_no_longer_offered(ctx, make_state, kubernetes):
    other = {**BATCH, "batch_id": "error-analysis-r10"}
    relabel = relabel_relation(queued=["error-analysis-r9"])
    relabel = dataclasses.replace(relabel, local_app_data={"batches": json.dumps([BATCH, other])})
    out = ctx.run(ctx.on.relation_changed(relabel), make_state(relations={relabel}))
    assert app_data(out, relabel) == {"batches": [other]}
    failed = dataclasses.replace(
        out.get_relation(relabel.id),
        remote_app_data={"failed": json.dumps(["error-analysis-r10"])},
    )
    out = ctx.run(ctx.on.relation_changed(failed), dataclasses.replace(out, relations={failed}))
    assert app_data(out, failed) == {}


def test_an_analysis_without_suspects_offers_nothing(ctx, make_state, kubernetes, watcher):
    relabel = relabel_relation()
    state = make_state(relations={relabel})
    job_id, name = _start(ctx, state, "error-analysis", spec="text-tfidf-logreg")
    _end(kubernetes, watcher, name, json.dumps({"relabel_batch": {**BATCH, "items": []}}) + "\n")
    assert app_data(_notice(ctx, state, job_id), relabel) == {}


def test_a_batch_labelling_could_not_read_is_not_offered(ctx, make_state, kubernetes, watcher):
    relabel = relabel_relation()
    state = make_state(relations={relabel})
    job_id, name = _start(ctx, state, "error-analysis", spec="text-tfidf-logreg")
    bad = {**BATCH, "items": ["/etc/passwd"]}
    _end(kubernetes, watcher, name, json.dumps({"relabel_batch": bad}) + "\n")
    assert app_data(_notice(ctx, state, job_id), relabel) == {}


def test_a_failed_job_is_reported_once_with_its_reason(
    ctx, make_state, kubernetes, watcher, data_dir
):
    state = make_state()
    job_id, name = _start(ctx, state, "train", spec="image-svc")
    _end(kubernetes, watcher, name, "error: tracking: permission denied\n", succeeded=False)
    out = _notice(ctx, state, job_id)
    assert not (data_dir / "jobs" / "unreported" / job_id).exists()
    ctx.run(ctx.on.action("list-jobs"), out)
    (job,) = json.loads(ctx.action_results["jobs"])  # type: ignore[index]
    assert job["state"] == "failed"
    assert job["error"].startswith("tracking: permission denied (BackoffLimitExceeded")


def test_a_job_whose_object_vanished_unseen_is_recorded_lost_at_update_status(
    ctx, make_state, kubernetes, monkeypatch
):
    state = make_state()
    _job_id, name = _start(ctx, state, "train", spec="image-svc")
    kubernetes.objects.pop((MODEL, "jobs", name))  # gone while no watcher was looking
    out = ctx.run(ctx.on.update_status(), state)
    ctx.run(ctx.on.action("list-jobs"), out)
    assert json.loads(ctx.action_results["jobs"])[0]["state"] == "running"  # type: ignore[index] - too recent
    monkeypatch.setattr(charm, "LOST_AFTER", -1.0)
    out = ctx.run(ctx.on.update_status(), state)
    ctx.run(ctx.on.action("list-jobs"), out)
    (job,) = json.loads(ctx.action_results["jobs"])  # type: ignore[index]
    assert job["state"] == "failed" and "gone" in job["error"]


def test_an_ended_trainjob_is_deleted_once_reported(ctx, make_state, kubernetes, watcher):
    kubernetes.crds.add(TRAINJOB_CRD)
    state = make_state(config={"num-nodes": 2})
    job_id, name = _start(ctx, state, "train", spec="torch-mlp")
    labels = {"jobset.sigs.k8s.io/jobset-name": name}
    kubernetes.run_pod(
        MODEL,
        name,
        json.dumps({"run_id": "r"}) + "\n",
        exit_code=0,
        labels=labels,
        container="node",
    )
    kubernetes.finish(MODEL, "trainjobs", name, succeeded=True)
    watcher.sync(TRAINJOBS)
    _notice(ctx, state, job_id)
    assert kubernetes.list(MODEL, "trainjobs") == []
    assert kubernetes.deletions == [("trainjobs", name, "Background")]


@pytest.mark.parametrize("event", ["secret_changed", "relation_broken"])
def test_hooks_without_news_leave_jobs_alone(ctx, make_state, kubernetes, event):
    state = make_state()
    _start(ctx, state, "train", spec="image-svc")
    if event == "relation_broken":
        relation = next(r for r in state.relations if r.endpoint == "mlops-tracking")
        ctx.run(ctx.on.relation_broken(relation), state)
    else:
        secret = next(iter(state.secrets))
        ctx.run(ctx.on.secret_changed(secret), state)
    assert len(kubernetes.list(MODEL, "jobs")) == 1
