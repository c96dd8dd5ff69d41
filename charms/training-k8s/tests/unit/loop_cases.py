"""The approach's loop as both training charms follow it: one suite, run by each charm.

Each charm's ``test_approach_loop.py`` subclasses ``LoopCases`` and gives the fixture ``unit``:
its ``LoopUnit``, which builds the state of a unit related to the registry and tracking, says
which runs were started (their command's options and plain settings), ends a run and runs the
hook its end runs (training-k8s: the job watcher's Pebble notice; training: job-ended, which
reconciles as update-status does). The loop's decisions are in ``tests/lib/test_training_loop``;
here they go through the charms' hooks: relations, ends, restarts, statuses, acknowledgements.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Protocol

import pytest
from ops import testing
from training_testing import APP, app_data, dataset_relation, relabel_relation, tracking_relation

from tests import provider_data

SPEC = "text-tfidf-logreg"
EXPERIMENT = APP  # the experiment tracking granted (``tracking_relation``'s default_experiment)
DATA_CENTRIC: dict[str, Any] = {
    "model_spec": {"spec": SPEC, "params": {"C": 2}},
    "annotator_overlap": 2,
    "agreement_threshold": 0.6,
    "relabel_top_k": 25,
    "train_on_new_version": True,
}
MODEL_CENTRIC: dict[str, Any] = {
    "dataset_version": "v1",
    "model_spec": {"spec": SPEC, "params": {"max_features": 500}},
    "sweep": [{"C": 1}, {"C": 10}],
    "selection_metric": "f1_macro",
    "promote_best": True,
}
TRANSFORMS = {"text": [{"op": "swap_words", "n": 1}], "copies": 2}
BATCH = {
    "batch_id": "error-analysis-r1",
    "items": ["texts/0001.txt"],
    "reason": "suspected label error",
    "run_id": "r1",
    "dataset_version": "v2",
    "project": "reviews",
}


@dataclass(frozen=True)
class Started:
    """A run the charm started: its job, kind, options (``--flag``: value) and plain settings."""

    job: str
    kind: str
    options: dict[str, str]
    settings: dict[str, str]


class LoopUnit(Protocol):
    """A training charm's unit, as the suite drives it."""

    ctx: testing.Context

    def state(
        self, relations: set[testing.Relation], secrets: set[testing.Secret], *, leader: bool
    ) -> testing.State: ...

    def started(self) -> list[Started]: ...

    def end(
        self, state: testing.State, job: str, result: dict[str, Any], *, succeeded: bool = True
    ) -> testing.State: ...

    def restarted(self, state: testing.State) -> testing.State: ...


def options(words: list[str]) -> dict[str, str]:
    """``--flag value`` pairs of a command line (a flag without a value: ``""``)."""
    parsed, index = {}, 0
    while index < len(words):
        following = words[index + 1] if index + 1 < len(words) else "--"
        parsed[words[index]] = "" if following.startswith("--") else following
        index += 1 if following.startswith("--") else 2
    return parsed


def approach_relation(
    mode: str = "data-centric", revision: int = 3, **policy: Any
) -> testing.Relation:
    base = DATA_CENTRIC if mode == "data-centric" else MODEL_CENTRIC
    return provider_data.approach_relation(mode, revision, **{**base, **policy})


def related(
    unit: LoopUnit,
    approach: testing.Relation | None = None,
    *,
    latest: str | None = "v2",
    pinned: str | None = None,
    access: str = "write",
    relabel: bool = False,
    leader: bool = True,
) -> testing.State:
    """A unit related to the registry (``latest``, ``pinned``), tracking, and as asked."""
    (dataset, dataset_secret) = dataset_relation(access=access, latest=latest, pinned=pinned)
    tracking, tracking_secret = tracking_relation()
    relations = {dataset, tracking}
    relations |= {approach} if approach else set()
    relations |= {relabel_relation()} if relabel else set()
    return unit.state(relations, {dataset_secret, tracking_secret}, leader=leader)


def relation(state: testing.State, endpoint: str) -> testing.Relation:
    found = next(r for r in state.relations if r.endpoint == endpoint)
    assert isinstance(found, testing.Relation)
    return found


