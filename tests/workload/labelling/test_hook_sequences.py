"""labelling-k8s through a unit's life: hooks in sequence on a real Pebble, state carried over.

Each step is a hook (or a few) of the real charm, whose ``label-studio`` container is a real
Pebble daemon (see tests/workload/pebble_backed.py) running the real Label Studio. Its data
registry is the real one, run by the data-versioning charm on another Pebble; the labelling
unit knows it only by the relation data and the secret that charm published for a write
consumer. After every step the running services, the status and everything written so far
(projects, their tasks, the annotation) are checked through Label Studio's REST API. A hook
that changes nothing must leave Pebble without a single change (no replan, no restart, no
exec). The modes: SQLite on the unit's storage; an external PostgreSQL (the ``database``
relation, as postgresql-k8s writes it); and the way back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ops import testing

from mlops_charms import jobs, labelling_server
from tests import previous_release
from tests.charm_testing import load_charm_module
from tests.provider_data import postgresql_k8s_relation
from tests.workload.labelling.harness import (
    CHARM_ROOT,
    CHARM_SRC,
    binaries,
    label_studio,
    rest_call,
)
from tests.workload.pebble_backed import PebbleBackedCharm, shared_folder, wait_until
from tests.workload.processes import PostgreSQLServer, answers_200, free_port
from tests.workload.registry.harness import (
    RunningRegistry,
    chown_tree,
    dvc,
    git,
    read_tree,
    registry,
    start_registry,
)
from tests.workload.registry.harness import charm as registry_charm

pytestmark = pytest.mark.slow

charm = load_charm_module(CHARM_SRC, "labelling_k8s_charm")

SERVICES = {label_studio.SERVICE, label_studio.METRICS_SERVICE}
JOB_SERVICE = f"{labelling_server.JOB_SLOT}-job"
# Migrations: ~55 s of CPU for SQLite and again for PostgreSQL; minutes on a busy machine.
FIRST_START = 600.0
WARM_START = 300.0
TEXTS = {
    "texts/item-0.txt": "Great value, works as described.",
    "texts/item-1.txt": "The box was damaged.",
    "texts/item-2.txt": "Broke after two days.",
    "texts/item-3.txt": "Not bad, not good.",
}
PROJECT = "reviews"
RELABEL_PROJECT = f"{PROJECT} re-label"
ANNOTATED_ITEM, ANNOTATED_LABEL = "texts/item-1.txt", "negative"
SENT_BACK = ["texts/item-0.txt", "texts/item-2.txt"]


def batch(batch_id: str, project: str, items: list[str]) -> dict[str, Any]:
    """One mlops-relabel batch as error analysis (the training charm) writes it."""
    return {
        "batch_id": batch_id,
        "items": items,
        "reason": "misclassified",
        "run_id": "0f3c2a9be1d44e2c",
        "dataset_version": "v1",
        "project": project,
    }


@dataclasses.dataclass
class Project:
    """What a project must hold: its items, and the label annotated on some of them."""

    items: set[str]
    labels: dict[str, str] = dataclasses.field(default_factory=dict)


@pytest.fixture(scope="module")
def labelling_base() -> Iterator[Path]:
    with shared_folder("labelling-life-") as base:
        yield base


class Life:
    """Drives labelling-k8s's hooks (and the registry's) and checks what must hold after each."""

    registry: RunningRegistry  # started while Label Studio migrates

    def __init__(self, unit: PebbleBackedCharm, tmp_path: Path, *, peers: bool = True):
        self.unit = unit
        self.tmp_path = tmp_path
        self.container = unit.containers[charm.CONTAINER]
        self.port = free_port()
        self.state = testing.State(
            leader=True,
            config={"port": self.port, "metrics-port": free_port()},
            containers={unit.container_state(charm.CONTAINER)},
            storages=unit.storages(),
            # Juju's peers relation: where the leader records the database it migrated.
            relations={testing.PeerRelation(labelling_server.PEERS)} if peers else set(),
        )
        # What each database must hold, by project title; the one in use is checked.
        self.databases: dict[str, dict[str, Project]] = {"sqlite": {}, "postgresql": {}}
        self.database = "sqlite"
        self.checks = 0
        self.started = time.monotonic()
        self.release: previous_release.ReleasedCharm | None = None  # the charm's, until refresh

    @property
    def ctx(self) -> testing.Context:
        return self.unit.context

    # --- hooks ------------------------------------------------------------------------------

    def hook(self, event, state: testing.State | None = None) -> testing.State:
        with self.charm_code():
            self.state = self.unit.run(event, self.state if state is None else state)
        return self.state

    def charm_code(self) -> contextlib.AbstractContextManager[None]:
        """The previous release's modules while its charm runs the unit, else the current."""
        return self.release.active() if self.release else contextlib.nullcontext()

    def no_op(self, event, step: str, state: testing.State | None = None) -> None:
        """A hook that must change nothing in the workload: no Pebble change at all."""
        before = self.container.last_change_id()
        self.hook(event, state)
        changes = self.container.changes_since(before)
        assert not changes, f"{step}: a no-op hook changed the workload: {changes}"

    def action(self, name: str, **params) -> dict:
        with self.charm_code():
            results, self.state = self.unit.run_action(name, self.state, **params)
        assert not isinstance(results, testing.ActionFailed), f"{name}: {results.message}"
        return results

    def relate(self, relation: testing.Relation, *new_secrets: testing.Secret) -> None:
        """A new relation, its hooks in Juju's order (the remote app's data already there)."""
        self.state = dataclasses.replace(
            self.state,
            relations={*self.state.relations, relation},
            secrets={*self.state.secrets, *new_secrets},
        )
        self.hook(self.ctx.on.relation_created(relation))
        for event in (self.ctx.on.relation_joined, self.ctx.on.relation_changed):
            self.hook(event(self.state.get_relation(relation.id), remote_unit=0))

    def remote_changed(
        self, relation: testing.Relation, no_op: str | None = None, **remote_app_data: str
    ) -> None:
        """The remote application rewrote its databag: relation-changed (a no-op ``no_op``)."""
        old = self.state.get_relation(relation.id)
        new = dataclasses.replace(old, remote_app_data=remote_app_data)
        state = dataclasses.replace(self.state, relations=(self.state.relations - {old}) | {new})
        event = self.ctx.on.relation_changed(new, remote_unit=0)
        if no_op:
            self.no_op(event, no_op, state)
        else:
            self.hook(event, state)

    def remove_relation(self, relation: testing.Relation, *gone: testing.Secret) -> None:
        """relation-departed, relation-broken, then the relation is gone from the model."""
        departed = self.ctx.on.relation_departed(
            self.state.get_relation(relation.id), remote_unit=0, departing_unit=0
        )
        self.hook(departed)
        self.hook(self.ctx.on.relation_broken(self.state.get_relation(relation.id)))
        self.state = dataclasses.replace(
            self.state,
            relations={r for r in self.state.relations if r.id != relation.id},
            secrets={s for s in self.state.secrets if s.id not in {g.id for g in gone}},
        )

    def deliver_job_end(self) -> None:
        """Wait for the running job to end, then give the charm the notice it recorded."""
        self.settle(timeout=180)
        unreported = self.unit.storage[labelling_server.STORAGE] / "jobs" / jobs.UNREPORTED
        assert list(unreported.glob("*")), "the job ended without marking itself unreported"
        event, state = self.unit.notice_event(self.state, charm.CONTAINER, jobs.NOTICE_KEY)
        self.hook(event, state)

    def settle(self, timeout: float = 30) -> None:
        """Until the job service has exited: a job ends (its result) before its wrapper does."""
        wait_until(lambda: JOB_SERVICE not in self.container.running(), timeout, "the job to exit")

    def wait_for_server(self, timeout: float = FIRST_START) -> None:
        """Until Label Studio answers (the check alone may still be up from before a replan)."""
        try:
            wait_until(self.healthy, timeout, "Label Studio to answer")
        except AssertionError as timed_out:
            log = (self.container.base / "pebble.log").read_text()[-3000:]
            raise AssertionError(f"{timed_out}; Pebble's log ends:\n{log}") from None
        self.container.wait_for_checks(timeout=timeout)

    def healthy(self) -> bool:
        return answers_200(f"{self.url}/health", timeout=3)

    # --- Label Studio's REST API ------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, method: str, path: str, body: Any = None) -> Any:
        (secret,) = [s for s in self.state.secrets if s.label == labelling_server.SERVER_SECRET]
        token = (secret.latest_content or secret.tracked_content)["admin-token"]
        return rest_call(self.url, token, method, path, body)

    def projects(self) -> dict[str, dict]:
        listed = self.api("GET", "/api/projects?page_size=100")["results"]
        return {project["title"]: project for project in listed}

    def tasks(self, project_id: int) -> list[dict]:
        return self.api(
            "GET", f"/api/projects/{project_id}/export?exportType=JSON&download_all_tasks=true"
        )

    def annotate(self, title: str, item: str, label: str) -> None:
        (task,) = [
            t for t in self.tasks(self.projects()[title]["id"]) if t["data"]["item"] == item
        ]
        self.api(
            "POST",
            f"/api/tasks/{task['id']}/annotations",
            {
                "result": [
                    {
                        "from_name": "label",
                        "to_name": "text",
                        "type": "choices",
                        "value": {"choices": [label]},
                    }
                ]
            },
        )
        self.databases[self.database][title].labels[item] = label

    # --- what must hold ---------------------------------------------------------------------

    def expected_status(self) -> str:
        host = f"{self.ctx.app_name}.{self.state.model.name}.svc.cluster.local:{self.port}"
        related = any(
            r.endpoint == labelling_server.DATASET_ENDPOINT for r in self.state.relations
        )
        return f"serving at http://{host}" + ("" if related else "; no data registry related")

    def check(self, step: str, *, status: type = testing.ActiveStatus, services=SERVICES) -> None:
        """What must hold after every step: services, status, everything written readable."""
        self.checks += 1
        self.settle()
        print(f"{time.monotonic() - self.started:6.1f} s  {step}")
        assert self.container.running() == services, f"{step}: {self.container.running()}"
        unit_status = self.state.unit_status
        assert isinstance(unit_status, status), f"{step}: {unit_status}"
        if status is testing.ActiveStatus:
            assert unit_status.message == self.expected_status(), f"{step}: {unit_status}"
        expected = self.databases[self.database]
        projects = self.projects()
        assert set(projects) == set(expected), f"{step}: projects {sorted(projects)}"
        for title, project in expected.items():
            tasks = self.tasks(projects[title]["id"])
            assert {t["data"]["item"] for t in tasks} == project.items, f"{step}: {title}"
            labels = {
                t["data"]["item"]: annotation["result"][0]["value"]["choices"][0]
                for t in tasks
                for annotation in t["annotations"]
            }
            assert labels == project.labels, f"{step}: {title}: annotations {labels}"

    def storage_file(self, relative: str) -> Path:
        return self.unit.storage[labelling_server.STORAGE] / relative


