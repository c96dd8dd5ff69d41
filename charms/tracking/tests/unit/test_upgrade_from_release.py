"""A refresh from the previous release's charm to this one, on the same machine and state.

The release (``tests/previous_release.py``) deploys the unit and serves a consumer; then the
current charm runs Juju's hooks of a refresh on a machine: upgrade-charm, then config-changed,
and update-status later (a machine's refresh runs no start). The machine (its files, the fake
systemd) and the Juju state carry over; the release's hooks run with its own modules, patched
as the conftest patches the current ones.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import APP, INTERNAL_URL
from ops import testing

import charm
import mlflow_unit
from mlops_charms import machine as machine_install
from mlops_charms import mlflow as mlflow_core
from mlops_charms import tracking_server
from tests import previous_release, tracking_testing
from tests.fake_machine import FakeMachine, installed, log_apt_installs
from tests.systemd_units import environment_file, systemd_words, unit_settings
from tests.tracking_testing import ADMIN_USERNAME, FakeMLflow, consumer_relation

SERVICES = {mlflow_unit.SERVICE, mlflow_unit.METRICS_SERVICE}
ACTIVE = testing.ActiveStatus(f"serving at {INTERNAL_URL}")


@pytest.fixture
def release(
    machine: FakeMachine, mlflow: FakeMLflow, monkeypatch: pytest.MonkeyPatch
) -> previous_release.ReleasedCharm:
    """The release's charm, its modules patched as the conftest patches the current ones."""
    released = previous_release.released_charm("tracking")
    monkeypatch.setattr(released.module("mlflow_unit"), "PATHS", mlflow_unit.PATHS)
    monkeypatch.setattr(released.module("charm"), "PATHS", mlflow_unit.PATHS)
    monkeypatch.setattr(released.module("mlops_charms.mlflow"), "JSONClient", mlflow.client)
    log_apt_installs(monkeypatch, machine.state, released.module("mlops_charms.machine"))
    return released


