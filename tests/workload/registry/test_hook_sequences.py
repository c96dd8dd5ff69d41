"""The registry through a unit's life: hooks in sequence on a real Pebble, state carried over.

Each step is a hook (or a few) of the real charm, whose container is a real Pebble daemon (see
tests/workload/pebble_backed.py). After every step the running services, the status and every
version cut so far are checked: a consumer pulls each with nothing but what the charm published.
A hook that changes nothing must leave Pebble without a single change (no replan, no restart,
no exec). The modes: the embedded remote (the unit's storage); external S3 (a real S3 server,
``rclone serve s3`` over a folder, as s3-integrator would name it); the moves between them. The
approach switch's revisions: model-centric pins the version consumers use, data-centric unpins.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from ops import testing

from mlops_charms import jobs, registry_server
from mlops_charms.approach import APPROACH_ENDPOINT
from tests import previous_release, provider_data
from tests.workload.pebble_backed import shared_folder, wait_until
from tests.workload.processes import free_port
from tests.workload.registry.harness import (
    CHARM_ROOT,
    RunningRegistry,
    charm,
    chown_tree,
    consumer_relation,
    deploy,
    dvc,
    first_state,
    git,
    local_binaries,
    make_files,
    read_tree,
    registry,
    registry_unit,
    start_registry,
)
from tests.workload.s3_server import S3Server, run_s3_server
from tests.workload.tls import server_certificate

pytestmark = pytest.mark.slow

SERVICES = {registry.GIT_SERVICE, registry.S3_SERVICE, registry.S3_READ_ONLY_SERVICE}


@pytest.fixture(scope="module")
def running_registry() -> Iterator[RunningRegistry]:
    with start_registry() as running:
        yield running


@pytest.fixture(scope="module")
def external_s3(running_registry: RunningRegistry) -> Iterator[S3Server]:
    with run_s3_server(running_registry.base / "external-s3") as server:
        yield server


class Life:
    """Drives the registry's hooks and checks what must hold after each of them."""

    def __init__(self, running: RunningRegistry, tmp_path: Path):
        self.running = running
        self.tmp_path = tmp_path
        self.versions: dict[str, dict[str, bytes]] = {}
        self.container = running.unit.containers[charm.CONTAINER]
        self.checks = 0

    # --- hooks ------------------------------------------------------------------------------

    def hook(self, event, state: testing.State | None = None) -> testing.State:
        return self.running.run_charm(event, state)

    def remove_relation(self, relation_id: int) -> None:
        """relation-broken, then the relation is gone from the model, as Juju does it."""
        relation = self.running.state.get_relation(relation_id)
        event = self.running.context.on.relation_broken(relation)
        out = self.running.unit.run(event, self.running.state)
        self.running.refresh(dataclasses.replace(out, relations=out.relations - {relation}))

    def no_op(self, event, step: str) -> None:
        """A hook that must change nothing in the workload: no Pebble change at all."""
        before = self.container.last_change_id()
        self.hook(event)
        changes = self.container.changes_since(before)
        assert not changes, f"{step}: a no-op hook changed the workload: {changes}"

    def action(self, name: str, **params) -> dict:
        results, state = self.running.unit.run_action(name, self.running.state, **params)
        self.running.refresh(state)
        assert not isinstance(results, testing.ActionFailed), f"{name}: {results.message}"
        return results

    def deliver_job_ends(self) -> None:
        """Wait for the running job to end, then give the charm the notice it records."""
        jobs_dir = Path(self.running.settings.jobs_dir)
        wait_until(lambda: list((jobs_dir / "unreported").glob("*")), 180, "a job to end")
        event, state = self.running.unit.notice_event(
            self.running.state, charm.CONTAINER, jobs.NOTICE_KEY
        )
        self.hook(event, state)

    def deliver_tags_pushed(self) -> None:
        event, state = self.running.unit.notice_event(
            self.running.state, charm.CONTAINER, registry.NOTICE_KEY
        )
        self.hook(event, state)

    # --- data -------------------------------------------------------------------------------

    def cut(self, name: str, count: int = 4) -> str:
        source = self.running.source_dir(name)
        files = make_files(source, count, 600, name)
        chown_tree(source)
        results = self.action("create-version", source=str(source))
        assert results["state"] == "succeeded", results
        self.versions[results["version"]] = files
        return results["version"]

    def check(self, step: str, *, status: type = testing.ActiveStatus) -> None:
        """What must hold after every step: services, status, every version pullable."""
        self.checks += 1
        assert self.container.running() >= SERVICES, f"{step}: {self.container.running()}"
        unit_status = self.running.state.unit_status
        assert isinstance(unit_status, status), f"{step}: {unit_status}"
        reader = self.running.reader
        checkout = self.tmp_path / f"check-{self.checks}"
        git("clone", "--quiet", self.running.url_for(reader), str(checkout))
        for version, files in self.versions.items():
            git("checkout", "--quiet", version, cwd=checkout)
            pulled = dvc("pull", "--quiet", "--force", cwd=checkout, user=reader)
            assert pulled.returncode == 0, f"{step}: {version}: {pulled.stderr}"
            data = read_tree(checkout / "data")
            assert data == files, f"{step}: {version} does not hold its files"