def restarted(changes: list) -> bool:
    """Whether Pebble stopped and started Label Studio in ``changes`` (replan or restart)."""
    return any(
        c.kind in ("replan", "restart")
        and {t.kind for t in c.tasks} >= {"stop", "start"}
        and c.status == "Done"
        for c in changes
    )


# --- the registry's side --------------------------------------------------------------------


def registry_job_end(running: RunningRegistry) -> None:
    """Wait for the registry's running job to end, then give its charm the notice."""
    service = f"{registry_charm.JOB_SLOT}-job"
    container = running.unit.containers[registry_charm.CONTAINER]
    wait_until(lambda: service not in container.running(), 180, "a registry job to end")
    assert list((Path(running.settings.jobs_dir) / jobs.UNREPORTED).glob("*"))
    event, state = running.unit.notice_event(
        running.state, registry_charm.CONTAINER, jobs.NOTICE_KEY
    )
    running.run_charm(event, state)


def cut_version(running: RunningRegistry, files: dict[str, str]) -> str:
    """A version from the registry's create-version action, over ``files``."""
    source = running.source_dir(f"source-{secrets.token_hex(3)}")
    for relative, text in files.items():
        (source / relative).parent.mkdir(parents=True, exist_ok=True)
        (source / relative).write_text(text)
    chown_tree(source)
    results, state = running.unit.run_action("create-version", running.state, source=str(source))
    running.refresh(state)
    assert not isinstance(results, testing.ActionFailed), results.message
    assert results["state"] == "succeeded", results
    return results["version"]


