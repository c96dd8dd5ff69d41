"""The reconcile on a machine: the unit, the server's files, systemd touched only on change."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from conftest import INTERNAL_URL, UNIT
from ops import testing

import mlflow_unit
from mlops_charms import mlflow as mlflow_core
from tests.systemd_units import (
    assert_secrets_only_in_environment_file,
    systemd_words,
    unit_settings,
)
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
    ctx.run(ctx.on.config_changed(), make_state())
    assert_secrets_only_in_environment_file(
        mlflow_unit.PATHS.unit_file,
        {
            "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": FLASK_SECRET_KEY,
        },
    )


def test_database_relation_switches_the_backend_to_postgresql(ctx, make_state):
    secret = database_secret()
    state = make_state(relations={database_relation(secret)}, secrets={secret})
    command = systemd_words(unit_after(ctx, state)["ExecStart"][0])
    assert command[command.index("--backend-store-uri") + 1].startswith("postgresql+psycopg2://")


def test_first_reconcile_enables_and_restarts_mlflow_and_its_exporter(ctx, make_state, machine):
    ctx.run(ctx.on.install(), make_state())
    calls = [call[:2] for call in machine.calls("systemctl")]
    assert calls == [
        ["daemon-reload"],
        ["enable", "mlflow"],
        ["restart", "mlflow"],
        ["enable", "mlflow-metrics"],
        ["restart", "mlflow-metrics"],
    ]
    assert machine.running_units() == {"mlflow", "mlflow-metrics"}


def test_an_unchanged_reconcile_restarts_nothing(ctx, make_state, machine):
    state = ctx.run(ctx.on.install(), make_state())
    before = len(machine.calls("systemctl"))
    ctx.run(ctx.on.config_changed(), state)
    assert [call[0] for call in machine.calls("systemctl")[before:]] == ["is-active", "is-active"]


def test_a_changed_option_restarts_mlflow_without_reloading_twice(ctx, make_state, machine):
    state = ctx.run(ctx.on.install(), make_state())
    before = len(machine.calls("systemctl"))
    ctx.run(ctx.on.config_changed(), dataclasses.replace(state, config={"workers": 2}))
    # The exporter's unit and files did not change: it keeps running.
    assert [call[:2] for call in machine.calls("systemctl")[before:]] == [
        ["daemon-reload"],
        ["enable", "mlflow"],
        ["restart", "mlflow"],
        ["is-active", "mlflow-metrics"],
    ]


def test_mlflow_starts_with_an_empty_metrics_folder(ctx, make_state):
    unit = unit_after(ctx, make_state())
    command = systemd_words(unit["ExecStart"][0])
    metrics_dir = command[command.index("--expose-prometheus") + 1]
    assert systemd_words(unit["ExecStartPre"][0]) == ["rm", "-rf", "--", metrics_dir]


def test_exporter_unit_serves_mlflows_metrics_folder_with_the_venvs_python(ctx, make_state):
    mlflow = unit_after(ctx, make_state(config={"metrics-port": 9300}))
    command = systemd_words(mlflow["ExecStart"][0])
    metrics_dir = command[command.index("--expose-prometheus") + 1]
    exporter = unit_settings(Path(mlflow_unit.PATHS.metrics_unit_file).read_text())
    python, script, folder, port, health, data_dir = systemd_words(exporter["ExecStart"][0])
    assert python == f"{mlflow_unit.PATHS.venv}/bin/python"
    assert Path(script).read_text() == mlflow_core.METRICS_EXPORTER
    assert (folder, port, health) == (metrics_dir, "9300", "http://localhost:5000/health")
    assert data_dir == mlflow["WorkingDirectory"][0]
    assert exporter["User"] == [mlflow_unit.PATHS.user]
    assert "EnvironmentFile" not in exporter


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
