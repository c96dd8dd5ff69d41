"""A refresh from the previous release's charm to this one, on the same machine and state.

The release (``tests/previous_release.py``) deploys the unit on SQLite and relates it to the
data registry (a credentials secret it is granted); then the current charm runs Juju's hooks of
a refresh on a machine: upgrade-charm, config-changed, relation-created of the peers endpoint
the release did not have, and update-status later (a machine's refresh runs no start). The
machine (its files, the fake systemd) and the Juju state carry over; the release's hooks run
with its own modules, patched as the conftest patches the current ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import APP, UNIT
from ops import testing

import label_studio_unit
from mlops_charms import labelling_server
from mlops_charms import machine as machine_install
from tests import previous_release
from tests.fake_machine import FakeMachine, log_apt_installs, log_call
from tests.labelling_testing import (
    database_relation,
    database_secret,
    dataset_relation,
    migrated_peers,
    registry_secret,
)

SERVICES = {label_studio_unit.SERVICE, label_studio_unit.METRICS_SERVICE}
ACTIVE = testing.ActiveStatus("serving at http://192.0.2.0:8080")


@pytest.fixture
def release(
    machine: FakeMachine, monkeypatch: pytest.MonkeyPatch
) -> previous_release.ReleasedCharm:
    """The release's charm, its modules patched as the conftest patches the current ones.

    The machine's install stamps are the release's: its apt packages, its Label Studio venv.
    """
    released = previous_release.released_charm("labelling")
    unit = released.module("label_studio_unit")
    monkeypatch.setattr(unit, "PATHS", label_studio_unit.PATHS)
    monkeypatch.setattr(released.module("charm"), "PATHS", label_studio_unit.PATHS)
    monkeypatch.setattr(
        released.module("mlops_charms.label_studio"), "is_healthy", lambda *_: True
    )
    old_machine = released.module("mlops_charms.machine")
    log_apt_installs(monkeypatch, machine.state, old_machine)
    monkeypatch.setattr(old_machine, "ensure_workload", lambda *_a, **_k: False)
    stamps = machine_install.Stamps(Path(label_studio_unit.PATHS.state_dir))
    stamps.record("apt", " ".join(unit.APT_PACKAGES))
    stamps.record("label-studio-venv", " ".join([*unit.REQUIREMENTS, ""]))
    return released


@pytest.fixture
def installs(machine: FakeMachine, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The commands the current charm's venv installs run (the venv is there: none changes it).

    Each is logged among the fake tools' calls too, as ``["install", *command]``.
    """
    commands: list[list[str]] = []

    def run(command: list[str]) -> None:
        commands.append(command)
        log_call(machine.state, ["install", *command])

    monkeypatch.setattr(machine_install, "_run", run)
    return commands


def _units() -> dict[str, str]:
    paths = label_studio_unit.PATHS
    return {path: Path(path).read_text() for path in (paths.unit_file, paths.metrics_unit_file)}


@dataclass
class Released:
    """The unit as the release left it, and what it had done."""

    state: testing.State
    dataset: testing.Relation
    asked: dict[str, str]
    secrets: Mapping[str, Mapping[str, str]]
    units: dict[str, str]
    files: dict[str, bytes]


def _deploy(ctx, make_state, machine, release, monkeypatch, *, database=()) -> Released:
    """The release's deploy and the registry's relation; the admin secret is the release's own.

    Deployed as Juju deploys: storage-attached, install, leader-elected, config-changed, start.

    ``database``: the ``database`` relation and its secret, for a unit on PostgreSQL.
    """
    # The same storage for both charms: the units name the data folder, which a refresh keeps.
    old_ctx = release.context(app_name=APP, storage_of=ctx)
    credentials = registry_secret()
    dataset = dataset_relation(credentials)
    database_relations = {r for r in database if isinstance(r, testing.Relation)}
    database_secrets = {s for s in database if isinstance(s, testing.Secret)}
    state = make_state(
        admin_secret_exists=False,
        leader=False,
        relations=database_relations,
        secrets=database_secrets,
    )
    (storage,) = state.storages
    with release.active():
        state = old_ctx.run(old_ctx.on.storage_attached(storage), state)
        state = old_ctx.run(old_ctx.on.install(), state)
        state = dataclasses.replace(state, leader=True)
        for event in (old_ctx.on.leader_elected(), old_ctx.on.config_changed()):
            state = old_ctx.run(event, state)
        state = old_ctx.run(old_ctx.on.start(), state)
        state = dataclasses.replace(
            state, relations={*state.relations, dataset}, secrets={*state.secrets, credentials}
        )
        for hook in (
            old_ctx.on.relation_created,
            lambda related: old_ctx.on.relation_joined(related, remote_unit=0),
            lambda related: old_ctx.on.relation_changed(related, remote_unit=0),
        ):
            state = old_ctx.run(hook(state.get_relation(dataset.id)), state)
        state = old_ctx.run(old_ctx.on.update_status(), state)
    assert state.unit_status == ACTIVE
    assert machine.running_units() == SERVICES
    secrets = {secret.id: secret.tracked_content for secret in state.secrets}
    labels = {s.label for s in state.secrets}
    assert labels == {labelling_server.SERVER_SECRET, None}
    data_dir = storage.get_filesystem(ctx)
    return Released(
        state=state,
        dataset=dataset,
        asked=dict(state.get_relation(dataset.id).local_app_data),
        secrets=secrets,
        units=_units(),
        files={str(f): f.read_bytes() for f in (data_dir / "secrets").iterdir()},
    )


