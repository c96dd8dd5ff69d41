"""training-k8s's hooks in order, its container on a real Pebble that runs the real watcher.

The charm's layer starts ``job_watcher.py`` under a real Pebble daemon; the watcher follows a
Kubernetes API over HTTP (``tests/fake_kubernetes.py``, which the charm's lightkube reaches
too) and records the Pebble notice with the real ``pebble notify``. What the cluster would do
by itself (the Job's pod, its end) the test plays; everything between the action and the
relabel batch on the relation is the charm's, the watcher's and Pebble's own.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from ops import testing

from mlops_charms.jobs import NOTICE_KEY
from tests import previous_release
from tests.charm_testing import load_charm_module
from tests.fake_kubernetes import FakeKubernetes
from tests.workload.pebble_backed import PebbleBackedCharm, shared_folder, wait_until

CHARM_ROOT = Path(__file__).resolve().parents[3] / "charms" / "training-k8s"
if str(CHARM_ROOT / "src") not in sys.path:
    sys.path.insert(0, str(CHARM_ROOT / "src"))
if str(CHARM_ROOT / "tests" / "unit") not in sys.path:
    sys.path.insert(0, str(CHARM_ROOT / "tests" / "unit"))

from loop_cases import approach_relation, published, relation  # noqa: E402
from training_testing import (  # noqa: E402
    MODEL,
    app_data,
    dataset_relation,
    fake_cluster,
    relabel_relation,
    tracking_relation,
)

import training_workload  # noqa: E402

charm = load_charm_module(CHARM_ROOT / "src", "training_charm")
BATCH = {
    "batch_id": "error-analysis-r7",
    "items": ["texts/0001.txt", "texts/0002.txt"],
    "reason": "suspected label error",
    "run_id": "r7",
    "dataset_version": "v2",
    "project": "reviews",
}


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeKubernetes]:
    with fake_cluster().serve() as fake:
        monkeypatch.setenv("KUBECONFIG", str(fake.kubeconfig(tmp_path / "kubeconfig", MODEL)))
        yield fake


def _rock(workload: ModuleType, base: Path, cluster: FakeKubernetes) -> Any:
    """``workload``'s rock paths on this machine: the watcher of the image, the fake cluster."""
    account = base / "service-account"
    account.mkdir(exist_ok=True)
    (account / "token").write_text("token-of-the-pod\n")
    return workload.Binaries(
        python=sys.executable,
        watcher=str(CHARM_ROOT / "src" / "job_watcher.py"),
        api_server=cluster.url,
        service_account=str(account),
    )


def _training_unit(
    charm_class: type, charm_root: Path, workload: ModuleType, base: Path, cluster: FakeKubernetes
) -> PebbleBackedCharm:
    harness = PebbleBackedCharm(
        charm_class, charm_root, base, rock_paths={workload: _rock(workload, base, cluster)}
    )
    harness.context.app_name = "training-k8s"
    return harness


@pytest.fixture
def unit(cluster: FakeKubernetes) -> Iterator[PebbleBackedCharm]:
    with shared_folder("mlops-training-") as base:
        harness = _training_unit(charm.TrainingCharm, CHARM_ROOT, training_workload, base, cluster)
        harness.start()
        try:
            yield harness
        finally:
            harness.stop()


def _state(
    unit: PebbleBackedCharm,
    tmp_path: Path,
    relabel: testing.Relation,
    *more: testing.Relation,
    latest: str = "v2",
) -> testing.State:
    image = tmp_path / "image.yaml"
    image.write_text("registrypath: localhost:32000/training:0.1.0\n")
    (dataset, dataset_secret), (tracking, tracking_secret) = (
        dataset_relation(latest=latest),
        tracking_relation(),
    )
    return testing.State(
        leader=True,
        model=testing.Model(name=MODEL),
        containers={unit.container_state("training")},
        storages=unit.storages(),
        relations={dataset, tracking, relabel, *more},
        secrets={dataset_secret, tracking_secret},
        resources={testing.Resource(name="training-image", path=image)},
    )


