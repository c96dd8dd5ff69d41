"""The workload the charm plans: Label Studio's layer, its secret files, no needless restarts."""

from __future__ import annotations

import dataclasses
import stat
from pathlib import Path

import pytest
from ops import pebble, testing

from tests.labelling_testing import (
    ADMIN_PASSWORD,
    ADMIN_TOKEN,
    DATA_DIR,
    DB_CA,
    DB_HOST,
    DB_PASSWORD,
    SECRET_KEY,
    database_relation,
    database_secret,
    database_tls_secret,
    dataset_relation,
    migrated_peers,
    registry_secret,
    relabel_relation,
)

SERVICE = "label-studio"
SCALE_OUT = "scale-out needs the database relation: SQLite is per unit"


def _service(state: testing.State) -> pebble.Service:
    return state.get_container(SERVICE).plan.services[SERVICE]


def _with_container(state: testing.State, **changes) -> testing.State:
    container = dataclasses.replace(state.get_container(SERVICE), **changes)
    return dataclasses.replace(state, containers={container})


# --- every observed event reconciles -----------------------------------------------------------


def _simple(name):
    return lambda ctx, state: (getattr(ctx.on, name)(), state)


def _container_event(name):
    return lambda ctx, state: (getattr(ctx.on, name)(state.get_container(SERVICE)), state)


def _check_event(name, status):
    def build(ctx, state):
        info = testing.CheckInfo(
            "label-studio-ready", level=pebble.CheckLevel.READY, status=status
        )
        # Planned by an earlier hook: the check exists.
        layer: pebble.LayerDict = {
            "checks": {
                "label-studio-ready": {
                    "override": "replace",
                    "level": "ready",
                    "http": {"url": "http://x/health"},
                }
            }
        }
        layers = {"label-studio": pebble.Layer(layer)}
        state = _with_container(state, check_infos={info}, layers=layers)
        return getattr(ctx.on, name)(state.get_container(SERVICE), info), state

    return build


def _storage_attached(ctx, state):
    return ctx.on.storage_attached(next(iter(state.storages))), state


def _relation_event(name, make_relation):
    def build(ctx, state):
        relation = make_relation()
        return getattr(ctx.on, name)(relation), dataclasses.replace(
            state, relations={*state.relations, relation}
        )

    return build


def _database_event(name):
    def build(ctx, state):
        secret = database_secret()
        relation = database_relation(secret)
        state = dataclasses.replace(state, relations={relation}, secrets={*state.secrets, secret})
        if name == "secret_changed":
            return ctx.on.secret_changed(secret), state
        return getattr(ctx.on, name)(relation), state

    return build


def _registry_secret_changed(ctx, state):
    secret = registry_secret()
    state = dataclasses.replace(
        state, relations={dataset_relation(secret)}, secrets={*state.secrets, secret}
    )
    return ctx.on.secret_changed(secret), state


def _notice(ctx, state):
    notice = testing.Notice("mlops-stack.dev/job-finished", last_data={"job": "20260101-ab12"})
    state = _with_container(state, notices=[notice])
    return ctx.on.pebble_custom_notice(state.get_container(SERVICE), notice), state


OBSERVED_EVENTS = {
    "config-changed": _simple("config_changed"),
    "upgrade-charm": _simple("upgrade_charm"),
    "leader-elected": _simple("leader_elected"),
    "update-status": _simple("update_status"),
    "pebble-ready": _container_event("pebble_ready"),
    "pebble-check-failed": _check_event("pebble_check_failed", pebble.CheckStatus.DOWN),
    "pebble-check-recovered": _check_event("pebble_check_recovered", pebble.CheckStatus.UP),
    "storage-attached": _storage_attached,
    "mlops-dataset-relation-created": _relation_event("relation_created", dataset_relation),
    "mlops-dataset-relation-changed": _relation_event("relation_changed", dataset_relation),
    "mlops-dataset-relation-broken": _relation_event("relation_broken", dataset_relation),
    "mlops-relabel-relation-changed": _relation_event("relation_changed", relabel_relation),
    "database-relation-changed": _database_event("relation_changed"),
    "database-relation-broken": _database_event("relation_broken"),
    "database-secret-changed": _database_event("secret_changed"),
    "registry-secret-changed": _registry_secret_changed,
    "job-finished-notice": _notice,
}