@pytest.fixture
def released(ctx, make_state, machine, release, monkeypatch) -> Released:
    """The unit as the release left it on SQLite."""
    return _deploy(ctx, make_state, machine, release, monkeypatch)


def test_an_upgrade_from_the_previous_release_keeps_the_registry_and_secrets(
    ctx, released: Released, machine, installs
):
    state = released.state
    apt_before = len(machine.calls("apt-get"))
    peers = testing.PeerRelation(labelling_server.PEERS)

    # juju refresh on a machine: upgrade-charm, config-changed, then the new peers endpoint's
    # relation-created; update-status later.
    calls, rebuilt = {}, {}
    for name, event in (
        ("upgrade-charm", lambda _: ctx.on.upgrade_charm()),
        ("config-changed", lambda _: ctx.on.config_changed()),
        ("relation-created", lambda now: ctx.on.relation_created(now.get_relation(peers.id))),
        ("update-status", lambda _: ctx.on.update_status()),
    ):
        if name == "relation-created":
            state = dataclasses.replace(state, relations={*state.relations, peers})
        before, installed = len(machine.calls("systemctl")), len(installs)
        state = ctx.run(event(state), state)
        calls[name] = [call[:2] for call in machine.calls("systemctl")[before:]]
        rebuilt[name] = installs[installed:]
        assert state.unit_status == ACTIVE, name

    # upgrade-charm rebuilds uWSGI with OpenSSL's headers (its HTTPS router): apt, then a
    # clean venv; no later hook installs anything.
    assert machine.calls("apt-get")[apt_before:] == [["install", *label_studio_unit.APT_PACKAGES]]
    clear, pip = rebuilt.pop("upgrade-charm")
    assert clear[1:] == ["-m", "venv", "--clear", label_studio_unit.PATHS.venv]
    assert pip[-len(label_studio_unit.REQUIREMENTS) :] == list(label_studio_unit.REQUIREMENTS)
    assert not any(rebuilt.values()), rebuilt
    # The server's files did not change; its unit changed only by uWSGI's shorter mercy for a
    # worker slow to stop. Label Studio is stopped before its venv is rebuilt, systemd reloads
    # the unit and starts it on the new venv; the exporter's unit is the release's and keeps
    # running.
    server, exporter = label_studio_unit.SERVICE, label_studio_unit.METRICS_SERVICE
    server_unit = label_studio_unit.PATHS.unit_file
    refreshed_units = {
        **released.units,
        server_unit: released.units[server_unit].replace(
            '"--die-on-term"', '"--die-on-term" "--worker-reload-mercy" "20"'
        ),
    }
    assert _units() == refreshed_units
    (storage,) = state.storages
    secrets_dir = storage.get_filesystem(ctx) / "secrets"
    assert {str(f): f.read_bytes() for f in secrets_dir.iterdir()} == released.files
    assert calls.pop("upgrade-charm") == [
        ["is-active", server],
        ["stop", server],
        ["daemon-reload"],
        ["enable", server],
        ["restart", server],
        ["is-active", exporter],
    ]
    # (relation-created of the peers reconciles nothing: no systemctl call at all.)
    for name, hook_calls in calls.items():
        assert {call[0] for call in hook_calls} <= {"is-active"}, (name, hook_calls)
    assert machine.running_units() == SERVICES
    # Every secret keeps its content; the registry is asked for what it was.
    assert {s.id: s.tracked_content for s in state.secrets} == released.secrets
    assert dict(state.get_relation(released.dataset.id).local_app_data) == released.asked
    # On SQLite each unit's start migrates its own database: the leader records nothing.
    assert labelling_server.MIGRATED_KEY not in state.get_relation(peers.id).local_app_data

    # What a fresh install of this charm renders is what the upgraded unit has.
    for path in released.units:
        Path(path).unlink()
    ctx.run(ctx.on.config_changed(), state)
    assert _units() == refreshed_units
    assert f"({UNIT})" in _units()[label_studio_unit.PATHS.unit_file]

    # The actions work on the state the release left, with the release's admin.
    ctx.run(ctx.on.action("get-admin-credentials"), state)
    assert ctx.action_results is not None
    server_secret = next(s for s in state.secrets if s.label == labelling_server.SERVER_SECRET)
    assert ctx.action_results["password"] == server_secret.tracked_content["admin-password"]
    ctx.run(ctx.on.action("list-backups"), state)
    assert ctx.action_results is not None
    assert ctx.action_results["count"] == 0


