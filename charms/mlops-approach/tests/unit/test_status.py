"""The status: how many services applied the policy in force, or which lags and why."""

from __future__ import annotations

import ops
from conftest import service
from ops import testing


def status_with(ctx, peers, *services, leader=True) -> ops.StatusBase:
    state = ctx.run(ctx.on.config_changed(), testing.State(leader=True, relations={peers}))
    state = testing.State(leader=leader, relations={*state.relations, *services})
    return ctx.run(ctx.on.update_status(), state).unit_status


def test_no_service_related_is_active_and_says_so(ctx, peers):
    assert status_with(ctx, peers) == testing.ActiveStatus(
        "data-centric (rev 1): no service related"
    )


def test_every_service_applied_is_active_with_the_count(ctx, peers):
    services = [service(app, applied_revision=1) for app in ("tracking-k8s", "training-k8s")]

    assert status_with(ctx, peers, *services) == testing.ActiveStatus(
        "data-centric (rev 1): applied by 2/2"
    )


def test_a_service_behind_is_waited_for_by_name(ctx, peers):
    services = [service("tracking-k8s", applied_revision=1), service("training-k8s")]

    assert status_with(ctx, peers, *services) == testing.WaitingStatus(
        "data-centric (rev 1): applied by 1/2; waiting for training-k8s at rev 0"
    )


def test_a_service_that_cannot_apply_blocks_with_its_reason(ctx, peers):
    services = [
        service("tracking-k8s", applied_revision=1),
        service("labelling-k8s", applied_revision=0, reason="no project to set the overlap on"),
    ]

    assert status_with(ctx, peers, *services) == testing.BlockedStatus(
        "data-centric (rev 1): applied by 1/2; labelling-k8s: no project to set the overlap on"
    )


def test_a_service_waiting_on_something_that_resolves_by_itself_is_waited_for(ctx, peers):
    services = [
        service("tracking-k8s", applied_revision=0, reason="waiting for MLflow", waiting=True),
        service("labelling-k8s", applied_revision=1),
    ]

    assert status_with(ctx, peers, *services) == testing.WaitingStatus(
        "data-centric (rev 1): applied by 1/2; tracking-k8s: waiting for MLflow"
    )
    # A reason that needs a person blocks, whatever waits beside it.
    blocked = service("training-k8s", applied_revision=0, reason="invalid policy: no spec")
    assert status_with(ctx, peers, *services, blocked) == testing.BlockedStatus(
        "data-centric (rev 1): applied by 1/3; training-k8s: invalid policy: no spec"
    )


def test_bad_acknowledgement_is_a_one_line_reason_not_a_traceback(ctx, peers):
    bad = testing.Relation(
        "mlops-approach",
        remote_app_name="training-k8s",
        remote_app_data={"applied_revision": '"x"'},
    )

    status = status_with(ctx, peers, bad)

    assert isinstance(status, testing.BlockedStatus)
    assert status.message.startswith(
        "data-centric (rev 1): applied by 0/1; training-k8s: invalid data from training-k8s: "
        "applied_revision: "
    )


def test_a_non_leader_reports_the_same_count_from_the_peer_data(ctx, peers):
    services = [service("tracking-k8s", applied_revision=1)]

    assert status_with(ctx, peers, *services, leader=False) == testing.ActiveStatus(
        "data-centric (rev 1): applied by 1/1"
    )


def test_before_the_leader_published_a_unit_waits(ctx, peers):
    state = ctx.run(ctx.on.update_status(), testing.State(leader=False, relations={peers}))

    assert state.unit_status == testing.WaitingStatus(
        "waiting for the leader to publish the policy"
    )