def published_to_labelling(running: RunningRegistry) -> tuple[testing.Relation, testing.Secret]:
    """The mlops-dataset relation as the labelling unit sees it: the registry's own output."""
    provided = running.state.get_relation(running.relations["labelling"].id)
    secret_id = json.loads(provided.local_app_data["credentials_secret_id"])
    (granted,) = [s for s in running.state.secrets if s.id == secret_id]
    content = dict(granted.latest_content or granted.tracked_content)
    secret = testing.Secret(tracked_content=content, latest_content=content, id=secret_id)
    relation = testing.Relation(
        labelling_server.DATASET_ENDPOINT,
        interface="mlops_dataset",
        remote_app_name=running.context.app_name,
        remote_app_data=dict(provided.local_app_data),
    )
    return relation, secret


# --- the sequence ---------------------------------------------------------------------------


def _refresh(life: Life) -> None:
    """``juju refresh`` from the previous release to this charm, in the hooks' Juju order.

    The pod is replaced: its Label Studio stops and the new charm's first hooks find the
    container's Pebble not up yet (the storage stays). The new peers endpoint's relation is
    created after upgrade-charm. pebble-ready starts the server again with the new charm's
    plan, on the database the release migrated, with the same admin token.
    """
    admin_before = life.api("GET", "/api/current-user/whoami")["id"]
    life.hook(life.ctx.on.stop())
    container = life.unit.containers[charm.CONTAINER]
    container.stop()
    life.release = None
    life.unit = life.unit.refreshed(
        charm.LabellingCharm, CHARM_ROOT, rock_paths={label_studio: binaries()}
    )
    ctx = life.ctx
    life.hook(ctx.on.upgrade_charm())
    life.hook(ctx.on.config_changed())
    peers = testing.PeerRelation(labelling_server.PEERS)
    life.state = dataclasses.replace(life.state, relations={*life.state.relations, peers})
    life.hook(ctx.on.relation_created(peers))
    life.hook(ctx.on.start())
    assert not life.healthy(), "Label Studio still answers from the old pod"
    container.start()
    life.hook(ctx.on.pebble_ready(life.state.get_container(charm.CONTAINER)))
    life.wait_for_server(timeout=WARM_START)
    assert life.api("GET", "/api/current-user/whoami")["id"] == admin_before


