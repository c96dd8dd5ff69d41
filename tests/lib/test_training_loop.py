"""The approach's loop, its decisions alone: what to start, what revision is applied, and why.

``decide`` is pure: it sees the loop's state, the approach in force and what the relations
say. ``refresh`` reads the ends of the loop's runs from job records, and the state file is
written through the records' own file API: the machine's files here (``HostFiles``), and a
real Pebble's for the atomic rewrite. The charms' hooks around it are each charm's
``test_approach_loop``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ops
import pytest

from mlops_charms import training_loop
from mlops_charms.approach import Approach, ApproachPolicy
from mlops_charms.host_files import HostFiles
from mlops_charms.jobs import JobRecords
from mlops_charms.training import ErrorAnalysisParams, SweepParams
from mlops_charms.training_loop import (
    Decision,
    LoopAugmentParams,
    LoopRun,
    LoopState,
    LoopTrainParams,
    Relations,
    RunState,
    decide,
    refresh,
    summary,
)

SPEC = "text-tfidf-logreg"
READY = Relations(version="v2", write=True)
FROZEN = {"model_spec": {"spec": SPEC, "params": {"C": 2}}, "relabel_top_k": 10}


def data_centric(revision: int = 3, **policy: Any) -> Approach:
    fields = {**FROZEN, "train_on_new_version": True, **policy}
    return Approach("data-centric", revision, ApproachPolicy.model_validate(fields))


def model_centric(revision: int = 5, **policy: Any) -> Approach:
    fields = {
        "dataset_version": "v1",
        "model_spec": {"spec": SPEC, "params": {}},
        "sweep": [{"C": 1}, {"C": 10}],
        "selection_metric": "f1_macro",
        "promote_best": True,
        **policy,
    }
    return Approach("model-centric", revision, ApproachPolicy.model_validate(fields))


def run(
    kind: str, version: str, state: RunState = "succeeded", revision: int = 3, **more: Any
) -> LoopRun:
    return LoopRun(kind=kind, version=version, revision=revision, job="j", state=state, **more)


def started(decision: Decision) -> list[tuple[str, str]]:
    return [(start.kind, start.version) for start in decision.starts]


# --- data-centric -------------------------------------------------------------------------------


def test_a_version_not_handled_is_trained_with_the_frozen_spec():
    decision = decide(LoopState(), data_centric(), READY)
    assert decision == Decision(3, starts=decision.starts)
    (start,) = decision.starts
    assert start.params == LoopTrainParams(spec=SPEC, version="v2", params='{"C": 2}')
    # A raw version (no labels yet) is skipped by the trainer, not failed.
    assert start.params.arguments("v2")[-1] == "--skip-unlabelled"


@pytest.mark.parametrize("state", ["running", "succeeded", "failed"])
def test_a_version_is_handled_once_per_revision_whatever_became_of_it(state: RunState):
    done = LoopState(runs=[run("train", "v2", state)])
    assert started(decide(done, data_centric(relabel_top_k=0), READY)) == []
    if state != "running":  # one run at a time on a version: the next revision's waits
        assert started(decide(done, data_centric(4), READY)) == [("train", "v2")]


def test_one_loop_run_at_a_time_on_a_version_even_across_revisions():
    busy = LoopState(runs=[run("train", "v2", "running", revision=3)])
    assert started(decide(busy, data_centric(4), READY)) == []


def test_a_train_that_succeeded_is_followed_by_its_error_analysis_once():
    trained = LoopState(runs=[run("train", "v2")])
    (start,) = decide(trained, data_centric(), READY).starts
    assert start.params == ErrorAnalysisParams(
        spec=SPEC, version="v2", params='{"C": 2}', top_k=10
    )
    analysed = LoopState(runs=[run("train", "v2"), run("error-analysis", "v2", "failed")])
    assert decide(analysed, data_centric(), READY).starts == ()
    failed = LoopState(runs=[run("train", "v2", "failed")])
    assert decide(failed, data_centric(), READY).starts == ()


def test_a_train_skipped_for_want_of_labels_has_no_error_analysis():
    raw = LoopState(runs=[run("train", "v2", skipped=True)])
    assert decide(raw, data_centric(), READY).starts == ()
    assert summary(raw, data_centric()) == "v2 has no labels yet"


def test_a_run_of_an_older_revision_has_no_follow_up():
    trained = LoopState(runs=[run("train", "v1", revision=2)])
    assert started(decide(trained, data_centric(), READY)) == [("train", "v2")]


def test_without_train_on_new_version_nothing_starts_but_the_revision_applies():
    decision = decide(LoopState(), data_centric(train_on_new_version=False), READY)
    assert decision == Decision(3)


def test_augmentation_comes_first_and_its_version_is_trained_not_augmented_again():
    approach = data_centric(augmentation={"text": [{"op": "swap_words"}], "copies": 2, "seed": 7})
    (start,) = decide(LoopState(), approach, READY).starts
    assert start.params == LoopAugmentParams(
        transforms='{"copies": 2, "text": [{"op": "swap_words"}]}',
        seed=7,
        version="v2",
        message="data-centric loop: augmentation of v2 (revision 3)",
    )
    assert "--allow-unchanged" in start.params.arguments("v2")
    augmented = LoopState(runs=[run("augment", "v2", produced="v3")], augmented=["v3"])
    in_use = Relations(version="v3", write=True)
    assert started(decide(augmented, approach, in_use)) == [("train", "v3")]


def test_an_unknown_version_waits_while_an_augmentation_may_have_made_it():
    approach = data_centric(augmentation={"text": [{"op": "swap_words"}]})
    augmenting = LoopState(runs=[run("augment", "v2", "running")])
    assert decide(augmenting, approach, Relations(version="v3", write=True)).starts == ()


def test_a_version_augmented_already_is_trained_as_it_is():
    approach = data_centric(augmentation={"text": [{"op": "swap_words"}]})
    unchanged = LoopState(runs=[run("augment", "v2", unchanged=True)])
    assert started(decide(unchanged, approach, READY)) == [("train", "v2")]


@pytest.mark.parametrize(
    ("approach", "relations", "reason", "waiting"),
    [
        (data_centric(model_spec=None), READY, "invalid policy: the policy has no model_spec", 0),
        (
            data_centric(augmentation={"seed": "x", "text": [{"op": "swap_words"}]}),
            READY,
            "invalid policy: augmentation: seed must be an integer",
            0,
        ),
        (
            data_centric(augmentation={"text": [{"op": "swap_words"}]}),
            Relations(version="v2", write=False),
            "augmentation needs write access: the registry granted read",
            0,
        ),
        (
            data_centric(),
            Relations(registry_problem="relate mlops-dataset to data-versioning-k8s"),
            "no data registry: relate mlops-dataset to data-versioning-k8s",
            1,
        ),
        (
            data_centric(),
            Relations(version="v2", tracking_problem="waiting for the tracking server"),
            "no tracking server: waiting for the tracking server",
            1,
        ),
    ],
)
def test_a_revision_the_loop_cannot_follow_keeps_the_previous_one_and_says_why(
    approach: Approach, relations: Relations, reason: str, waiting: int
):
    decision = decide(LoopState(applied_revision=2), approach, relations)
    assert decision == Decision(2, reason, bool(waiting))


# --- model-centric ------------------------------------------------------------------------------


def test_a_sweep_runs_once_per_revision_on_the_policy_s_version():
    (start,) = decide(LoopState(), model_centric(), READY).starts
    assert start.params == SweepParams(
        spec=SPEC,
        version="v1",
        params="{}",
        grid='[{"C": [1]}, {"C": [10]}]',
        metric="f1_macro",
        promote="champion",
    )
    swept = LoopState(runs=[run("sweep", "v1", "failed", revision=5)])
    assert decide(swept, model_centric(), READY) == Decision(5)
    assert started(decide(swept, model_centric(6), READY)) == [("sweep", "v1")]


def test_new_versions_are_ignored_and_the_registry_pin_is_used_without_a_version():
    approach = model_centric(dataset_version=None)
    pinned = Relations(version="v4", pinned="v3", write=True)
    assert started(decide(LoopState(), approach, pinned)) == [("sweep", "v3")]
    latest_only = Relations(version="v4")
    assert decide(LoopState(applied_revision=4), approach, latest_only) == Decision(
        4, "waiting for the registry to pin a version", waiting=True
    )


def test_without_a_sweep_the_revision_applies_and_nothing_runs():
    assert decide(LoopState(), model_centric(sweep=None), Relations()) == Decision(5)


def test_configurations_become_a_list_of_grids_and_name_only_the_policy_s_spec():
    assert training_loop.sweep_grid(SPEC, [{"C": 1, "spec": SPEC}, {}]) == [{"C": [1]}, {}]
    with pytest.raises(ValueError, match="configuration 2 names spec image-svc"):
        training_loop.sweep_grid(SPEC, [{"C": 1}, {"spec": "image-svc"}])


# --- ends, summaries, the state file ------------------------------------------------------------


@pytest.fixture
def records(tmp_path: Path) -> JobRecords:
    return JobRecords(HostFiles(), str(tmp_path / "jobs"))


def ended(records: JobRecords, kind: str, code: int, stdout: Any, stderr: str = "") -> str:
    job = records.create(kind, {})
    records.record_end(job.id, code, stdout=json.dumps(stdout), stderr=stderr)
    return job.id


def test_refresh_records_ends_and_the_versions_augmentations_made(records: JobRecords):
    made = ended(records, "augment", 0, {"version": "v3"})
    same = ended(records, "augment", 0, {"version": None, "unchanged": True})
    failed = ended(records, "train", 1, {}, "error: no labels in v2\n")
    skipped = ended(records, "train", 0, {"skipped": "v8 has no labels", "version": "v8"})
    running = records.create("train", {}).id
    state = LoopState(
        runs=[
            LoopRun(kind="augment", version="v2", revision=3, job=made),
            LoopRun(kind="augment", version="v4", revision=3, job=same),
            LoopRun(kind="train", version="v5", revision=3, job=failed),
            LoopRun(kind="train", version="v6", revision=3, job=running),
            LoopRun(kind="train", version="v7", revision=3, job="20260101000000-0009"),
            LoopRun(kind="train", version="v8", revision=3, job=skipped),
        ]
    )
    runs = refresh(state, records)
    assert [(r.state, r.produced, r.unchanged, r.skipped, r.error) for r in runs.runs] == [
        ("succeeded", "v3", False, False, None),
        ("succeeded", None, True, False, None),
        ("failed", None, False, False, "no labels in v2"),
        ("running", None, False, False, None),
        ("failed", None, False, False, "its job is gone"),
        ("succeeded", None, False, True, None),
    ]
    assert runs.augmented == ["v3"]


def test_the_summary_says_what_ran_last_in_a_short_clause():
    approach = data_centric()
    assert summary(LoopState(), approach) == "waiting for a new version"
    assert summary(LoopState(runs=[run("train", "v3")]), approach) == "trained v3"
    assert summary(LoopState(runs=[run("train", "v3", "failed")]), approach) == (
        "train on v3 failed (list-jobs)"
    )
    sweeping = LoopState(runs=[run("sweep", "v2", "running", revision=5)])
    assert summary(sweeping, model_centric()) == "sweep on v2 running"


def test_the_state_round_trips_and_is_written_only_when_it_changed(records: JobRecords):
    assert training_loop.load(records) == LoopState()
    state = LoopState(applied_revision=3, runs=[run("train", "v2")], augmented=["v4"])
    training_loop.save(records, state, LoopState())
    path = Path(training_loop.state_path(records))
    assert training_loop.load(records) == state
    written = path.stat().st_mtime_ns
    training_loop.save(records, state, state)
    assert path.stat().st_mtime_ns == written


def test_an_unreadable_state_stops_the_loop_rather_than_start_twice(records: JobRecords):
    Path(records.jobs_dir).mkdir()
    Path(training_loop.state_path(records)).write_text('{"runs": "many"}')
    assert training_loop.load(records) is None


def test_the_state_is_rewritten_whole_through_pebble(exec_container: ops.Container, tmp_path):
    records = JobRecords(exec_container, str(tmp_path / "pebble-jobs"))
    first = LoopState(applied_revision=3, runs=[run("train", "v2", "running")])
    training_loop.save(records, first, LoopState())
    second = LoopState(applied_revision=4, runs=[*first.runs, run("train", "v3", "running")])
    training_loop.save(records, second, first)
    assert training_loop.load(records) == second
    assert [p.name for p in (tmp_path / "pebble-jobs").iterdir()] == ["loop.json"]
