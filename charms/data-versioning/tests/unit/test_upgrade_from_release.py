"""`juju refresh` of a machine unit from the previous release's charm to this one.

The release's charm (``tests/previous_release.py``) deploys the registry on the fake machine,
with consumers and a version; then the current charm runs Juju's refresh hooks on the same
State, the same machine and the same storage: the units, the consumers' data and the secrets
stay, and the validation job the release started ends with this charm.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import APP, MODEL, FakeCommands
from ops import testing
from scenario.state import _Event

import charm
import registry_units
from mlops_charms import machine as machine_install
from mlops_charms import registry_server
from tests import previous_release
from tests.charm_testing import deployed
from tests.fake_machine import FakeMachine, log_apt_installs, no_wheelhouse
from tests.registry_relations import consumer_relation, push_tags
from tests.tls_provider import TestCA, issued_in

SERVER_UNITS = {
    registry_units.server_unit(name) for name in ("git-http", "s3", "s3-read-only", "metrics")
}
TAGS_PATH = f"{registry_units.TAGS_UNIT}.path"
UNIT = f"{APP}/0"


@pytest.fixture
def release() -> previous_release.ReleasedCharm:
    return previous_release.released_charm("data-versioning")


@pytest.fixture
def release_ctx(
    ctx: testing.Context,
    release: previous_release.ReleasedCharm,
    machine: FakeMachine,
    installs: list[dict],
    commands: FakeCommands,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[testing.Context]:
    """The release's charm with its own charmcraft.yaml, on the same fake machine.

    What the conftest patches on the current modules is patched on the release's too.
    """
    units = release.module("registry_units")
    paths = units.MachinePaths(**dataclasses.asdict(registry_units.PATHS))
    monkeypatch.setattr(units, "PATHS", paths)
    monkeypatch.setattr(release.module("charm"), "PATHS", paths)
    monkeypatch.setattr(units, "run_as", commands)
    released_machine = release.module("mlops_charms.machine")
    monkeypatch.setattr(released_machine, "ensure_workload", machine_install.ensure_workload)
    log_apt_installs(monkeypatch, machine.state, released_machine)
    with release.context(app_name=APP, storage_of=ctx) as context:
        # The release's own metadata: no certificates relation yet.
        assert "certificates" not in context.charm_spec.meta["requires"]
        assert "certificates" in ctx.charm_spec.meta["requires"]
        yield context


def dispatched(name: str) -> _Event:
    """The charm's own event that ``juju-exec`` runs (``JUJU_DISPATCH_PATH=hooks/<name>``)."""
    return _Event(name)


def unit_files() -> dict[str, str]:
    units = Path(registry_units.PATHS.units_dir)
    return {path.name: path.read_text() for path in units.glob(f"{registry_units.UNIT_PREFIX}*")}


def conf_files(data_dir: Path) -> dict[str, str]:
    conf = data_dir / "conf"
    return {str(p.relative_to(conf)): p.read_text() for p in conf.rglob("*") if p.is_file()}


