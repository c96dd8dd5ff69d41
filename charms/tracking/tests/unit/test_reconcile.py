"""The reconcile on a machine: the unit, the server's files, systemd touched only on change."""

from __future__ import annotations

import dataclasses
import json
import stat
from pathlib import Path

from conftest import INTERNAL_URL, UNIT
from ops import testing

import mlflow_unit
from tests.systemd_units import environment_file, systemd_words, unit_settings
from tests.tracking_testing import (
    ADMIN_PASSWORD,
    FLASK_SECRET_KEY,
    consumer_relation,
    database_relation,
    database_secret,
)


def unit_after(ctx, state: testing.State, event=None) -> dict[str, list[str]]:
    ctx.run(event or ctx.on.config_changed(), state)
    return unit_settings(Path(mlflow_unit.PATHS.unit_file).read_text())


def test_unit_runs_the_venvs_mlflow_as_the_mlflow_user(ctx, make_state):
    unit = unit_after(ctx, make_state(), ctx.on.install())
    command = systemd_words(unit["ExecStart"][0])
    assert command[:2] == [mlflow_unit.PATHS.mlflow, "server"]
    assert command[command.index("--app-name") + 1] == "basic-auth"
    assert unit["User"] == [mlflow_unit.PATHS.user]
    assert unit["Description"] == [f"MLflow Tracking Server with basic auth ({UNIT})"]


def test_unit_keeps_data_on_the_storage(ctx, make_state):
    unit = unit_after(ctx, make_state())
    command = systemd_words(unit["ExecStart"][0])
    data_dir = unit["WorkingDirectory"][0]
    assert command[command.index("--backend-store-uri") + 1] == f"sqlite:///{data_dir}/mlflow.db"
    assert command[command.index("--artifacts-destination") + 1] == f"{data_dir}/artifacts"


def test_unit_turns_telemetry_off(ctx, make_state):
    unit = unit_after(ctx, make_state())
    environment = dict(word.split("=", 1) for word in map(_one_word, unit["Environment"]))
    assert environment["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert environment["DO_NOT_TRACK"] == "1"
    assert environment["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"


def test_secrets_are_only_in_the_0600_environment_file(ctx, make_state):
    unit = unit_after(ctx, make_state())
    (env_path,) = unit["EnvironmentFile"]
    env = Path(env_path)
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert environment_file(env.read_text()) == {
        "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": FLASK_SECRET_KEY,
    }
    unit_text = Path(mlflow_unit.PATHS.unit_file).read_text()
    assert ADMIN_PASSWORD not in unit_text
    assert FLASK_SECRET_KEY not in unit_text


def test_database_relation_switches_the_backend_to_postgresql(ctx, make_state):
    secret = database_secret()
    state = make_state(relations={database_relation(secret)}, secrets={secret})
    command = systemd_words(unit_after(ctx, state)["ExecStart"][0])
    assert command[command.index("--backend-store-uri") + 1].startswith("postgresql+psycopg2://")


def test_first_reconcile_enables_and_restarts_mlflow(ctx, make_state, machine):
    ctx.run(ctx.on.install(), make_state())
    verbs = [call[0] for call in machine.calls("systemctl")]
    assert verbs == ["daemon-reload", "enable", "restart"]
    assert machine.running_units() == {"mlflow"}


def test_an_unchanged_reconcile_restarts_nothing(ctx, make_state, machine):
    state = ctx.run(ctx.on.install(), make_state())
    before = len(machine.calls("systemctl"))
    ctx.run(ctx.on.config_changed(), state)
    assert [call[0] for call in machine.calls("systemctl")[before:]] == ["is-active"]


def test_a_changed_option_restarts_mlflow_without_reloading_twice(ctx, make_state, machine):
    state = ctx.run(ctx.on.install(), make_state())
    before = len(machine.calls("systemctl"))
    ctx.run(ctx.on.config_changed(), dataclasses.replace(state, config={"workers": 2}))
    assert [call[0] for call in machine.calls("systemctl")[before:]] == [
        "daemon-reload",
        "enable",
        "restart",
    ]


def test_install_installs_nothing_twice(ctx, make_state, machine):
    ctx.run(ctx.on.install(), make_state())
    assert machine.calls("apt-get") == []


def test_consumer_is_told_the_machine_url(ctx, make_state):
    relation = consumer_relation("trainer", "fraud")
    state = ctx.run(ctx.on.relation_changed(relation), make_state(relations={relation}))
    published = state.get_relation(relation.id).local_app_data
    assert json.loads(published["tracking_uri"]) == INTERNAL_URL


def _one_word(assignment: str) -> str:
    (word,) = systemd_words(assignment)
    return word
