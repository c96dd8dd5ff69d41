"""The status cases both labelling charms share: one behaviour, one test, run on each charm.

Config, the database, the registry, re-label batches, scale-out and Label Studio's readiness
give the same statuses on Kubernetes and on a machine (``mlops_charms.labelling_server``): each
charm's ``test_status.py`` subclasses ``StatusCases``. The fixtures they use (``ctx``,
``make_state``, ``healthy``, and ``url``: where the charm says Label Studio is) are each
charm's conftest's.
"""

from __future__ import annotations

import json

import ops
import pytest
from ops import testing

from tests.labelling_testing import (
    database_relation,
    database_secret,
    dataset_relation,
    registry_secret,
    relabel_relation,
)

ALONE = "{serving}; no data registry related"
BATCH = {"batch_id": "b1", "items": ["texts/a.txt"], "project": "reviews"}


def status_after(ctx, state: testing.State, event=None) -> ops.StatusBase:
    return ctx.run(event or ctx.on.update_status(), state).unit_status


def registry(**fields):
    secret = registry_secret()
    return {"relations": {dataset_relation(secret, **fields)}, "secrets": {secret}}


def database(**fields):
    secret = database_secret()
    return {"relations": {database_relation(secret, **fields)}, "secrets": {secret}}


def relabel(*batches, **kwargs):
    return {"relations": {relabel_relation(*batches, **kwargs)}}


# The Active messages name the charm's URL: "{serving}" is "serving at <its url>".
STATUSES = {
    "active with the registry": (registry(), testing.ActiveStatus("{serving}")),
    "active alone": ({}, testing.ActiveStatus(ALONE)),
    "active on postgresql": (database(), testing.ActiveStatus(ALONE)),
    "bad config": (
        {"config": {"port": 8}},
        testing.BlockedStatus("invalid config: port: must be between 1024 and 65535"),
    ),
    "database credentials": (
        {"relations": {testing.Relation("database", remote_app_name="postgresql-k8s")}},
        testing.WaitingStatus("waiting for database credentials"),
    ),
    "bad database endpoints": (
        database(endpoints="no-port"),
        testing.BlockedStatus("database provider sent bad endpoints 'no-port'"),
    ),
    "registry not answered": (
        {"relations": {dataset_relation()}},
        testing.WaitingStatus("waiting for the data registry"),
    ),
    "registry write access": (
        registry(access="read"),
        testing.WaitingStatus("mlops-dataset: waiting for write access"),
    ),
    "registry CA not PEM": (
        registry(ca="not a certificate"),
        testing.BlockedStatus(
            "mlops-dataset: invalid data from data-versioning-k8s: ca: Value error, "
            "must be PEM certificates"
        ),
    ),
    "registry secret not granted": (
        {"relations": {dataset_relation(registry_secret())}},
        testing.BlockedStatus("mlops-dataset: credentials secret not readable"),
    ),
    "relabel batch incomplete": (
        relabel({"batch_id": "b1"}),
        testing.BlockedStatus("mlops-relabel: a batch lacks batch_id or items"),
    ),
    "relabel batch without project": (
        relabel({"batch_id": "b1", "items": ["texts/a.txt"]}),
        testing.BlockedStatus("mlops-relabel: a batch names no project: set relabel-project"),
    ),
    "relabel batches acknowledged": (
        relabel(BATCH, local_app_data={"queued": json.dumps(["b1"])}),
        testing.ActiveStatus(ALONE),
    ),
    "relabel batch failed": (
        relabel(BATCH, local_app_data={"failed": json.dumps(["b1"])}),
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
    "scale-out on postgresql": ({**database(), "planned_units": 2}, testing.ActiveStatus(ALONE)),
}


class StatusCases:
    """The substrate-neutral status tests; a ``Test...`` subclass runs them on a charm."""

    @pytest.mark.parametrize(("state", "status"), STATUSES.values(), ids=STATUSES.keys())
    def test_status(self, ctx, make_state, url, state, status):
        expected = type(status)(status.message.format(serving=f"serving at {url}"))
        assert status_after(ctx, make_state(**state)) == expected

    def test_waiting_while_label_studio_starts(self, ctx, make_state, healthy):
        healthy["up"] = False
        assert status_after(ctx, make_state()) == testing.WaitingStatus(
            "waiting for Label Studio to become ready"
        )

    def test_bad_config_hides_every_other_status(self, ctx, make_state):
        state = make_state(config={"overlap": 11}, **registry(access="read"))
        assert status_after(ctx, state) == testing.BlockedStatus(
            "invalid config: overlap: must be between 1 and 10"
        )

    def test_a_blocked_relation_wins_over_waiting_for_label_studio(self, ctx, make_state, healthy):
        healthy["up"] = False
        assert status_after(ctx, make_state(**relabel({"batch_id": "b1"}))) == (
            testing.BlockedStatus("mlops-relabel: a batch lacks batch_id or items")
        )

    def test_a_non_leader_of_several_units_is_blocked_too(self, ctx, make_state, healthy):
        healthy["up"] = False  # it stopped Label Studio
        assert status_after(ctx, make_state(leader=False, planned_units=2)) == (
            testing.BlockedStatus("scale-out needs the database relation: SQLite is per unit")
        )
