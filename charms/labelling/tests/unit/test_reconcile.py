"""The reconcile on a machine: the unit, the server's files, systemd touched only on change."""

from __future__ import annotations

from pathlib import Path

from conftest import UNIT
from ops import testing

import label_studio_unit
from tests.labelling_testing import (
    ADMIN_PASSWORD,
    ADMIN_TOKEN,
    DB_PASSWORD,
    SECRET_KEY,
    database_relation,
    database_secret,
)
from tests.systemd_units import (
    assert_secrets_only_in_environment_file,
    environment_file,
    systemd_words,
    unit_settings,
)


def unit_after(ctx, state: testing.State, event=None) -> dict[str, list[str]]:
    ctx.run(event or ctx.on.config_changed(), state)
    return unit_settings(Path(label_studio_unit.PATHS.unit_file).read_text())


def environment(unit: dict[str, list[str]]) -> dict[str, str]:
    return dict(systemd_words(line)[0].split("=", 1) for line in unit["Environment"])


def test_unit_runs_the_venvs_uwsgi_as_the_label_studio_user(ctx, make_state):
    unit = unit_after(ctx, make_state(), ctx.on.install())
    paths = label_studio_unit.PATHS
    command = systemd_words(unit["ExecStart"][0])
    assert command[0] == paths.binaries.uwsgi
    assert command[command.index("--http") + 1] == "0.0.0.0:8080"
    assert command[command.index("--chdir") + 1] == paths.binaries.app_dir
    assert unit["User"] == [paths.user]
    assert unit["Description"] == [f"Label Studio under uWSGI ({UNIT})"]


def test_label_studio_init_runs_before_each_start(ctx, make_state):
    unit = unit_after(ctx, make_state())
    data_dir = unit["WorkingDirectory"][0]
    steps = [systemd_words(line) for line in unit["ExecStartPre"]]
    assert steps == [
        ["mkdir", "-p", f"{data_dir}/media-root"],
        [label_studio_unit.PATHS.binaries.label_studio, "init", "--quiet"],
    ]


def test_unit_keeps_data_on_the_storage_and_turns_telemetry_off(ctx, make_state):
    unit = unit_after(ctx, make_state())
    env = environment(unit)
    assert env["LABEL_STUDIO_BASE_DATA_DIR"] == unit["WorkingDirectory"][0]
    assert env["LATEST_VERSION_CHECK"] == "false"
    assert env["COLLECT_ANALYTICS"] == "false"
    assert env["SENTRY_DSN"] == ""
    assert env["DO_NOT_TRACK"] == "1"


def test_secrets_are_only_in_the_0600_environment_file(ctx, make_state):
    ctx.run(ctx.on.config_changed(), make_state())
    assert_secrets_only_in_environment_file(
        label_studio_unit.PATHS.unit_file,
        {
            "LABEL_STUDIO_PASSWORD": ADMIN_PASSWORD,
            "LABEL_STUDIO_USER_TOKEN": ADMIN_TOKEN,
            "SECRET_KEY": SECRET_KEY,
        },
    )


def test_database_relation_moves_label_studio_to_postgresql(ctx, make_state):
    secret = database_secret()
    unit = unit_after(ctx, make_state(relations={database_relation(secret)}, secrets={secret}))
    assert environment(unit)["DJANGO_DB"] == "default"
    (env_path,) = unit["EnvironmentFile"]
    assert environment_file(Path(env_path).read_text())["POSTGRE_PASSWORD"] == DB_PASSWORD
    assert DB_PASSWORD not in Path(label_studio_unit.PATHS.unit_file).read_text()


def test_first_reconcile_enables_and_restarts_label_studio(ctx, make_state, machine):
    out = ctx.run(ctx.on.install(), make_state())
    verbs = [call[0] for call in machine.calls("systemctl")]
    # label-studio.service, then its metrics exporter's unit.
    assert verbs == ["daemon-reload", "enable", "restart", "enable", "restart"]
    assert machine.running_units() == {"label-studio", "label-studio-metrics"}
    assert out.opened_ports == {testing.TCPPort(8080), testing.TCPPort(9103)}


def test_an_unchanged_reconcile_leaves_label_studio_running(ctx, make_state, machine):
    state = make_state()
    ctx.run(ctx.on.install(), state)
    first = len(machine.calls("systemctl"))
    ctx.run(ctx.on.config_changed(), state)
    assert [call[0] for call in machine.calls("systemctl")[first:]] == ["is-active", "is-active"]


def test_a_new_port_rewrites_the_unit_and_restarts(ctx, make_state, machine):
    ctx.run(ctx.on.install(), make_state())
    first = len(machine.calls("systemctl"))
    unit = unit_after(ctx, make_state(config={"port": 9090}))
    command = systemd_words(unit["ExecStart"][0])
    assert command[command.index("--http") + 1] == "0.0.0.0:9090"
    # The exporter's unit names Label Studio's port too: both restart.
    assert [call[0] for call in machine.calls("systemctl")[first:]] == [
        "daemon-reload",
        "enable",
        "restart",
        "enable",
        "restart",
    ]


def test_a_non_leader_of_several_units_without_a_database_stops_label_studio(
    ctx, make_state, machine
):
    ctx.run(ctx.on.install(), make_state())
    ctx.run(ctx.on.update_status(), make_state(leader=False, planned_units=2))
    assert machine.running_units() == set()