def test_registry_through_its_life(running_registry, external_s3, tmp_path):
    life = Life(running_registry, tmp_path)
    ctx = running_registry.context
    life.check("deployed")
    assert running_registry.state.unit_status == testing.ActiveStatus("no versions yet")

    # A version from an action; consumers are told.
    v1 = life.cut("first")
    assert running_registry.state.unit_status == testing.ActiveStatus(f"latest {v1}")
    life.check("create-version")

    # Periodic and repeated hooks change nothing in the workload.
    for _ in range(3):
        life.no_op(ctx.on.update_status(), "update-status")
    life.no_op(ctx.on.config_changed(), "config-changed, same config")
    # The bucket asked of s3-integrator changes nothing consumers use (it stranded versions).
    config = {**running_registry.state.config, "bucket": "another-bucket"}
    state = dataclasses.replace(running_registry.state, config=config)
    before = life.container.last_change_id()
    life.hook(ctx.on.config_changed(), state)
    assert not life.container.changes_since(before), "the bucket option changed the workload"
    assert running_registry.reader.remote_url == "s3://dvc"
    life.check("no-op hooks")

    # A writer pushes a version with plain git + dvc: validated in a job, then published.
    writer = running_registry.labelling
    checkout = tmp_path / "writer"
    git("clone", "--quiet", running_registry.url_for(writer), str(checkout))
    data = checkout / "data"
    data.mkdir(exist_ok=True)
    pushed = {"pushed/one.bin": b"pushed by a writer with git and dvc"}
    (data / "pushed").mkdir()
    (data / "pushed" / "one.bin").write_bytes(pushed["pushed/one.bin"])
    assert dvc("add", "--quiet", "data", cwd=checkout, user=writer).returncode == 0
    result = dvc("push", "--quiet", cwd=checkout, user=writer)
    assert result.returncode == 0, result.stderr
    identity = ["-c", "user.name=w", "-c", "user.email=w@example.invalid"]
    git(*identity, "add", "data.dvc", ".gitignore", cwd=checkout)
    git(*identity, "commit", "--quiet", "-m", "pushed", cwd=checkout)
    git("tag", "v2", cwd=checkout)
    git("push", "--quiet", "origin", "HEAD:main", "v2", cwd=checkout)
    life.deliver_tags_pushed()
    life.deliver_job_ends()
    assert running_registry.state.unit_status == testing.ActiveStatus("latest v2")
    life.versions["v2"] = pushed
    life.check("pushed version validated")
    # A tag, once pushed, cannot be moved.
    git("tag", "--force", "v2", "HEAD~1", cwd=checkout)
    refused = git("push", "--force", "origin", "v2", cwd=checkout, check=False)
    assert "immutable" in refused, refused
    life.check("tag move refused")

    # The pod is rescheduled: Pebble's state and the processes are gone, the storage stays.
    running_registry.unit.restart_container(charm.CONTAINER)
    container = running_registry.state.get_container(charm.CONTAINER)
    life.hook(ctx.on.pebble_ready(container))
    life.container.wait_for_checks(timeout=60)
    execs = [c for c in life.container.changes_since(0) if c.kind == "exec"]
    assert not execs, "the bootstrap ran again although the repository is there"
    life.check("container restarted")

    life.no_op(ctx.on.upgrade_charm(), "upgrade-charm")
    life.check("upgrade-charm")

    # External S3: the objects are moved in a job, then the services serve the bucket.
    relation, keys = external_s3.relation(path="/registry/")
    state = dataclasses.replace(
        running_registry.state,
        relations={*running_registry.state.relations, relation},
        secrets={*running_registry.state.secrets, keys},
    )
    life.hook(ctx.on.relation_changed(relation, remote_unit=0), state)
    assert running_registry.state.unit_status.name == "maintenance"
    assert "moving the DVC remote" in running_registry.state.unit_status.message
    life.check("moving to external S3", status=testing.MaintenanceStatus)
    life.deliver_job_ends()
    life.container.wait_for_checks(timeout=60)
    life.check("serving external S3")
    external = external_s3.root / "team-bucket" / "registry" / "files"
    assert external.is_dir(), "no object reached the external bucket"
    reader = running_registry.reader
    assert reader.remote_url == "s3://dvc"  # unchanged for consumers
    # Readers never hold the bucket's keys, and stay read-only on it.
    assert external_s3.access_key not in (
        reader.s3_access_key,
        running_registry.labelling.s3_access_key,
    )
    sneaky = tmp_path / "sneaky"
    git("clone", "--quiet", running_registry.url_for(reader), str(sneaky))
    (sneaky / "data").mkdir(exist_ok=True)
    (sneaky / "data" / "sneaky.bin").write_bytes(b"a reader's write")
    assert dvc("add", "--quiet", "data", cwd=sneaky, user=reader).returncode == 0
    refused = dvc("push", cwd=sneaky, user=reader)
    assert refused.returncode != 0 and "AccessDenied" in refused.stderr, refused.stderr
    assert not any(
        p.read_bytes() == b"a reader's write" for p in external_s3.root.rglob("*") if p.is_file()
    )
    v3 = life.cut("after-the-move")
    v3_objects = {p.read_bytes() for p in external.rglob("*") if p.is_file()}
    assert set(life.versions[v3].values()) <= v3_objects, "v3 did not go to the external bucket"
    for _ in range(2):
        life.no_op(ctx.on.update_status(), "update-status on external S3")
    life.check("external S3, no-op hooks")

    # The relation goes: the objects move back to the unit's storage first.
    life.remove_relation(relation.id)
    life.check("moving back", status=testing.MaintenanceStatus)
    life.deliver_job_ends()
    life.container.wait_for_checks(timeout=60)
    life.check("serving the unit's storage again")
    assert set(life.versions[v3].values()) <= {
        p.read_bytes() for p in running_registry.objects.rglob("*") if p.is_file()
    }
    assert running_registry.unit.hooks_run > 25