@pytest.fixture
def workload_installs(machine: FakeMachine, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The venvs the workload CLI was installed into: none yet, the release has no backups."""
    Path(mlflow_unit.PATHS.mlops_workload).unlink()
    venvs: list[str] = []

    def ensure_workload(_stamps, venv: machine_install.Venv, *_args, **_kwargs) -> bool:
        """Installs once, as its stamp makes the real one."""
        if venv.bin("mlops-workload").exists():
            return False
        venvs.append(str(venv.path))
        installed(str(venv.bin("mlops-workload")))
        return True

    monkeypatch.setattr(machine_install, "ensure_workload", ensure_workload)
    return venvs


@contextlib.contextmanager
def _running(release: previous_release.ReleasedCharm) -> Iterator[None]:
    """The release's hooks run meanwhile.

    FakeMLflow refuses with the release's ``RESTError``, the class the release's code catches.
    """
    with release.active(), pytest.MonkeyPatch.context() as patch:
        patch.setattr(tracking_testing, "RESTError", release.module("mlops_charms.rest").RESTError)
        yield


def _mlflow_first_start(mlflow: FakeMLflow) -> None:
    """MLflow's first start creates its admin with the password of its environment file."""
    (env_file,) = unit_settings(Path(mlflow_unit.PATHS.unit_file).read_text())["EnvironmentFile"]
    env = environment_file(Path(env_file.lstrip("-")).read_text())
    mlflow.users[ADMIN_USERNAME]["password"] = env["MLFLOW_AUTH_ADMIN_PASSWORD"]


def _units() -> dict[str, str]:
    paths = mlflow_unit.PATHS
    return {path: Path(path).read_text() for path in (paths.unit_file, paths.metrics_unit_file)}


def _exporter_script() -> Path:
    exporter = unit_settings(Path(mlflow_unit.PATHS.metrics_unit_file).read_text())
    return Path(systemd_words(exporter["ExecStart"][0])[1])


@dataclass
class Released:
    """The unit as the release left it, and what it had done."""

    state: testing.State
    relation: testing.Relation
    published: dict[str, str]
    secrets: Mapping[str | None, Mapping[str, str]]
    units: dict[str, str]
    exporter_script: str
    users: dict[str, dict]
    requests: int
    systemctl: int


@pytest.fixture
def released(
    ctx, make_state, machine, mlflow, release, workload_installs, monkeypatch
) -> Released:
    """The release's deploy and a consumer's relation; the admin secret is the release's own.

    Deployed as Juju deploys: storage-attached, install, leader-elected, config-changed, start.
    """
    # The same storage for both charms: the units name the data folder, which a refresh keeps.
    old_ctx = release.context(app_name=APP, storage_of=ctx)
    relation = consumer_relation("trainer", "fraud")
    state = make_state(admin_secret_exists=False, leader=False)
    (storage,) = state.storages
    with _running(release):
        state = old_ctx.run(old_ctx.on.storage_attached(storage), state)
        state = old_ctx.run(old_ctx.on.install(), state)
        state = dataclasses.replace(state, leader=True)
        state = old_ctx.run(old_ctx.on.leader_elected(), state)
        _mlflow_first_start(mlflow)
        for event in (old_ctx.on.config_changed(), old_ctx.on.start()):
            state = old_ctx.run(event, state)
        state = dataclasses.replace(state, relations={*state.relations, relation})
        for hook in (
            old_ctx.on.relation_created,
            lambda related: old_ctx.on.relation_joined(related, remote_unit=0),
            lambda related: old_ctx.on.relation_changed(related, remote_unit=0),
        ):
            state = old_ctx.run(hook(state.get_relation(relation.id)), state)
        state = old_ctx.run(old_ctx.on.update_status(), state)
    assert state.unit_status == ACTIVE
    assert machine.running_units() == SERVICES
    published = dict(state.get_relation(relation.id).local_app_data)
    assert json.loads(published["tracking_uri"]) == INTERNAL_URL
    secrets = {secret.label: secret.tracked_content for secret in state.secrets}
    consumer_label = tracking_server.CONSUMER_SECRET.format(relation_id=relation.id)
    assert set(secrets) == {tracking_server.SERVER_SECRET, consumer_label}
    assert f"relation-{relation.id}-trainer" in mlflow.users
    return Released(
        state=state,
        relation=relation,
        published=published,
        secrets=secrets,
        units=_units(),
        exporter_script=_exporter_script().read_text(),
        users={name: dict(user) for name, user in mlflow.users.items()},
        requests=len(mlflow.requests),
        systemctl=len(machine.calls("systemctl")),
    )


def test_an_upgrade_from_the_previous_release_keeps_the_consumer_and_secrets(
    ctx, released: Released, machine, mlflow, workload_installs
):
    state = released.state
    assert workload_installs == []
    assert not Path(mlflow_unit.PATHS.jobs_scripts_dir).exists()

    # juju refresh on a machine: upgrade-charm, then config-changed; update-status later.
    calls = {}
    for name, event in (
        ("upgrade-charm", ctx.on.upgrade_charm()),
        ("config-changed", ctx.on.config_changed()),
        ("update-status", ctx.on.update_status()),
    ):
        before = len(machine.calls("systemctl"))
        state = ctx.run(event, state)
        calls[name] = [call[:2] for call in machine.calls("systemctl")[before:]]
        assert state.unit_status == ACTIVE, name

    # The units did not change (without TLS this charm renders what the release did): systemd
    # is not reloaded. The exporter's script did (it can verify HTTPS now): the first hook
    # restarts the servers that read the files, and no later hook restarts anything.
    assert _units() == released.units
    assert _exporter_script().read_text() == mlflow_core.METRICS_EXPORTER
    assert _exporter_script().read_text() != released.exporter_script
    assert ["restart", mlflow_unit.METRICS_SERVICE] in calls["upgrade-charm"]
    assert ["daemon-reload"] not in calls["upgrade-charm"]
    assert {call[0] for call in calls["upgrade-charm"]} <= {"restart", "is-active"}
    assert {call[0] for call in calls["config-changed"] + calls["update-status"]} == {"is-active"}
    assert machine.running_units() == SERVICES
    # What is new since the release is installed by the upgrade: the backups' workload CLI and
    # the jobs' ExecStopPost script.
    assert workload_installs == [mlflow_unit.PATHS.workload_venv]
    (storage,) = state.storages
    assert Path(charm.job_paths(str(storage.get_filesystem(ctx))).job_ended).is_file()
    # Every secret keeps its content; the consumer is told what it was, with no CA (no TLS).
    assert {secret.label: secret.tracked_content for secret in state.secrets} == released.secrets
    assert dict(state.get_relation(released.relation.id).local_app_data) == released.published
    assert "ca" not in released.published
    # The consumer is not provisioned again: its user keeps its password, no user is written.
    assert mlflow.users == released.users
    written = {"users/create", "users/update-password", "users/delete"}
    assert not [call for call in mlflow.requests[released.requests :] if call[0] in written]

    # What a fresh install of this charm renders is what the upgraded unit has.
    for path in released.units:
        Path(path).unlink()
    ctx.run(ctx.on.config_changed(), state)
    assert _units() == released.units

    # An action new since the release works on the state the release left.
    ctx.run(ctx.on.action("list-backups"), state)
    assert ctx.action_results is not None
    assert ctx.action_results["count"] == 0


def test_the_upgrade_restarts_only_the_exporter_whose_script_changed(
    ctx, released: Released, machine
):
    """MLflow reads neither the exporter's unit nor its script: its server keeps serving."""
    ctx.run(ctx.on.upgrade_charm(), released.state)
    restarted = [call[1] for call in machine.calls("systemctl") if call[0] == "restart"]
    assert restarted[-1:] == [mlflow_unit.METRICS_SERVICE]
    assert ["restart", mlflow_unit.SERVICE] not in machine.calls("systemctl")[released.systemctl :]