@pytest.mark.parametrize("build", OBSERVED_EVENTS.values(), ids=OBSERVED_EVENTS.keys())
def test_every_observed_event_brings_label_studio_up(ctx, make_state, build):
    event, state = build(ctx, make_state())
    out = ctx.run(event, state)
    container = out.get_container(SERVICE)
    assert SERVICE in container.plan.services
    assert container.service_statuses[SERVICE] == pebble.ServiceStatus.ACTIVE
    assert out.opened_ports == {testing.TCPPort(8080), testing.TCPPort(9103)}


# --- the layer -----------------------------------------------------------------------------


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


def test_workers_become_uwsgi_processes(ctx, make_state):
    state = ctx.run(ctx.on.config_changed(), make_state(config={"workers": 3}))
    assert "--processes 3" in _service(state).command


def test_secrets_go_to_a_file_the_command_sources_not_to_the_plan(ctx, make_state, data_dir):
    state = ctx.run(ctx.on.config_changed(), make_state())
    plan = str(state.get_container(SERVICE).plan.to_dict())
    for secret in (ADMIN_PASSWORD, ADMIN_TOKEN, SECRET_KEY):
        assert secret not in plan
    secrets_env = Path(data_dir) / "secrets" / "secrets.env"
    assert stat.S_IMODE(secrets_env.stat().st_mode) == 0o600
    assert f"export LABEL_STUDIO_PASSWORD={ADMIN_PASSWORD}" in secrets_env.read_text()
    assert f"export LABEL_STUDIO_USER_TOKEN={ADMIN_TOKEN}" in secrets_env.read_text()
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


def test_the_charm_removes_a_revision_of_its_secret_no_one_tracks(ctx, make_state):
    state = make_state()
    (secret,) = state.secrets
    ctx.run(ctx.on.secret_remove(secret, revision=2), state)
    assert ctx.removed_secret_revisions == [2]


# --- the database --------------------------------------------------------------------------


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
    assert "PGSSLMODE" not in env  # the server offers no TLS
    assert DB_PASSWORD not in str(env)
    secrets_env = (Path(data_dir) / "secrets" / "secrets.env").read_text()
    assert f"export POSTGRE_PASSWORD={DB_PASSWORD}" in secrets_env


def test_the_leader_asks_postgresql_for_the_label_studio_database(ctx, make_state):
    relation = testing.Relation("database", remote_app_name="postgresql-k8s")
    state = ctx.run(ctx.on.relation_created(relation), make_state(relations={relation}))
    assert state.get_relation(relation.id).local_app_data["database"] == "label_studio"


def test_a_database_with_a_ca_is_verified_against_it(ctx, make_state, data_dir):
    secret, tls = database_secret(), database_tls_secret()
    relation = database_relation(secret, **{"secret-tls": tls.id})
    state = ctx.run(
        ctx.on.relation_changed(relation),
        make_state(relations={relation}, secrets={secret, tls}),
    )
    env = _service(state).environment
    assert env["PGSSLMODE"] == "verify-full"
    assert env["PGSSLROOTCERT"] == f"{DATA_DIR}/secrets/postgresql-ca.pem"
    ca_file = Path(data_dir) / "secrets" / "postgresql-ca.pem"
    assert ca_file.read_text() == DB_CA
    assert stat.S_IMODE(ca_file.stat().st_mode) == 0o600


def test_a_database_with_tls_but_no_ca_requires_tls(ctx, make_state):
    secret = database_secret()
    relation = database_relation(secret, tls="True")
    state = ctx.run(
        ctx.on.relation_changed(relation), make_state(relations={relation}, secrets={secret})
    )
    env = _service(state).environment
    assert env["PGSSLMODE"] == "require"
    assert "PGSSLROOTCERT" not in env