def test_a_failed_move_keeps_serving_and_says_why(running_registry, external_s3, tmp_path):
    life = Life(running_registry, tmp_path)
    life.cut("before-a-failed-move")
    relation, keys = external_s3.relation(
        path="/registry/", endpoint=f"http://127.0.0.1:{free_port()}"
    )
    state = dataclasses.replace(
        running_registry.state,
        relations={*running_registry.state.relations, relation},
        secrets={*running_registry.state.secrets, keys},
    )
    ctx = running_registry.context
    life.hook(ctx.on.relation_changed(relation, remote_unit=0), state)
    life.deliver_job_ends()
    status = running_registry.state.unit_status
    assert isinstance(status, testing.BlockedStatus), status
    assert status.message.startswith("moving the DVC remote failed"), status
    life.check("move failed", status=testing.BlockedStatus)
    # Retried on update-status, in a new job; still blocked while it fails.
    started = len(list(Path(running_registry.settings.jobs_dir).glob("2*")))
    life.hook(ctx.on.update_status())
    assert len(list(Path(running_registry.settings.jobs_dir).glob("2*"))) == started + 1
    life.deliver_job_ends()
    life.check("retried, failed again", status=testing.BlockedStatus)
    life.remove_relation(relation.id)
    life.check("relation removed: nothing to move")


def test_a_failed_bootstrap_blocks_until_it_succeeds(running_registry, tmp_path):
    life = Life(running_registry, tmp_path)
    life.cut("before-a-failed-bootstrap")
    hooks = Path(running_registry.settings.conf_dir) / "hooks"
    hooks.chmod(0o000)  # the service user can no longer install the git hooks
    try:
        config = {**running_registry.state.config, "public-host": "localhost"}
        life.hook(
            running_registry.context.on.config_changed(),
            dataclasses.replace(running_registry.state, config=config),
        )
        status = running_registry.state.unit_status
        assert isinstance(status, testing.BlockedStatus), status
        assert "bootstrap failed" in status.message, status
        life.hook(running_registry.context.on.update_status())
        assert "bootstrap failed" in running_registry.state.unit_status.message
    finally:
        hooks.chmod(0o755)
    life.hook(running_registry.context.on.update_status())
    life.check("bootstrap retried")
    assert json.dumps(running_registry.reader.remote_endpoint).count("localhost") == 1


