"""Every status the unit can reach: the cases shared with the machine charm, and its own."""

from __future__ import annotations

from ops import testing
from workload_jobs import LATER

from tests.labelling_status_cases import BATCH, StatusCases, registry, relabel, status_after


class TestStatus(StatusCases):
    """The shared status cases, on labelling-k8s."""


def test_waiting_for_batches_to_queue(ctx, make_state, workload_jobs):
    workload_jobs.succeeds("relabel", {"queued": 1}, ends=LATER)
    state = make_state(**relabel(BATCH, {**BATCH, "batch_id": "b2"}))
    assert status_after(ctx, state) == testing.WaitingStatus("mlops-relabel: 2 batches to queue")


def test_waiting_for_pebble(ctx, make_state, make_container):
    state = make_state(container=make_container(can_connect=False))
    assert status_after(ctx, state) == testing.WaitingStatus(
        "waiting for Pebble in the label-studio container"
    )


def test_bad_config_hides_waiting_for_pebble(ctx, make_state, make_container):
    state = make_state(
        container=make_container(can_connect=False),
        config={"overlap": 11},
        **registry(access="read"),
    )
    assert status_after(ctx, state) == testing.BlockedStatus(
        "invalid config: overlap: must be between 1 and 10"
    )