def published(state: testing.State, endpoint: str, **fields: Any) -> testing.State:
    """``state`` after the remote side of ``endpoint`` published ``fields`` (None: removed)."""
    old = relation(state, endpoint)
    data = dict(old.remote_app_data)
    for key, value in fields.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = json.dumps(value)
    new = dataclasses.replace(old, remote_app_data=data)
    return dataclasses.replace(state, relations=(state.relations - {old}) | {new})


def changed(unit: LoopUnit, state: testing.State, endpoint: str, **fields: Any) -> testing.State:
    """The ``relation-changed`` hook of ``endpoint`` once its remote side published ``fields``."""
    state = published(state, endpoint, **fields)
    return unit.ctx.run(unit.ctx.on.relation_changed(relation(state, endpoint)), state)


def acknowledged(state: testing.State) -> dict[str, Any]:
    return app_data(state, relation(state, "mlops-approach"))


def kinds(unit: LoopUnit) -> list[tuple[str, str]]:
    """(kind, version) of every run started, in order."""
    return [(run.kind, run.options["--version"]) for run in unit.started()]


def listed(unit: LoopUnit, state: testing.State) -> list[dict[str, Any]]:
    unit.ctx.run(unit.ctx.on.action("list-jobs"), state)
    assert unit.ctx.action_results is not None
    return json.loads(unit.ctx.action_results["jobs"])