def test_external_s3_behind_a_private_ca(running_registry, tmp_path):
    """s3-integrator's tls-ca-chain reaches rclone: without it the move fails, with it not."""
    certificate = server_certificate(tmp_path / "tls")
    root = running_registry.base / "tls-s3"
    with run_s3_server(root, tls=certificate) as bucket:
        life = Life(running_registry, tmp_path)
        version = life.cut("before-the-tls-move")
        relation, keys = bucket.relation(path="/registry/")
        state = dataclasses.replace(
            running_registry.state,
            relations={*running_registry.state.relations, relation},
            secrets={*running_registry.state.secrets, keys},
        )
        ctx = running_registry.context
        life.hook(ctx.on.relation_changed(relation, remote_unit=0), state)
        life.deliver_job_ends()
        status = running_registry.state.unit_status
        assert isinstance(status, testing.BlockedStatus), status
        assert "certificate" in status.message, status
        # s3-integrator now sends its CA: the retried move trusts it.
        relation = running_registry.state.get_relation(relation.id)
        with_ca = dataclasses.replace(
            relation,
            remote_app_data={
                **relation.remote_app_data,
                "tls-ca-chain": json.dumps([certificate.ca_pem]),
            },
        )
        state = dataclasses.replace(
            running_registry.state,
            relations={*(running_registry.state.relations - {relation}), with_ca},
        )
        life.hook(ctx.on.relation_changed(with_ca, remote_unit=0), state)
        life.hook(ctx.on.update_status())
        life.deliver_job_ends()
        life.container.wait_for_checks(timeout=60)
        life.check("serving an external bucket behind a private CA")
        stored = {p.read_bytes() for p in (root / "team-bucket").rglob("*") if p.is_file()}
        assert set(life.versions[version].values()) <= stored
        life.remove_relation(with_ca.id)
        life.deliver_job_ends()
        life.check("back on the unit's storage")


def test_the_approach_pins_the_version_consumers_use_then_unpins_it(running_registry, tmp_path):
    life = Life(running_registry, tmp_path)
    ctx = running_registry.context
    life.cut("before-the-approach")
    pinned = life.cut("pinned-by-the-approach")

    def publish(relation: testing.Relation) -> None:
        """The switch publishes a revision: applying it changes nothing in the workload."""
        others = {r for r in running_registry.state.relations if r.id != relation.id}
        state = dataclasses.replace(running_registry.state, relations={*others, relation})
        before = life.container.last_change_id()
        life.hook(ctx.on.relation_changed(relation), state)
        assert not life.container.changes_since(before), "applying the approach changed Pebble"

    def acknowledged() -> dict:
        databag = running_registry.state.get_relation(relation.id).local_app_data
        return {key: json.loads(value) for key, value in databag.items()}

    # Model-centric without a dataset version: the latest one is pinned for every consumer.
    relation = testing.Relation(
        APPROACH_ENDPOINT,
        interface="mlops_approach",
        remote_app_name="mlops-approach",
        remote_app_data=provider_data.approach_databag("model-centric", 1),
    )
    publish(relation)
    for consumer in (running_registry.reader, running_registry.labelling):
        assert (consumer.latest_version, consumer.pinned_version) == (pinned, pinned)
    assert acknowledged() == {
        "service": "data-versioning",
        "applied_revision": 1,
        "pinned_version": pinned,
    }
    assert running_registry.state.unit_status == testing.ActiveStatus(
        f"latest {pinned}; model-centric: pinned {pinned}"
    )
    life.check("model-centric")
    # A consumer reads the version it is told to use, with git and dvc, as before.
    reader = running_registry.reader
    checkout = tmp_path / "pinned"
    git("clone", "--quiet", running_registry.url_for(reader), str(checkout))
    git("checkout", "--quiet", str(reader.pinned_version), cwd=checkout)
    pulled = dvc("pull", "--quiet", cwd=checkout, user=reader)
    assert pulled.returncode == 0, pulled.stderr
    assert read_tree(checkout / "data") == life.versions[pinned]

    # A new version is the latest; the pin stays, and hooks apply the revision no more.
    newer = life.cut("after-the-pin")
    reader = running_registry.reader
    assert (reader.latest_version, reader.pinned_version) == (newer, pinned)
    listed = json.loads(life.action("list-versions")["versions"])
    assert {v["version"]: v["approach"] for v in listed}[newer] == "model-centric"
    life.no_op(ctx.on.update_status(), "update-status, revision applied")
    assert running_registry.reader.pinned_version == pinned
    life.check("model-centric, a newer version")

    # Data-centric (a new revision): unpinned, consumers follow the latest version.
    publish(
        dataclasses.replace(
            relation, remote_app_data=provider_data.approach_databag("data-centric", 2)
        )
    )
    reader = running_registry.reader
    assert (reader.latest_version, reader.pinned_version) == (newer, None)
    assert acknowledged() == {"service": "data-versioning", "applied_revision": 2}
    assert running_registry.state.unit_status == testing.ActiveStatus(
        f"latest {newer}; data-centric"
    )
    life.check("data-centric")
    life.remove_relation(relation.id)
    assert running_registry.state.unit_status == testing.ActiveStatus(f"latest {newer}")
    life.check("approach removed")


