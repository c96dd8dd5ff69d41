"""The workload the charm plans: Label Studio's layer, its secret file, no needless restarts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from labelling_testing import (
    ADMIN_PASSWORD,
    ADMIN_TOKEN,
    DATA_DIR,
    DB_HOST,
    DB_PASSWORD,
    SECRET_KEY,
    database_relation,
    database_secret,
)
from ops import testing

SERVICE = "label-studio"


def _service(state: testing.State):
    return state.get_container(SERVICE).plan.services[SERVICE]


def test_pebble_ready_runs_label_studio_init_then_uwsgi_with_sqlite(ctx, make_state):
    state = ctx.run(ctx.on.pebble_ready(make_state().get_container(SERVICE)), make_state())
    service = _service(state)
    assert "label-studio init --quiet" in service.command
    assert "exec /opt/label-studio/bin/uwsgi --master --http 0.0.0.0:8080" in service.command
    env = service.environment
    assert env["LABEL_STUDIO_BASE_DATA_DIR"] == DATA_DIR
    assert env["LATEST_VERSION_CHECK"] == "false"
    assert env["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true"
    assert "DJANGO_DB" not in env  # the embedded default: SQLite on the storage
    check = state.get_container(SERVICE).plan.checks["label-studio-ready"]
    assert check.http == {"url": "http://127.0.0.1:8080/health"}


def test_secrets_go_to_a_file_the_command_sources_not_to_the_plan(ctx, make_state, data_dir):
    state = ctx.run(ctx.on.config_changed(), make_state())
    plan = str(state.get_container(SERVICE).plan.to_dict())
    for secret in (ADMIN_PASSWORD, ADMIN_TOKEN, SECRET_KEY):
        assert secret not in plan
    secrets_env = (Path(data_dir) / "secrets" / "secrets.env").read_text()
    assert f"export LABEL_STUDIO_PASSWORD={ADMIN_PASSWORD}" in secrets_env
    assert f"export LABEL_STUDIO_USER_TOKEN={ADMIN_TOKEN}" in secrets_env
    assert f". {DATA_DIR}/secrets/secrets.env" in _service(state).command


def test_the_leader_creates_the_admin_secret_once(ctx, make_state):
    state = ctx.run(ctx.on.config_changed(), make_state(admin_secret_exists=False))
    (secret,) = [s for s in state.secrets if s.label == "label-studio-server"]
    assert set(secret.tracked_content) == {"admin-password", "admin-token", "secret-key"}
    again = ctx.run(ctx.on.config_changed(), state)
    assert [s.tracked_content for s in again.secrets if s.label == "label-studio-server"] == [
        secret.tracked_content
    ]


def test_a_follower_without_the_admin_secret_plans_nothing(ctx, make_state):
    state = ctx.run(ctx.on.config_changed(), make_state(leader=False, admin_secret_exists=False))
    assert SERVICE not in state.get_container(SERVICE).plan.services
    assert state.unit_status == testing.WaitingStatus(
        "waiting for the leader to create the admin secret"
    )


def test_database_relation_switches_label_studio_to_postgresql(ctx, make_state, data_dir):
    secret = database_secret()
    relation = database_relation(secret)
    state = ctx.run(
        ctx.on.relation_changed(relation), make_state(relations={relation}, secrets={secret})
    )
    env = _service(state).environment
    assert (env["DJANGO_DB"], env["POSTGRE_HOST"], env["POSTGRE_PORT"]) == (
        "default",
        DB_HOST,
        "5432",
    )
    assert env["POSTGRE_NAME"] == "label_studio"
    assert DB_PASSWORD not in str(env)
    secrets_env = (Path(data_dir) / "secrets" / "secrets.env").read_text()
    assert f"export POSTGRE_PASSWORD={DB_PASSWORD}" in secrets_env


def test_an_unchanged_goal_state_restarts_nothing(ctx, make_state, pebble_calls):
    first = ctx.run(ctx.on.config_changed(), make_state())
    assert pebble_calls == ["replan"]
    pebble_calls.clear()
    ctx.run(ctx.on.update_status(), first)
    assert pebble_calls == []


def test_a_new_port_replans_and_opens_it(ctx, make_state, pebble_calls):
    first = ctx.run(ctx.on.config_changed(), make_state())
    pebble_calls.clear()
    state = ctx.run(ctx.on.config_changed(), dataclasses.replace(first, config={"port": 9090}))
    assert pebble_calls == ["replan"]
    assert "--http 0.0.0.0:9090" in _service(state).command
    assert state.opened_ports == {testing.TCPPort(9090)}


def test_bad_config_blocks_and_plans_nothing(ctx, make_state):
    state = ctx.run(ctx.on.config_changed(), make_state(config={"overlap": 0}))
    assert state.unit_status == testing.BlockedStatus(
        "invalid config: overlap: must be between 1 and 10"
    )
    assert SERVICE not in state.get_container(SERVICE).plan.services