def test_labelling_through_its_life(
    labelling_base: Path,
    postgresql_server: PostgreSQLServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    started = time.monotonic()
    # The container's Pebble passes its environment on: the charm's folders on PYTHONPATH would
    # come before Label Studio's own packages. A rock sets no PYTHONPATH.
    monkeypatch.delenv("PYTHONPATH", raising=False)
    # The unit is deployed with the previous release and refreshed to this one once it holds
    # an imported, annotated project (see _refresh).
    release = previous_release.released_charm("labelling-k8s")
    unit = PebbleBackedCharm(
        release.charm_class,
        release.root,
        labelling_base,
        rock_paths={release.module(label_studio.__name__): binaries()},
    )
    unit.start()
    life = Life(unit, tmp_path, peers=False)
    life.release = release
    try:
        _life(life, postgresql_server)
    finally:
        life.unit.stop()
    print(f"\n{life.unit.hooks_run} labelling hooks, {time.monotonic() - started:.0f} s")


def _life(life: Life, postgresql: PostgreSQLServer) -> None:
    ctx = life.ctx

    # Deploy: Juju's first hooks. The storage-attached hook already starts the server.
    container = life.state.get_container(charm.CONTAINER)
    storage = next(iter(life.state.storages))
    deployed = time.monotonic()
    for event in (
        ctx.on.install(),
        ctx.on.storage_attached(storage),
        ctx.on.leader_elected(),
        ctx.on.config_changed(),
        ctx.on.start(),
        ctx.on.pebble_ready(container),
    ):
        life.hook(event)
    # The server started in storage-attached; it migrates its database first.
    assert life.state.unit_status == testing.WaitingStatus(
        "waiting for Label Studio to become ready"
    )
    assert life.container.running() == SERVICES
    # Meanwhile (migrations: ~30-45 s) the registry starts, with the version to label.
    with start_registry() as reg:
        life.registry = reg
        v1 = cut_version(reg, TEXTS)
        life.wait_for_server()
        print(f"\nLabel Studio first start: {time.monotonic() - deployed:.0f} s after install")
        _with_registry(life, postgresql, v1)


def _with_registry(life: Life, postgresql: PostgreSQLServer, v1: str) -> None:
    ctx, reg = life.ctx, life.registry
    assert life.storage_file("label_studio.sqlite3").is_file()
    life.no_op(ctx.on.update_status(), "update-status after the first start")
    life.check("deployed")

    # mlops-dataset: the registry's answer to a write consumer, and the unit's request.
    dataset, registry_secret = published_to_labelling(reg)
    before = life.container.last_change_id()
    life.relate(dataset, registry_secret)
    assert not life.container.changes_since(before), "relating the registry changed the workload"
    asked = life.state.get_relation(dataset.id).local_app_data
    assert asked == reg.relations["labelling"].remote_app_data  # what the registry was given
    assert json.loads(asked["access"]) == "write"
    life.check("mlops-dataset related")

    # import-version: a job, waited for, whose result the action reports.
    imported = life.action(
        "import-version",
        version=v1,
        project=PROJECT,
        preset="text-classification",
        labels="positive,negative",
    )
    assert (imported["items"], imported["tasks-created"]) == (str(len(TEXTS)), str(len(TEXTS)))
    life.databases["sqlite"][PROJECT] = Project(set(TEXTS))
    life.check("import-version")

    # An annotator labels through the REST API.
    life.annotate(PROJECT, ANNOTATED_ITEM, ANNOTATED_LABEL)
    life.check("annotated")

    # Periodic and repeated hooks change nothing in the workload.
    for _ in range(3):
        life.no_op(ctx.on.update_status(), "update-status")
    life.no_op(ctx.on.config_changed(), "config-changed, same config")
    life.check("no-op hooks")

    _refresh(life)
    ctx = life.ctx
    life.no_op(ctx.on.update_status(), "update-status after the refresh")
    life.check("refreshed from the previous release")

    life.no_op(ctx.on.upgrade_charm(), "upgrade-charm")
    life.check("upgrade-charm")

    # mlops-relabel: error analysis sends items back; one job queues them.
    sent = batch("run-7", PROJECT, SENT_BACK)
    relabel = testing.Relation(
        labelling_server.RELABEL_ENDPOINT,
        interface="mlops_relabel",
        remote_app_name="training",
        remote_app_data={"batches": json.dumps([sent])},
    )
    life.relate(relabel)
    assert life.state.unit_status == testing.WaitingStatus(
        f"{labelling_server.RELABEL_ENDPOINT}: 1 batches to queue"
    )
    life.deliver_job_end()
    acknowledged = life.state.get_relation(relabel.id).local_app_data
    assert json.loads(acknowledged["queued"]) == ["run-7"]
    assert "failed" not in acknowledged
    life.databases["sqlite"][RELABEL_PROJECT] = Project(set(SENT_BACK))
    life.check("relabel batch queued")

    # A batch for a project that does not exist: failed once, said so, never retried.
    lost = batch("run-8", "no-such-project", ["texts/item-3.txt"])
    life.remote_changed(relabel, batches=json.dumps([sent, lost]))
    life.deliver_job_end()
    acknowledged = life.state.get_relation(relabel.id).local_app_data
    assert json.loads(acknowledged["queued"]) == ["run-7"]
    assert json.loads(acknowledged["failed"]) == ["run-8"]
    assert life.state.unit_status == testing.BlockedStatus(
        f"{labelling_server.RELABEL_ENDPOINT}: batches could not be queued: run-8"
        " (list-jobs says why)"
    )
    life.check("relabel batch failed", status=testing.BlockedStatus)
    jobs_before = sorted(p.name for p in life.storage_file("jobs").glob("2*"))
    for _ in range(2):
        life.no_op(ctx.on.update_status(), "update-status after a failed batch")
    assert sorted(p.name for p in life.storage_file("jobs").glob("2*")) == jobs_before
    listed = json.loads(life.action("list-jobs")["jobs"])
    assert listed[0]["state"] == "failed" and listed[0]["params"] == {"batch": "run-8"}
    assert "unknown project 'no-such-project'" in listed[0]["error"], listed[0]
    life.check("failed batch not retried", status=testing.BlockedStatus)
    # The provider withdraws it: the acknowledgement forgets it, the unit is active again.
    life.remote_changed(relabel, batches=json.dumps([sent]))
    assert "failed" not in life.state.get_relation(relabel.id).local_app_data
    life.check("failed batch withdrawn")

    # export-annotations: a new registry version, validated by the registry, then pullable.
    exported = life.action("export-annotations", project=PROJECT)
    assert (exported["version"], exported["parent"]) == ("v2", v1), exported
    event, state = reg.unit.notice_event(reg.state, registry_charm.CONTAINER, registry.NOTICE_KEY)
    reg.run_charm(event, state)
    registry_job_end(reg)
    assert reg.state.unit_status == testing.ActiveStatus("latest v2")
    dataset_now = reg.state.get_relation(reg.relations["labelling"].id).local_app_data
    assert json.loads(dataset_now["latest_version"]) == "v2"
    life.remote_changed(dataset, "mlops-dataset: a new latest version", **dataset_now)
    reader, checkout = reg.reader, life.tmp_path / "reader"
    git("clone", "--quiet", reg.url_for(reader), str(checkout))
    git("checkout", "--quiet", "v2", cwd=checkout)
    pulled = dvc("pull", "--quiet", cwd=checkout, user=reader)
    assert pulled.returncode == 0, pulled.stderr
    tree = read_tree(checkout / "data")
    labels = [json.loads(line) for line in tree.pop(exported["labels-path"]).splitlines()]
    assert {r["item"]: r["label"] for r in labels} == {ANNOTATED_ITEM: ANNOTATED_LABEL}
    assert tree == {k: v.encode() for k, v in TEXTS.items()}
    life.check("export-annotations")

    # PostgreSQL: the server moves to it (a restart, migrations there) and serves from it.
    password = secrets.token_urlsafe(24)
    postgresql.psql(f"CREATE ROLE label_studio_life LOGIN PASSWORD '{password}'")
    postgresql.psql("CREATE DATABASE label_studio_life OWNER label_studio_life")
    database, user_secret = postgresql_k8s_relation(
        host=postgresql.host,
        port=postgresql.port,
        database="label_studio_life",
        username="label_studio_life",
        password=password,
    )
    before = life.container.last_change_id()
    life.relate(database, user_secret)
    assert life.state.get_relation(database.id).local_app_data["database"] == "label_studio"
    changes = life.container.changes_since(before)
    assert restarted(changes), f"no restart onto PostgreSQL: {changes}"
    # The leader migrated the shared database in the hook (an exec), then recorded it for the
    # other units.
    assert any(change.kind == "exec" for change in changes), changes
    (peers,) = (r for r in life.state.relations if r.endpoint == labelling_server.PEERS)
    migrated = life.state.get_relation(peers.id).local_app_data["migrated"]
    assert (
        migrated == f"{label_studio.VERSION} {postgresql.host}:{postgresql.port}/label_studio_life"
    )
    plan = life.container.client.get_plan()
    assert plan.services[label_studio.SERVICE].environment["DJANGO_DB"] == "default"
    assert password not in plan.to_yaml()
    life.database = "postgresql"
    postgres_start = time.monotonic()
    life.wait_for_server()
    print(f"Label Studio first start on PostgreSQL: {time.monotonic() - postgres_start:.0f} s")
    life.no_op(ctx.on.update_status(), "update-status on PostgreSQL")
    life.check("on PostgreSQL")
    life.api("POST", "/api/projects", {"title": "on-postgresql"})
    life.databases["postgresql"]["on-postgresql"] = Project(set())
    assert postgresql.psql("SELECT title FROM project", "label_studio_life") == "on-postgresql"
    life.no_op(ctx.on.config_changed(), "config-changed on PostgreSQL")
    life.check("project written on PostgreSQL")

    # The database relation goes: back on SQLite, where everything from before still is.
    before = life.container.last_change_id()
    life.remove_relation(database, user_secret)
    changes = life.container.changes_since(before)
    assert restarted(changes), f"no restart back onto SQLite: {changes}"
    plan = life.container.client.get_plan()
    assert "DJANGO_DB" not in plan.services[label_studio.SERVICE].environment
    assert "POSTGRE_PASSWORD" not in life.storage_file("secrets/secrets.env").read_text()
    life.database = "sqlite"
    life.wait_for_server(timeout=WARM_START)
    life.no_op(ctx.on.update_status(), "update-status back on SQLite")
    life.check("back on SQLite")
    assert life.unit.hooks_run > 30