def test_a_bad_database_ca_blocks_and_keeps_the_server_where_it_is(ctx, make_state):
    first = ctx.run(ctx.on.config_changed(), make_state())
    secret, tls = database_secret(), database_tls_secret(ca="not a certificate")
    relation = database_relation(secret, **{"secret-tls": tls.id})
    state_in = dataclasses.replace(
        first, relations={relation}, secrets={*first.secrets, secret, tls}
    )
    state = ctx.run(ctx.on.relation_changed(relation), state_in)
    assert state.unit_status == testing.BlockedStatus("database provider sent a bad tls-ca")
    assert _service(state) == _service(first)


def test_a_database_gone_bad_keeps_the_server_on_it(ctx, make_state, pebble_calls):
    secret = database_secret()
    relation = database_relation(secret)
    on_postgresql = ctx.run(
        ctx.on.relation_changed(relation), make_state(relations={relation}, secrets={secret})
    )
    pebble_calls.clear()
    bad = dataclasses.replace(
        on_postgresql.get_relation(relation.id),
        remote_app_data={**relation.remote_app_data, "endpoints": "no-port"},
    )
    state = ctx.run(
        ctx.on.relation_changed(bad), dataclasses.replace(on_postgresql, relations={bad})
    )
    assert pebble_calls == []
    assert _service(state) == _service(on_postgresql)
    assert state.unit_status == testing.BlockedStatus(
        "database provider sent bad endpoints 'no-port'"
    )


def test_an_incomplete_database_keeps_the_server_on_sqlite(ctx, make_state, pebble_calls):
    first = ctx.run(ctx.on.config_changed(), make_state())
    pebble_calls.clear()
    relation = testing.Relation("database", remote_app_name="postgresql-k8s")
    state = ctx.run(
        ctx.on.relation_changed(relation), dataclasses.replace(first, relations={relation})
    )
    assert pebble_calls == []
    assert "DJANGO_DB" not in _service(state).environment
    assert state.unit_status == testing.WaitingStatus("waiting for database credentials")


def test_breaking_the_database_relation_returns_to_sqlite(ctx, make_state, pebble_calls):
    secret = database_secret()
    relation = database_relation(secret)
    on_postgresql = ctx.run(
        ctx.on.relation_changed(relation), make_state(relations={relation}, secrets={secret})
    )
    pebble_calls.clear()
    state = ctx.run(ctx.on.relation_broken(on_postgresql.get_relation(relation.id)), on_postgresql)
    assert "DJANGO_DB" not in _service(state).environment
    assert pebble_calls == ["restart"]  # secrets.env lost the password: read at start only


def test_a_new_database_password_restarts_the_server_with_it(
    ctx, make_state, data_dir, pebble_calls
):
    secret = database_secret()
    relation = database_relation(secret)
    first = ctx.run(
        ctx.on.relation_changed(relation), make_state(relations={relation}, secrets={secret})
    )
    rotated = dataclasses.replace(
        secret, latest_content={**secret.tracked_content, "password": "n3w"}
    )
    pebble_calls.clear()
    state_in = dataclasses.replace(first, secrets={*(first.secrets - {secret}), rotated})
    ctx.run(ctx.on.secret_changed(rotated), state_in)
    assert pebble_calls == ["restart"]
    assert "export POSTGRE_PASSWORD=n3w" in (Path(data_dir) / "secrets/secrets.env").read_text()


# --- no needless restarts ------------------------------------------------------------------


def test_an_unchanged_goal_state_restarts_nothing(ctx, make_state, pebble_calls):
    first = ctx.run(ctx.on.config_changed(), make_state())
    assert first.get_container(SERVICE).service_statuses[SERVICE] == pebble.ServiceStatus.ACTIVE
    pebble_calls.clear()
    ctx.run(ctx.on.update_status(), first)
    assert pebble_calls == []