def test_label_studio_does_not_serve_from_a_venv_being_rebuilt(
    ctx, released: Released, machine, installs
):
    ctx.run(ctx.on.upgrade_charm(), released.state)
    log = (machine.state / "calls.jsonl").read_text().splitlines()
    (cleared,) = [i for i, line in enumerate(log) if '"--clear"' in line]
    service = label_studio_unit.SERVICE
    stopped = [i for i, line in enumerate(log) if line == f'["systemctl", "stop", "{service}"]']
    restarted = [
        i for i, line in enumerate(log) if line == f'["systemctl", "restart", "{service}"]'
    ]
    # Stopped before its venv is cleared, or at least restarted on the rebuilt one.
    assert any(i < cleared for i in stopped) or any(i > cleared for i in restarted), log


@pytest.fixture
def migrations(machine: FakeMachine) -> Path:
    """Where Label Studio's Python (the leader's migration) logs each run, one line a run."""
    log = machine.state / "migrations"
    python = Path(label_studio_unit.PATHS.binaries.label_studio).with_name("python")
    python.write_text(f"#!/bin/sh\necho migrated >> {log}\n")
    return log


def _refresh_on_postgresql(ctx, make_state, machine, release, monkeypatch, migrations):
    """The release on PostgreSQL, refreshed; each hook's status and the migrations run so far."""
    secret = database_secret()
    released = _deploy(
        ctx,
        make_state,
        machine,
        release,
        monkeypatch,
        database=(database_relation(secret), secret),
    )
    assert not migrations.exists(), "the release migrated in a hook"
    state = released.state
    peers = testing.PeerRelation(labelling_server.PEERS)
    seen: dict[str, tuple[object, int]] = {}
    for name, event in (
        ("upgrade-charm", lambda _: ctx.on.upgrade_charm()),
        ("config-changed", lambda _: ctx.on.config_changed()),
        ("relation-created", lambda now: ctx.on.relation_created(now.get_relation(peers.id))),
        ("update-status", lambda _: ctx.on.update_status()),
        ("update-status again", lambda _: ctx.on.update_status()),
    ):
        if name == "relation-created":
            state = dataclasses.replace(state, relations={*state.relations, peers})
        state = ctx.run(event(state), state)
        runs = len(migrations.read_text().splitlines()) if migrations.exists() else 0
        seen[name] = (state.unit_status, runs)
    return released, state, state.get_relation(peers.id), seen


def test_an_upgrade_on_postgresql_records_the_leaders_migration_for_the_peers(
    ctx, make_state, machine, release, monkeypatch, installs, migrations
):
    released, state, peers, seen = _refresh_on_postgresql(
        ctx, make_state, machine, release, monkeypatch, migrations
    )
    # The leader migrates the shared database in upgrade-charm, before anything serves this
    # release's code on it; it records it for the peers once their relation is created, and
    # then migrates no more.
    assert seen["upgrade-charm"] == (ACTIVE, 1)
    assert seen["update-status"] == (ACTIVE, seen["relation-created"][1])
    assert (
        peers.local_app_data[labelling_server.MIGRATED_KEY]
        == (migrated_peers().local_app_data[labelling_server.MIGRATED_KEY])
    )
    assert seen["update-status again"] == (ACTIVE, seen["update-status"][1])
    assert machine.running_units() == SERVICES
    assert {s.id: s.tracked_content for s in state.secrets} == released.secrets
    assert dict(state.get_relation(released.dataset.id).local_app_data) == released.asked


def test_the_peers_relation_created_after_an_upgrade_keeps_the_leader_active(
    ctx, make_state, machine, release, monkeypatch, installs, migrations
):
    _released, _state, _peers, seen = _refresh_on_postgresql(
        ctx, make_state, machine, release, monkeypatch, migrations
    )
    assert seen["relation-created"][0] == ACTIVE
