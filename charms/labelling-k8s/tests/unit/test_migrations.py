"""Migrations on a shared (PostgreSQL) database: the leader's, before any unit serves it."""

from __future__ import annotations

import pytest
from conftest import MIGRATE_PYTHON
from ops import pebble, testing

from mlops_charms import label_studio
from tests.labelling_testing import (
    DB_HOST,
    database_relation,
    database_secret,
    migrated_peers,
)

SERVICE = "label-studio"
MARK = f"{label_studio.VERSION} {DB_HOST}:5432/label_studio"
WAITING = f"waiting for the leader to migrate the database to Label Studio {label_studio.VERSION}"


@pytest.fixture
def database() -> tuple[testing.Relation, testing.Secret]:
    secret = database_secret()
    return database_relation(secret), secret


def _migrations(ctx) -> list[list[str]]:
    return [e.command for e in ctx.exec_history.get(SERVICE, []) if e.command[0] == MIGRATE_PYTHON]


def _command(state: testing.State) -> str:
    return state.get_container(SERVICE).plan.services[SERVICE].command


def test_the_leader_migrates_then_records_the_mark_and_serves(ctx, make_state, database):
    relation, secret = database
    peers = testing.PeerRelation("labelling-peers")
    state = ctx.run(
        ctx.on.relation_changed(relation),
        make_state(relations={relation, peers}, secrets={secret}),
    )
    (migration,) = _migrations(ctx)
    assert "migrate" in migration[-1]
    assert state.get_relation(peers.id).local_app_data["migrated"] == MARK
    assert state.get_container(SERVICE).service_statuses[SERVICE] == pebble.ServiceStatus.ACTIVE
    assert isinstance(state.unit_status, testing.ActiveStatus)


def test_the_leader_does_not_migrate_again_once_marked(ctx, make_state, database):
    relation, secret = database
    state = make_state(relations={relation, migrated_peers()}, secrets={secret})
    ctx.run(ctx.on.update_status(), state)
    assert _migrations(ctx) == []


def test_another_unit_waits_for_the_leaders_mark_without_migrating(ctx, make_state, database):
    relation, secret = database
    peers = migrated_peers(mark=f"1.22.0 {DB_HOST}:5432/label_studio")  # the previous release
    state = ctx.run(
        ctx.on.relation_changed(relation),
        make_state(leader=False, planned_units=2, relations={relation, peers}, secrets={secret}),
    )
    assert _migrations(ctx) == []
    assert SERVICE not in state.get_container(SERVICE).plan.services
    assert state.unit_status == testing.WaitingStatus(WAITING)


def test_another_unit_serves_once_marked_and_its_start_migrates_nothing(ctx, make_state, database):
    relation, secret = database
    state = ctx.run(
        ctx.on.relation_changed(relation),
        make_state(
            leader=False, planned_units=2, relations={relation, migrated_peers()}, secrets={secret}
        ),
    )
    assert _migrations(ctx) == []
    assert state.get_container(SERVICE).service_statuses[SERVICE] == pebble.ServiceStatus.ACTIVE
    assert " init " not in _command(state)  # every label-studio command migrates: none runs
    assert isinstance(state.unit_status, testing.ActiveStatus)


def test_a_failed_migration_keeps_the_server_stopped_and_blocks_with_the_reason(
    ctx, make_state, make_container, database
):
    relation, secret = database
    peers = testing.PeerRelation("labelling-peers")
    failing = testing.Exec(
        [MIGRATE_PYTHON], return_code=1, stderr='django.db.utils.ProgrammingError: "x" exists\n'
    )
    state = ctx.run(
        ctx.on.relation_changed(relation),
        make_state(
            relations={relation, peers},
            secrets={secret},
            container=make_container(execs={failing}),
        ),
    )
    assert SERVICE not in state.get_container(SERVICE).plan.services
    shared = state.get_relation(peers.id).local_app_data
    assert "migrated" not in shared
    assert shared["migration-failed"].startswith(MARK)
    assert isinstance(state.unit_status, testing.BlockedStatus)
    assert 'ProgrammingError: "x" exists' in state.unit_status.message
    assert "previous schema" in state.unit_status.message


def test_sqlite_is_migrated_by_each_units_own_start(ctx, make_state):
    state = ctx.run(ctx.on.config_changed(), make_state())
    assert _migrations(ctx) == []
    assert " init --quiet" in _command(state)