def test_a_stopped_server_is_started_again(ctx, make_state, pebble_calls):
    first = ctx.run(ctx.on.config_changed(), make_state())
    stopped = _with_container(first, service_statuses={SERVICE: pebble.ServiceStatus.INACTIVE})
    pebble_calls.clear()
    state = ctx.run(ctx.on.update_status(), stopped)
    assert pebble_calls == ["start"]
    assert state.get_container(SERVICE).service_statuses[SERVICE] == pebble.ServiceStatus.ACTIVE


def test_a_new_port_replans_and_opens_it(ctx, make_state, pebble_calls):
    first = ctx.run(ctx.on.config_changed(), make_state())
    pebble_calls.clear()
    state = ctx.run(ctx.on.config_changed(), dataclasses.replace(first, config={"port": 9090}))
    assert pebble_calls == ["replan"]
    assert "--http 0.0.0.0:9090" in _service(state).command
    assert state.opened_ports == {testing.TCPPort(9090), testing.TCPPort(9103)}


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        ({"port": 80}, "port: must be between 1024 and 65535"),
        ({"workers": 17}, "workers: must be between 1 and 16"),
        ({"overlap": 0}, "overlap: must be between 1 and 10"),
        ({"consistency-threshold": 1.5}, "consistency-threshold: must be between 0 and 1"),
        ({"relabel-project": "two\nlines"}, "relabel-project: must be 1-100 characters"),
    ],
)
def test_bad_config_blocks_and_plans_nothing(ctx, make_state, config, reason):
    state = ctx.run(ctx.on.config_changed(), make_state(config=config))
    assert isinstance(state.unit_status, testing.BlockedStatus)
    assert state.unit_status.message.startswith(f"invalid config: {reason}")
    assert SERVICE not in state.get_container(SERVICE).plan.services
    assert state.opened_ports == frozenset()


def test_without_pebble_the_charm_waits_and_plans_nothing(ctx, make_state, make_container):
    state = ctx.run(
        ctx.on.config_changed(), make_state(container=make_container(can_connect=False))
    )
    assert state.get_container(SERVICE).layers == {}
    assert state.unit_status == testing.WaitingStatus(
        "waiting for Pebble in the label-studio container"
    )


# --- scale-out -----------------------------------------------------------------------------


def test_a_second_unit_without_a_database_stops_label_studio(ctx, make_state, pebble_calls):
    serving = ctx.run(ctx.on.config_changed(), make_state(leader=False))
    assert serving.get_container(SERVICE).service_statuses[SERVICE] == pebble.ServiceStatus.ACTIVE
    pebble_calls.clear()
    state = ctx.run(ctx.on.update_status(), dataclasses.replace(serving, planned_units=2))
    assert pebble_calls == ["stop"]
    assert state.get_container(SERVICE).service_statuses[SERVICE] == pebble.ServiceStatus.INACTIVE
    assert state.unit_status == testing.BlockedStatus(SCALE_OUT)


def test_a_new_second_unit_without_a_database_never_starts_label_studio(
    ctx, make_state, pebble_calls
):
    state = ctx.run(
        ctx.on.pebble_ready(make_state().get_container(SERVICE)),
        make_state(leader=False, planned_units=2),
    )
    assert pebble_calls == []
    assert SERVICE not in state.get_container(SERVICE).plan.services
    assert state.unit_status == testing.BlockedStatus(SCALE_OUT)


def test_the_leader_of_several_units_without_a_database_keeps_serving(ctx, make_state):
    state = ctx.run(ctx.on.config_changed(), make_state(planned_units=2))
    assert state.get_container(SERVICE).service_statuses[SERVICE] == pebble.ServiceStatus.ACTIVE
    assert state.unit_status == testing.BlockedStatus(SCALE_OUT)


def test_with_a_database_every_unit_serves(ctx, make_state):
    secret = database_secret()
    relation = database_relation(secret)
    state_in = make_state(
        leader=False, planned_units=3, relations={relation, migrated_peers()}, secrets={secret}
    )
    state = ctx.run(ctx.on.relation_changed(relation), state_in)
    assert state.get_container(SERVICE).service_statuses[SERVICE] == pebble.ServiceStatus.ACTIVE
    assert isinstance(state.unit_status, testing.ActiveStatus)
