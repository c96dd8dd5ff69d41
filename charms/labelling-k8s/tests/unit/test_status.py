"""Every status the unit can reach, and which one wins."""

from __future__ import annotations

import json

import pytest
from labelling_testing import (
    database_relation,
    database_secret,
    dataset_relation,
    registry_secret,
    relabel_relation,
)
from ops import testing
from workload_jobs import LATER

SERVING = "serving at http://labelling-k8s.mlops.svc.cluster.local:8080"
ALONE = f"{SERVING}; no data registry related"
BATCH = {"batch_id": "b1", "items": ["texts/a.txt"], "project": "reviews"}


def _registry(**fields):
    secret = registry_secret()
    return {"relations": {dataset_relation(secret, **fields)}, "secrets": {secret}}


def _database(**fields):
    secret = database_secret()
    return {"relations": {database_relation(secret, **fields)}, "secrets": {secret}}


def _relabel(*batches, **kwargs):
    return {"relations": {relabel_relation(*batches, **kwargs)}}


STATUSES = {
    "active with the registry": (_registry(), testing.ActiveStatus(SERVING)),
    "active alone": ({}, testing.ActiveStatus(ALONE)),
    "active on postgresql": (_database(), testing.ActiveStatus(ALONE)),
    "bad config": (
        {"config": {"port": 8}},
        testing.BlockedStatus("invalid config: port: must be between 1024 and 65535"),
    ),
    "database credentials": (
        {"relations": {testing.Relation("database", remote_app_name="postgresql-k8s")}},
        testing.WaitingStatus("waiting for database credentials"),
    ),
    "bad database endpoints": (
        _database(endpoints="no-port"),
        testing.BlockedStatus("database provider sent bad endpoints 'no-port'"),
    ),
    "registry not answered": (
        {"relations": {dataset_relation()}},
        testing.WaitingStatus("waiting for the data registry"),
    ),
    "registry write access": (
        _registry(access="read"),
        testing.WaitingStatus("mlops-dataset: waiting for write access"),
    ),
    "registry secret not granted": (
        {"relations": {dataset_relation(registry_secret())}},
        testing.BlockedStatus("mlops-dataset: credentials secret not readable"),
    ),
    "relabel batch incomplete": (
        _relabel({"batch_id": "b1"}),
        testing.BlockedStatus("mlops-relabel: a batch lacks batch_id or items"),
    ),
    "relabel batch without project": (
        _relabel({"batch_id": "b1", "items": ["texts/a.txt"]}),
        testing.BlockedStatus("mlops-relabel: a batch names no project: set relabel-project"),
    ),
    "relabel batches acknowledged": (
        _relabel(BATCH, local_app_data={"queued": json.dumps(["b1"])}),
        testing.ActiveStatus(ALONE),
    ),
    "relabel batch failed": (
        _relabel(BATCH, local_app_data={"failed": json.dumps(["b1"])}),
        testing.BlockedStatus(
            "mlops-relabel: batches could not be queued: b1 (list-jobs says why)"
        ),
    ),
    "follower without the admin secret": (
        {"leader": False, "admin_secret_exists": False},
        testing.WaitingStatus("waiting for the leader to create the admin secret"),
    ),
    "scale-out without a database": (
        {"planned_units": 2},
        testing.BlockedStatus("scale-out needs the database relation: SQLite is per unit"),
    ),
    "scale-out on postgresql": ({**_database(), "planned_units": 2}, testing.ActiveStatus(ALONE)),
}


@pytest.mark.parametrize(("state", "status"), STATUSES.values(), ids=STATUSES.keys())
def test_status(ctx, make_state, state, status):
    out = ctx.run(ctx.on.update_status(), make_state(**state))
    assert out.unit_status == status


def test_waiting_for_batches_to_queue(ctx, make_state, workload_jobs):
    workload_jobs.succeeds("relabel", {"queued": 1}, ends=LATER)
    state = make_state(**_relabel(BATCH, {**BATCH, "batch_id": "b2"}))
    out = ctx.run(ctx.on.update_status(), state)
    assert out.unit_status == testing.WaitingStatus("mlops-relabel: 2 batches to queue")


def test_waiting_while_label_studio_starts(ctx, make_state, healthy):
    healthy["up"] = False
    state = ctx.run(ctx.on.update_status(), make_state())
    assert state.unit_status == testing.WaitingStatus("waiting for Label Studio to become ready")


def test_waiting_for_pebble(ctx, make_state, make_container):
    state_in = make_state(container=make_container(can_connect=False))
    state = ctx.run(ctx.on.update_status(), state_in)
    assert state.unit_status == testing.WaitingStatus(
        "waiting for Pebble in the label-studio container"
    )


def test_bad_config_hides_every_other_status(ctx, make_state, make_container):
    state_in = make_state(
        container=make_container(can_connect=False),
        config={"overlap": 11},
        **_registry(access="read"),
    )
    state = ctx.run(ctx.on.update_status(), state_in)
    assert state.unit_status == testing.BlockedStatus(
        "invalid config: overlap: must be between 1 and 10"
    )


def test_a_blocked_relation_wins_over_waiting_for_label_studio(ctx, make_state, healthy):
    healthy["up"] = False
    state = ctx.run(ctx.on.update_status(), make_state(**_relabel({"batch_id": "b1"})))
    assert state.unit_status == testing.BlockedStatus(
        "mlops-relabel: a batch lacks batch_id or items"
    )


def test_a_non_leader_of_several_units_is_blocked_too(ctx, make_state, healthy):
    healthy["up"] = False  # it stopped Label Studio
    state = ctx.run(ctx.on.update_status(), make_state(leader=False, planned_units=2))
    assert state.unit_status == testing.BlockedStatus(
        "scale-out needs the database relation: SQLite is per unit"
    )
