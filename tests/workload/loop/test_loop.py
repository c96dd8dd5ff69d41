"""The stack's loop end to end: one data-centric iteration, then the switch to model-centric.

The five charms of bundle.yaml run as one Juju model (stack.py: the charms through
ops.testing, every workload real, Juju's transport simulated). A person's steps are actions
and Label Studio REST calls; every other step is the charms' own, on the events Juju gives
them (loop.py). The test asserts each step's result, that every run in MLflow points at its
dataset version, and prints where the time went between an export and its run being logged.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from ops import testing

from tests.workload.loop.loop import (
    APPROACH_CONFIG,
    DISAGREE,
    WRONG,
    Loop,
    data_centric_iteration,
    print_timings,
    run_tag,
    switch_to_model_centric,
)
from tests.workload.loop.stack import APPS, Stack, running_stack
from tests.workload.pebble_backed import shared_folder
from tests.workload.training.harness import reviews

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with shared_folder("mlops-loop-") as base, running_stack(base, APPROACH_CONFIG) as running:
        yield running


def test_one_data_centric_iteration_then_a_model_centric_sweep(stack: Stack):
    loop = Loop(stack)
    model = stack.model
    started = time.monotonic()
    # The switch is in force everywhere: every service applied revision 1.
    assert model.status("mlops-approach") == testing.ActiveStatus(
        "data-centric (rev 1): applied by 4/4"
    )

    seen = data_centric_iteration(loop)

    # v1, the raw texts: training saw it and skipped it (no labels), without failing.
    assert seen.raw_version == "v1"
    assert seen.raw_training is not None and seen.raw_training.state == "succeeded"
    assert (seen.raw_training.result or {})["skipped"].startswith("v1 has no labels")
    # v1 imported with the approach's overlap: two annotators a task.
    assert seen.tasks_created == len(reviews())
    assert seen.overlap == 2
    assert seen.annotations == 2 * len(reviews())
    # The gate refused the planted disagreements and named them; fixed, the export went on.
    assert "alpha" in seen.refusal and "0.8" in seen.refusal, seen.refusal
    assert any(item in seen.refusal for item in DISAGREE), seen.refusal
    assert seen.corrected == len(DISAGREE)
    # v2 and v3 each reached training by themselves; error analysis followed each.
    assert seen.versions == ["v2", "v3"]
    for version in ("v2", "v3"):
        assert seen.analysed[version].state == "succeeded", seen.analysed[version].error
    # Error analysis found the labels both annotators got wrong; they came back as tasks.
    assert 0 < len(seen.relabel_items) <= APPROACH_CONFIG["relabel-top-k"]
    found = set(seen.relabel_items) & set(WRONG)
    assert len(found) >= len(WRONG) - 1, f"error analysis found {sorted(found)} of {WRONG}"
    assert seen.relabel_tasks == set(seen.relabel_items)
    # Training on v3 learnt from the corrected labels: better than on v2.
    accuracy = {
        v: (seen.trained[v].result or {})["metrics"]["cv_accuracy_mean"] for v in ("v2", "v3")
    }
    assert accuracy["v3"] > accuracy["v2"], accuracy

    # Every run in tracking points at its dataset version, tagged with the mode and revision.
    runs = loop.runs()
    assert {run_tag(r, "dataset-version") for r in runs} == {"v2", "v3"}
    for run in runs:
        assert run_tag(run, "approach") == "data-centric", run["info"]
        assert run_tag(run, "approach_revision") == "1", run["info"]

    switch = switch_to_model_centric(loop)

    # The registry pinned the latest version; the sweep ran on it and promoted the best.
    assert (switch.revision, switch.pinned) == ("2", "v3")
    assert switch.sweep.state == "succeeded", switch.sweep.error
    assert switch.champion["version"] == str((switch.sweep.result or {})["promoted"]["version"])
    assert model.status("mlops-approach") == testing.ActiveStatus(
        "model-centric (rev 2): applied by 4/4"
    )
    # A new version is published as latest, the pin holds, and no training starts.
    assert switch.later_version == "v4"
    published = switch.later_published
    assert (published["latest_version"], published["pinned_version"]) == ("v4", "v3")
    assert switch.jobs_started_after == 0
    statuses = {app: model.status(app) for app in APPS}
    assert all(status.name == "active" for status in statuses.values()), statuses

    print_timings(loop, time.monotonic() - started)