def test_a_departed_consumer_loses_access(running_registry, tmp_path):
    life = Life(running_registry, tmp_path)
    reader_url = running_registry.url_for(running_registry.reader)
    assert "refs/heads/main" in git("ls-remote", reader_url)
    life.remove_relation(running_registry.relations["training"].id)
    refused = git("ls-remote", reader_url, check=False)
    assert "401" in refused or "Authentication failed" in refused, refused
    labels = {s.label for s in running_registry.state.secrets}
    assert (
        registry_server.CONSUMER_SECRET.format(
            relation_id=running_registry.relations["training"].id
        )
        not in labels
    )


def test_an_upgrade_from_the_previous_release_keeps_versions_and_consumers(tmp_path):
    """`juju refresh` from the previous release: versions, consumers' credentials, secrets stay."""
    release = previous_release.released_charm("data-versioning-k8s")
    with shared_folder("registry-upgrade-") as base:
        released_registry = release.module(registry.__name__)
        unit = registry_unit(base, release.charm_class, release.root, released_registry)
        relations = {
            "training": consumer_relation("training"),
            "labelling": consumer_relation("labelling", "write"),
        }
        unit.start()
        try:
            with release.active():
                state = deploy(unit, first_state(unit, relations.values()))
                running = RunningRegistry(unit=unit, base=base, state=state, relations=relations)
                assert type(running.settings) is released_registry.RegistrySettings
                life = Life(running, tmp_path)
                released = life.cut("on-the-release")
                life.check("previous release")
                consumers = (running.reader, running.labelling)
                secrets_before = {s.id: s.latest_content for s in running.state.secrets}
                life.hook(running.context.on.stop())  # the old pod goes

            # The pod comes back with the new charm: Pebble's plan is gone, the storage stays.
            running.unit = unit.refreshed(
                charm.DataVersioningCharm, CHARM_ROOT, rock_paths={registry: local_binaries()}
            )
            running.unit.restart_container(charm.CONTAINER)
            ctx = running.context
            container = running.state.get_container(charm.CONTAINER)
            for event in (
                ctx.on.upgrade_charm(),
                ctx.on.config_changed(),
                ctx.on.start(),
                ctx.on.pebble_ready(container),
                ctx.on.update_status(),
            ):
                life.hook(event)
            life.container.wait_for_checks(timeout=60)
            assert type(running.settings) is registry.RegistrySettings  # the current charm's
            assert running.state.unit_status == testing.ActiveStatus(f"latest {released}")
            life.check("upgraded")
            # Consumers keep what the release published them: URLs, users, keys, versions.
            assert (running.reader, running.labelling) == consumers
            secrets_after = {s.id: s.latest_content for s in running.state.secrets}
            for secret_id, content in secrets_before.items():
                assert secrets_after.get(secret_id) == content, f"secret {secret_id} changed"
            assert "refs/heads/main" in git("ls-remote", running.url_for(running.labelling))
            # The current charm cuts a version on the release's repository and remote.
            life.cut("after-the-upgrade")
            life.check("a version cut after the upgrade")
        finally:
            unit.stop()