def test_an_error_analysis_job_ends_in_a_relabel_batch_through_the_real_watcher(
    unit: PebbleBackedCharm, cluster: FakeKubernetes, tmp_path: Path
):
    relabel = relabel_relation()
    state = unit.run(
        unit.context.on.pebble_ready(unit.container_state("training")),
        _state(unit, tmp_path, relabel),
    )
    container = unit.containers["training"]
    wait_until(lambda: "job-watcher" in container.running(), 10, "the watcher to run")
    assert state.unit_status == testing.ActiveStatus("backend: Job; no job running")

    results, state = unit.run_action("error-analysis", state, spec="text-tfidf-logreg")
    job_id, name = results["job"], results["name"]
    cluster.run_pod(
        MODEL, name, json.dumps({"run_id": "r7", "relabel_batch": BATCH}) + "\n", exit_code=0
    )
    cluster.finish(MODEL, "jobs", name, succeeded=True)

    wait_until(lambda: container.custom_notices(NOTICE_KEY), 15, "the watcher's notice")
    jobs_dir = unit.storage["training-data"] / "jobs"
    assert (jobs_dir / job_id / "exit").read_text().startswith("0 ")
    event, state = unit.notice_event(state, "training", NOTICE_KEY)
    state = unit.run(event, state)
    assert app_data(state, relabel) == {"batches": [BATCH]}
    assert not (jobs_dir / "unreported" / job_id).exists()

    # A hook with nothing new changes nothing in Pebble: no replan, no restart.
    before = container.last_change_id()
    state = unit.run(unit.context.on.update_status(), state)
    assert container.changes_since(before) == []
    assert state.unit_status == testing.ActiveStatus("backend: Job; no job running")


def test_a_restarted_container_watches_again_and_records_an_end_it_missed(
    unit: PebbleBackedCharm, cluster: FakeKubernetes, tmp_path: Path
):
    state = unit.run(
        unit.context.on.pebble_ready(unit.container_state("training")),
        _state(unit, tmp_path, relabel_relation()),
    )
    results, state = unit.run_action("train", state, spec="image-svc")
    unit.restart_container("training")  # the pod rescheduled: the watcher is gone
    cluster.run_pod(MODEL, results["name"], "error: no labels in v2\n", exit_code=1)
    cluster.finish(MODEL, "jobs", results["name"], succeeded=False, reason="PodFailurePolicy")
    time.sleep(0.5)
    state = unit.run(unit.context.on.pebble_ready(unit.container_state("training")), state)
    container = unit.containers["training"]
    wait_until(lambda: container.custom_notices(NOTICE_KEY), 15, "the watcher's notice")
    event, state = unit.notice_event(state, "training", NOTICE_KEY)
    state = unit.run(event, state)
    listed, state = unit.run_action("list-jobs", state)
    (job,) = json.loads(listed["jobs"])
    assert job["state"] == "failed" and job["error"].startswith(
        "no labels in v2 (PodFailurePolicy"
    )


def _notices(unit: PebbleBackedCharm) -> int:
    """How many times the watcher has recorded the job-finished notice."""
    return sum(n.occurrences for n in unit.containers["training"].custom_notices(NOTICE_KEY))


def _run_on_next_notice(unit: PebbleBackedCharm, state: testing.State, seen: int) -> testing.State:
    """Wait for the watcher's next notice, then run the hook it starts."""
    wait_until(lambda: _notices(unit) > seen, 15, "the watcher's notice")
    event, state = unit.notice_event(state, "training", NOTICE_KEY)
    return unit.run(event, state)


def _runs(cluster: FakeKubernetes) -> list[tuple[str, str, str]]:
    """(Job name, command, --version) of every Job, oldest first (job ids sort by start)."""
    runs = []
    for job in cluster.list(MODEL, "jobs"):
        command = job["spec"]["template"]["spec"]["containers"][0]["command"]
        runs.append((job["metadata"]["name"], command[2], command[command.index("--version") + 1]))
    return runs