def test_a_refresh_from_the_previous_release_keeps_units_consumers_and_secrets(
    ctx, release, release_ctx, machine, storage, data_dir, commands, tmp_path
):
    reader = consumer_relation()
    writer = consumer_relation("write", app="labelling")
    state = testing.State(
        model=testing.Model(name=MODEL),
        leader=True,
        storages={storage},
        resources={no_wheelhouse(tmp_path)},
        relations={reader, writer, testing.PeerRelation(registry_server.PEERS)},
    )

    with release.active():
        # The release's own code runs these hooks, not the current modules.
        assert release_ctx.charm_spec.charm_type is release.charm_class
        released_server = release.module(registry_server.__name__)
        assert sys.modules[registry_server.__name__] is released_server
        assert released_server is not registry_server
        state = deployed(release_ctx, state, (reader, writer))
        # A version pushed and validated by the release's job.
        push_tags(data_dir, "v1")
        state = release_ctx.run(dispatched("tags_pushed"), state)
        (job,) = [p.parent for p in (data_dir / "jobs").glob("*/job.json")]
        (machine.state / "units" / f"mlops-registry-job-{job.name}.service").unlink()
        jobs = release.module("mlops_charms.systemd_jobs")
        jobs.SystemdJobRunner(
            jobs.JobPaths(jobs_dir=str(data_dir / "jobs"), unit_prefix="mlops-registry-job-")
        ).record_end(job.name, 0, stdout=json.dumps({"version": "v1", "valid": True}))
        state = release_ctx.run(dispatched("job_ended"), state)
        # v2 pushed: its validation, a transient unit, runs across the refresh.
        push_tags(data_dir, "v2")
        state = release_ctx.run(dispatched("tags_pushed"), state)
        state = release_ctx.run(release_ctx.on.update_status(), state)
    (running,) = [p.parent for p in (data_dir / "jobs").glob("*/job.json") if p.parent != job]
    job_unit = f"mlops-registry-job-{running.name}.service"
    job_unit_file = Path(registry_units.PATHS.job_units_dir, job_unit)
    released_job_unit = job_unit_file.read_text()

    assert state.unit_status == testing.ActiveStatus("latest v1")
    assert machine.running_units() == {*SERVER_UNITS, TAGS_PATH, job_unit}
    released_units, released_conf = unit_files(), conf_files(data_dir)
    assert set(released_units) == {*SERVER_UNITS, TAGS_PATH, f"{registry_units.TAGS_UNIT}.service"}
    published = {
        relation.remote_app_name: dict(state.get_relation(relation.id).local_app_data)
        for relation in (reader, writer)
    }
    for relation, access in ((reader, "read"), (writer, "write")):
        databag = published[relation.remote_app_name]
        assert json.loads(databag["registry_url"]).startswith("http://")
        assert json.loads(databag["access"]) == access
        assert json.loads(databag["latest_version"]) == "v1"
        assert json.loads(databag["credentials_secret_id"]) in {s.id for s in state.secrets}
    secrets_before = {secret.id: secret.latest_content for secret in state.secrets}
    assert any(s.label == registry_server.REGISTRY_SECRET for s in state.secrets)
    assert len(secrets_before) == 3  # the registry's writer, a user per consumer
    peers_before = dict(state.get_relations(registry_server.PEERS)[0].local_app_data)
    before = len(machine.calls("systemctl"))
    bootstraps = len(commands.calls)

    # Juju refreshes the charm on the machine: upgrade-charm, config-changed, then the usual.
    for event in (ctx.on.upgrade_charm(), ctx.on.config_changed(), ctx.on.update_status()):
        state = ctx.run(event, state)

    assert state.unit_status == testing.ActiveStatus("latest v1")
    # Same rendering without TLS: nothing rewritten, reloaded or restarted; all still running,
    # the release's validation of v2 too.
    assert unit_files() == released_units
    assert conf_files(data_dir) == released_conf
    assert machine.systemd_changes(before) == []
    assert machine.running_units() == {*SERVER_UNITS, TAGS_PATH, job_unit}
    assert job_unit_file.read_text() == released_job_unit
    assert len(commands.calls) == bootstraps  # not bootstrapped again
    # Consumers keep what the release published them; no CA without a certificate.
    for relation in (reader, writer):
        databag = state.get_relation(relation.id).local_app_data
        assert "ca" not in databag
        assert dict(databag) == published[relation.remote_app_name]
    secrets_after = {secret.id: secret.latest_content for secret in state.secrets}
    for secret_id, content in secrets_before.items():
        assert secrets_after.get(secret_id) == content, f"secret {secret_id} changed"
    assert dict(state.get_relations(registry_server.PEERS)[0].local_app_data) == peers_before
    assert ctx.charm_spec.charm_type is charm.DataVersioningMachineCharm

    # The current charm's actions work on what the release left.
    commands.results["list-versions"] = {"versions": [{"version": "v1"}]}
    ctx.run(ctx.on.action("list-versions"), state)
    assert ctx.action_results is not None
    assert ctx.action_results["count"] == 1
    ctx.run(ctx.on.action("list-jobs"), state)
    assert ctx.action_results is not None
    assert ctx.action_results["running"] == running.name
    listed = {item["id"]: item["state"] for item in json.loads(ctx.action_results["jobs"])}
    assert listed == {job.name: "succeeded", running.name: "running"}

    # The release's validation of v2 ends: this charm records it and publishes v2.
    (machine.state / "units" / job_unit).unlink()
    charm.SystemdJobRunner(
        charm.JobPaths(jobs_dir=str(data_dir / "jobs"), unit_prefix="mlops-registry-job-")
    ).record_end(running.name, 0, stdout=json.dumps({"version": "v2", "valid": True}))
    state = ctx.run(dispatched("job_ended"), state)
    assert state.unit_status == testing.ActiveStatus("latest v2")
    assert not job_unit_file.exists()
    peers = state.get_relations(registry_server.PEERS)[0].local_app_data
    assert peers[registry_server.LATEST_KEY] == "v2"
    for relation in (reader, writer):
        databag = state.get_relation(relation.id).local_app_data
        assert json.loads(databag["latest_version"]) == "v2"

    # A relation new since the release: a certificate puts the registry on HTTPS.
    ca = TestCA()
    tls = ca.relation()
    state = dataclasses.replace(state, relations={*state.relations, tls})
    state = ctx.run(ctx.on.relation_created(tls), state)
    before = len(machine.calls("systemctl"))
    state, issued = issued_in(ca, state)
    state = ctx.run(ctx.on.relation_changed(issued), state)
    assert state.unit_status == testing.ActiveStatus("latest v2")
    restarted = {call[-1] for call in machine.calls("systemctl")[before:] if call[0] == "restart"}
    assert restarted == SERVER_UNITS
    assert machine.running_units() == {*SERVER_UNITS, TAGS_PATH}
    for relation in (reader, writer):
        databag = state.get_relation(relation.id).local_app_data
        assert json.loads(databag["registry_url"]).startswith("https://")
        assert json.loads(databag["ca"]) == ca.ca_pem
        old = published[relation.remote_app_name]
        assert databag["credentials_secret_id"] == old["credentials_secret_id"]
    secrets_after = {secret.id: secret.latest_content for secret in state.secrets}
    for secret_id, content in secrets_before.items():
        assert secrets_after.get(secret_id) == content, f"secret {secret_id} changed"
