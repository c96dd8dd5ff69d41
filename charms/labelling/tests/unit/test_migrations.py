"""Migrations on a shared (PostgreSQL) database on machines: the leader's, then the others."""

from __future__ import annotations

from pathlib import Path

from ops import testing

import label_studio_unit
from tests.labelling_testing import database_relation, database_secret, migrated_peers
from tests.systemd_units import systemd_words, unit_settings


def _start_steps() -> list[list[str]]:
    text = Path(label_studio_unit.PATHS.unit_file).read_text()
    return [systemd_words(line) for line in unit_settings(text).get("ExecStartPre", [])]


def test_another_unit_waits_then_starts_without_label_studio_init(ctx, make_state):
    secret = database_secret()
    relation = database_relation(secret)
    waiting = make_state(leader=False, planned_units=2, relations={relation}, secrets={secret})
    state = ctx.run(ctx.on.relation_changed(relation), waiting)
    assert isinstance(state.unit_status, testing.WaitingStatus)
    assert "waiting for the leader to migrate the database" in state.unit_status.message
    assert not Path(label_studio_unit.PATHS.unit_file).exists()

    marked = make_state(
        leader=False, planned_units=2, relations={relation, migrated_peers()}, secrets={secret}
    )
    ctx.run(ctx.on.relation_changed(relation), marked)
    steps = _start_steps()
    assert steps and all("init" not in step for step in steps)


def test_the_leader_migrates_and_its_start_keeps_label_studio_init(ctx, make_state):
    secret = database_secret()
    relation = database_relation(secret)
    peers = testing.PeerRelation("labelling-peers")
    state = ctx.run(
        ctx.on.relation_changed(relation),
        make_state(relations={relation, peers}, secrets={secret}),
    )
    assert state.get_relation(peers.id).local_app_data["migrated"].startswith("1.23.2 ")
    assert [label_studio_unit.PATHS.binaries.label_studio, "init", "--quiet"] in _start_steps()