def test_the_data_centric_loop_trains_a_new_version_then_analyses_it_hook_by_hook(
    unit: PebbleBackedCharm, cluster: FakeKubernetes, tmp_path: Path
):
    state = _state(unit, tmp_path, relabel_relation(), approach_relation(), latest="v1")
    state = unit.run(unit.context.on.pebble_ready(unit.container_state("training")), state)
    container = unit.containers["training"]
    wait_until(lambda: "job-watcher" in container.running(), 10, "the watcher to run")
    ((first, kind, version),) = _runs(cluster)  # the version in use when related
    assert (kind, version) == ("train", "v1")
    cluster.run_pod(MODEL, first, "error: no labels in v1\n", exit_code=1)
    cluster.finish(MODEL, "jobs", first, succeeded=False)
    state = _run_on_next_notice(unit, state, 0)
    assert len(_runs(cluster)) == 1  # a failed run is not tried again

    # The registry publishes v2: the train Job is created in that very hook.
    state = published(state, "mlops-dataset", latest_version="v2")
    state = unit.run(unit.context.on.relation_changed(relation(state, "mlops-dataset")), state)
    (train, kind, version) = _runs(cluster)[-1]
    assert (len(_runs(cluster)), kind, version) == (2, "train", "v2")

    # Its end, seen by the real watcher, runs the hook that creates the error analysis's Job.
    seen = _notices(unit)
    cluster.run_pod(MODEL, train, json.dumps({"run_id": "r2"}) + "\n", exit_code=0)
    cluster.finish(MODEL, "jobs", train, succeeded=True)
    state = _run_on_next_notice(unit, state, seen)
    assert [(kind, version) for _name, kind, version in _runs(cluster)] == [
        ("train", "v1"),
        ("train", "v2"),
        ("error-analysis", "v2"),
    ]
    assert state.unit_status == testing.ActiveStatus(
        "backend: Job; 1 job(s) running; data-centric loop: error analysis of v2 running"
    )
    approach = app_data(state, relation(state, "mlops-approach"))
    assert approach == {"service": "training", "applied_revision": 3}

    # Nothing new: no Pebble change, no Job.
    last = container.last_change_id()
    state = unit.run(unit.context.on.update_status(), state)
    assert container.changes_since(last) == [] and len(_runs(cluster)) == 3


def test_a_run_started_by_the_previous_release_ends_with_this_charm(
    cluster: FakeKubernetes, tmp_path: Path
):
    """A refresh while a train Job runs: the new charm's watcher sees its end and records it."""
    release = previous_release.released_charm("training-k8s")
    with shared_folder("mlops-training-upgrade-") as base:
        previous = _training_unit(
            release.charm_class,
            release.root,
            release.module(training_workload.__name__),
            base,
            cluster,
        )
        previous.start()
        try:
            with release.active():
                state = _state(previous, tmp_path, relabel_relation())
                state = previous.run(
                    previous.context.on.pebble_ready(previous.container_state("training")), state
                )
                results, state = previous.run_action("train", state, spec="image-svc")
                assert not isinstance(results, testing.ActionFailed), results.message
                state = previous.run(previous.context.on.stop(), state)  # the old pod goes

            # The pod comes back with the new charm (the storage stays) while the Job runs.
            unit = previous.refreshed(
                charm.TrainingCharm,
                CHARM_ROOT,
                rock_paths={training_workload: _rock(training_workload, base, cluster)},
            )
            unit.context.app_name = "training-k8s"
            unit.restart_container("training")
            container = unit.container_state("training")
            for event in (
                unit.context.on.upgrade_charm(),
                unit.context.on.config_changed(),
                unit.context.on.start(),
                unit.context.on.pebble_ready(container),
            ):
                state = unit.run(event, state)
            running = unit.containers["training"]
            wait_until(lambda: "job-watcher" in running.running(), 10, "the new watcher to run")
            assert state.unit_status == testing.ActiveStatus("backend: Job; 1 job(s) running")

            seen = _notices(unit)
            cluster.run_pod(
                MODEL, results["name"], json.dumps({"run_id": "r9"}) + "\n", exit_code=0
            )
            cluster.finish(MODEL, "jobs", results["name"], succeeded=True)
            state = _run_on_next_notice(unit, state, seen)
            listed, state = unit.run_action("list-jobs", state)
            (job,) = json.loads(listed["jobs"])
            assert (job["id"], job["state"]) == (results["job"], "succeeded"), job
            assert state.unit_status == testing.ActiveStatus("backend: Job; no job running")
        finally:
            previous.stop()