class LoopCases:
    """Every rule of the loop, through the charm's hooks."""

    # --- without the relation ---------------------------------------------------------------

    def test_without_the_relation_a_new_version_starts_nothing(self, unit: LoopUnit):
        state = unit.ctx.run(unit.ctx.on.config_changed(), related(unit))
        state = changed(unit, state, "mlops-dataset", latest_version="v3")
        assert unit.started() == []
        assert "loop" not in state.unit_status.message
        unit.ctx.run(unit.ctx.on.action("train", params={"spec": SPEC}), state)
        (run,) = unit.started()
        assert "MLOPS_APPROACH" not in run.settings
        assert "MLOPS_APPROACH_REVISION" not in run.settings
        assert run.settings["MLFLOW_EXPERIMENT_NAME"] == EXPERIMENT

    # --- data-centric -----------------------------------------------------------------------

    def test_a_new_version_trains_the_frozen_spec_in_that_very_hook(self, unit: LoopUnit):
        state = unit.ctx.run(unit.ctx.on.config_changed(), related(unit, approach_relation()))
        assert kinds(unit) == [("train", "v2")]  # the version in use, on relating
        state = changed(unit, state, "mlops-dataset", latest_version="v3")
        assert kinds(unit) == [("train", "v2"), ("train", "v3")]
        run = unit.started()[-1]
        assert run.options["--spec"] == SPEC and json.loads(run.options["--params"]) == {"C": 2}
        assert "--approach" not in run.options  # the settings say it
        assert run.settings["MLOPS_APPROACH"] == "data-centric"
        assert run.settings["MLOPS_APPROACH_REVISION"] == "3"
        assert run.settings["MLFLOW_EXPERIMENT_NAME"] == f"{EXPERIMENT}-{SPEC}"
        assert acknowledged(state) == {"service": "training", "applied_revision": 3}
        assert state.unit_status.message.endswith("; data-centric loop: training on v3")
        (job, *_rest) = listed(unit, state)
        assert job["id"] == run.job
        assert job["params"]["started_by"] == "data-centric loop, policy revision 3"

    def test_no_hook_starts_a_version_twice(self, unit: LoopUnit):
        state = related(unit, approach_relation())
        on = unit.ctx.on
        for hook in (
            lambda state: on.relation_changed(relation(state, "mlops-approach")),
            lambda state: on.relation_changed(relation(state, "mlops-dataset")),
            lambda _state: on.update_status(),
            lambda _state: on.config_changed(),
            lambda _state: on.leader_elected(),
        ):
            state = unit.ctx.run(hook(state), state)
        state = unit.restarted(state)
        state = unit.ctx.run(on.update_status(), state)
        assert kinds(unit) == [("train", "v2")]

    def test_a_successful_train_starts_its_error_analysis_in_its_end_hook(self, unit: LoopUnit):
        state = related(unit, approach_relation(), relabel=True)
        state = unit.ctx.run(unit.ctx.on.config_changed(), state)
        (train,) = unit.started()
        state = unit.end(state, train.job, {"run_id": "r0"})
        assert kinds(unit) == [("train", "v2"), ("error-analysis", "v2")]
        analysis = unit.started()[-1]
        assert analysis.options["--top-k"] == "25" and analysis.options["--spec"] == SPEC
        assert analysis.settings["MLFLOW_EXPERIMENT_NAME"] == f"{EXPERIMENT}-{SPEC}"
        assert state.unit_status.message.endswith(
            "; data-centric loop: error analysis of v2 running"
        )
        state = unit.end(state, analysis.job, {"run_id": "r1", "relabel_batch": BATCH})
        assert app_data(state, relation(state, "mlops-relabel")) == {"batches": [BATCH]}
        state = unit.ctx.run(unit.ctx.on.update_status(), state)
        assert len(unit.started()) == 2
        assert state.unit_status.message.endswith("; data-centric loop: error analysis of v2 done")

    def test_relabel_top_k_zero_stops_after_training(self, unit: LoopUnit):
        state = unit.ctx.run(
            unit.ctx.on.config_changed(), related(unit, approach_relation(relabel_top_k=0))
        )
        state = unit.end(state, unit.started()[0].job, {"run_id": "r0"})
        assert kinds(unit) == [("train", "v2")]
        assert state.unit_status.message.endswith("; data-centric loop: trained v2")

    def test_a_failed_run_is_reported_and_tried_again_only_on_a_new_version_or_revision(
        self, unit: LoopUnit
    ):
        state = unit.ctx.run(unit.ctx.on.config_changed(), related(unit, approach_relation()))
        state = unit.end(state, unit.started()[0].job, {}, succeeded=False)
        assert state.unit_status.message.endswith(
            "; data-centric loop: train on v2 failed (list-jobs)"
        )
        for _ in range(3):
            state = unit.ctx.run(unit.ctx.on.update_status(), state)
        assert listed(unit, state)[0]["state"] == "failed"
        assert kinds(unit) == [("train", "v2")]
        state = changed(unit, state, "mlops-approach", revision=4)
        assert kinds(unit) == [("train", "v2"), ("train", "v2")]
        state = changed(unit, state, "mlops-dataset", latest_version="v3")
        assert kinds(unit)[-1] == ("train", "v3")

    def test_train_on_new_version_off_trains_nothing(self, unit: LoopUnit):
        approach = approach_relation(train_on_new_version=False)
        state = unit.ctx.run(unit.ctx.on.config_changed(), related(unit, approach))
        state = changed(unit, state, "mlops-dataset", latest_version="v3")
        assert unit.started() == []
        assert acknowledged(state)["applied_revision"] == 3
        assert state.unit_status.message.endswith("; data-centric loop: trains on demand")

    def test_the_relation_before_the_registry_waits_then_trains(self, unit: LoopUnit):
        state = related(unit, approach_relation(), latest=None)
        registry = relation(state, "mlops-dataset")
        alone = dataclasses.replace(state, relations=state.relations - {registry})
        state = unit.ctx.run(
            unit.ctx.on.relation_created(relation(alone, "mlops-approach")), alone
        )
        assert acknowledged(state) == {
            "service": "training",
            "applied_revision": 0,
            "reason": "no data registry: relate mlops-dataset to data-versioning-k8s",
            "waiting": True,
        }
        state = dataclasses.replace(state, relations=state.relations | {registry})
        state = unit.ctx.run(unit.ctx.on.relation_created(registry), state)
        assert unit.started() == []  # the registry has no version yet
        assert acknowledged(state) == {"service": "training", "applied_revision": 3}
        state = changed(unit, state, "mlops-dataset", latest_version="v1")
        assert kinds(unit) == [("train", "v1")]

    def test_a_bad_policy_is_a_status_not_a_traceback(self, unit: LoopUnit):
        state = related(unit, approach_relation())
        state = published(state, "mlops-approach", mode="sideways")
        state = unit.ctx.run(unit.ctx.on.config_changed(), state)
        assert state.unit_status.name == "blocked"
        assert state.unit_status.message.startswith("mlops-approach: invalid data")
        assert acknowledged(state)["reason"].startswith("mlops-approach: invalid data")
        assert unit.started() == []

    def test_transforms_without_a_step_block_and_say_so(self, unit: LoopUnit):
        approach = approach_relation(augmentation={"copies": 2})
        state = unit.ctx.run(unit.ctx.on.config_changed(), related(unit, approach))
        assert state.unit_status == testing.BlockedStatus(
            "data-centric loop: invalid policy: transforms must name image or text steps:"
            ' {"image": [...]}'
        )
        assert acknowledged(state)["applied_revision"] == 0
        assert unit.started() == []

    def test_the_relation_removed_is_back_to_manual(self, unit: LoopUnit):
        state = unit.ctx.run(unit.ctx.on.config_changed(), related(unit, approach_relation()))
        approach = relation(state, "mlops-approach")
        state = unit.ctx.run(unit.ctx.on.relation_broken(approach), state)
        state = dataclasses.replace(state, relations=state.relations - {approach})
        state = changed(unit, state, "mlops-dataset", latest_version="v3")
        assert kinds(unit) == [("train", "v2")]
        assert "loop" not in state.unit_status.message
        unit.ctx.run(unit.ctx.on.action("train", params={"spec": SPEC}), state)
        assert "MLOPS_APPROACH" not in unit.started()[-1].settings

    def test_a_non_leader_starts_and_acknowledges_nothing(self, unit: LoopUnit):
        state = related(unit, approach_relation(), leader=False)
        state = unit.ctx.run(unit.ctx.on.config_changed(), state)
        assert unit.started() == [] and acknowledged(state) == {}

    # --- data-centric with augmentation -----------------------------------------------------

    def test_a_new_version_is_augmented_then_the_augmented_one_trained(self, unit: LoopUnit):
        approach = approach_relation(augmentation={**TRANSFORMS, "seed": 7})
        state = unit.ctx.run(unit.ctx.on.config_changed(), related(unit, approach))
        (augment,) = unit.started()
        assert augment.kind == "augment" and augment.options["--version"] == "v2"
        assert json.loads(augment.options["--transforms"]) == TRANSFORMS
        assert augment.options["--seed"] == "7" and "--allow-unchanged" in augment.options
        assert augment.settings["MLOPS_APPROACH"] == "data-centric"
        state = unit.end(state, augment.job, {"version": "v3", "parent": "v2"})
        assert len(unit.started()) == 1  # v3 is trained once the registry publishes it
        assert state.unit_status.message.endswith("; data-centric loop: augmented v2 into v3")
        state = changed(unit, state, "mlops-dataset", latest_version="v3")
        assert kinds(unit) == [("augment", "v2"), ("train", "v3")]  # never augmented again

    def test_the_registry_publishing_before_the_augmentation_ends_waits_for_its_end(
        self, unit: LoopUnit
    ):
        approach = approach_relation(augmentation=TRANSFORMS)
        state = unit.ctx.run(unit.ctx.on.config_changed(), related(unit, approach))
        (augment,) = unit.started()
        state = changed(unit, state, "mlops-dataset", latest_version="v3")  # the job's tag
        assert len(unit.started()) == 1
        state = unit.end(state, augment.job, {"version": "v3"})
        assert kinds(unit) == [("augment", "v2"), ("train", "v3")]

    def test_a_version_augmented_already_is_trained_as_it_is(self, unit: LoopUnit):
        approach = approach_relation(augmentation=TRANSFORMS)
        state = unit.ctx.run(unit.ctx.on.config_changed(), related(unit, approach))
        state = unit.end(state, unit.started()[0].job, {"version": None, "unchanged": True})
        assert kinds(unit) == [("augment", "v2"), ("train", "v2")]

    def test_augmentation_without_write_access_says_so(self, unit: LoopUnit):
        approach = approach_relation(augmentation=TRANSFORMS)
        state = related(unit, approach, access="read")
        state = unit.ctx.run(unit.ctx.on.config_changed(), state)
        reason = "augmentation needs write access: the registry granted read"
        assert acknowledged(state) == {
            "service": "training",
            "applied_revision": 0,
            "reason": reason,
        }
        assert state.unit_status == testing.BlockedStatus(f"data-centric loop: {reason}")
        assert unit.started() == []

    # --- model-centric ----------------------------------------------------------------------

    def test_a_revision_with_a_sweep_sweeps_the_pinned_version_once(self, unit: LoopUnit):
        approach = approach_relation("model-centric", 5)
        state = unit.ctx.run(unit.ctx.on.config_changed(), related(unit, approach))
        (sweep,) = unit.started()
        assert sweep.kind == "sweep" and sweep.options["--version"] == "v1"
        assert json.loads(sweep.options["--grid"]) == [{"C": [1]}, {"C": [10]}]
        assert json.loads(sweep.options["--params"]) == {"max_features": 500}
        assert sweep.options["--metric"] == "f1_macro"
        assert sweep.options["--promote"] == "champion"
        assert sweep.settings["MLOPS_APPROACH"] == "model-centric"
        assert sweep.settings["MLOPS_APPROACH_REVISION"] == "5"
        assert sweep.settings["MLFLOW_EXPERIMENT_NAME"] == f"{EXPERIMENT}-dataset-v1"
        assert acknowledged(state) == {"service": "training", "applied_revision": 5}
        assert state.unit_status.message.endswith("; model-centric: sweep on v1 running")
        state = changed(unit, state, "mlops-dataset", latest_version="v3")  # ignored
        state = unit.ctx.run(unit.ctx.on.update_status(), state)
        state = unit.end(state, sweep.job, {"parent_run_id": "p"})
        assert len(unit.started()) == 1
        assert state.unit_status.message.endswith("; model-centric: swept v1")

    def test_without_a_pinned_version_it_waits_for_the_registry_to_pin_one(self, unit: LoopUnit):
        previous = approach_relation("data-centric", 4, train_on_new_version=False)
        state = unit.ctx.run(unit.ctx.on.config_changed(), related(unit, previous))
        state = changed(
            unit, state, "mlops-approach", mode="model-centric", revision=5,
            policy={**MODEL_CENTRIC, "dataset_version": None},
        )  # fmt: skip
        assert acknowledged(state) == {
            "service": "training",
            "applied_revision": 4,
            "reason": "waiting for the registry to pin a version",
            "waiting": True,
        }
        assert state.unit_status == testing.WaitingStatus(
            "model-centric: waiting for the registry to pin a version"
        )
        assert unit.started() == []
        state = changed(unit, state, "mlops-dataset", pinned_version="v2")
        assert kinds(unit) == [("sweep", "v2")]
        assert acknowledged(state) == {"service": "training", "applied_revision": 5}

    def test_a_new_revision_sweeps_again_once_the_previous_sweep_ended(self, unit: LoopUnit):
        state = unit.ctx.run(
            unit.ctx.on.config_changed(), related(unit, approach_relation("model-centric", 5))
        )
        state = changed(unit, state, "mlops-approach", revision=6)
        assert len(unit.started()) == 1  # one loop run in flight per version
        assert acknowledged(state)["applied_revision"] == 6
        state = unit.end(state, unit.started()[0].job, {"parent_run_id": "p"})
        assert kinds(unit) == [("sweep", "v1"), ("sweep", "v1")]

    def test_a_policy_without_a_sweep_is_applied_and_runs_nothing(self, unit: LoopUnit):
        approach = approach_relation("model-centric", 5, sweep=None)
        state = unit.ctx.run(unit.ctx.on.config_changed(), related(unit, approach))
        assert unit.started() == []
        assert acknowledged(state) == {"service": "training", "applied_revision": 5}
        assert state.unit_status.message.endswith("; model-centric: no sweep in the policy")

    @pytest.mark.parametrize(
        ("sweep", "reason"),
        [
            ([{"spec": "image-svc", "C": 1}], "sweep configuration 1 names spec image-svc"),
            ([{"C": 1}, {"spec": SPEC, "C": 10}], None),
        ],
    )
    def test_a_configuration_naming_another_spec_blocks(
        self, unit: LoopUnit, sweep: list[dict[str, Any]], reason: str | None
    ):
        approach = approach_relation("model-centric", 5, sweep=sweep)
        state = unit.ctx.run(unit.ctx.on.config_changed(), related(unit, approach))
        if reason is None:
            (run,) = unit.started()
            assert json.loads(run.options["--grid"]) == [{"C": [1]}, {"C": [10]}]
            return
        assert state.unit_status.name == "blocked" and reason in state.unit_status.message
        assert reason in acknowledged(state)["reason"] and unit.started() == []
