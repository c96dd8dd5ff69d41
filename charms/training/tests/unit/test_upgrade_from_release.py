"""`juju refresh` of a machine unit from the previous release's charm to this one.

The release's charm (``tests/previous_release.py``) comes up related to a registry and a
tracking server and starts a run, a transient systemd unit; then the current charm runs Juju's
refresh hooks on the same State and the same machine: the run keeps running, and its end,
recorded by the unit's ``ExecStopPost`` that the release wrote, is reported by this charm.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import APP, UNIT, Machine
from ops import testing
from scenario.state import _Event
from test_job_unit_runs import dispatched, run_exec_start, run_exec_stop_post

import charm
import machine_paths
from mlops_charms import systemd_jobs, training
from mlops_charms.systemd_jobs import JobUnit
from tests import previous_release
from tests.charm_testing import deployed
from tests.fake_machine import log_apt_installs

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "training-k8s/tests/unit"))
from training_testing import GIT_PASSWORD, REGISTRY_CA, dataset_relation, tracking_relation

STATUS_RUNNING = "no NVIDIA GPU: CPU only; 1 job(s) running"
STATUS_IDLE = "no NVIDIA GPU: CPU only; no job running"


@pytest.fixture
def release() -> previous_release.ReleasedCharm:
    return previous_release.released_charm("training")


@pytest.fixture
def release_ctx(
    release: previous_release.ReleasedCharm,
    machine: Machine,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[testing.Context]:
    """The release's charm with its own charmcraft.yaml, on the same fake machine.

    What the conftest patches on the current modules is patched on the release's too.
    """
    paths_module = release.module("machine_paths")
    paths = paths_module.MachinePaths(**dataclasses.asdict(machine_paths.PATHS))
    monkeypatch.setattr(paths_module, "PATHS", paths)
    installer = release.module("installer")
    assert release.module("charm").installer is installer
    monkeypatch.setattr(installer, "ensure_workload", lambda *_args: False)
    log_apt_installs(monkeypatch, machine.state, installer, release.module("mlops_charms.machine"))
    with release.context(app_name=APP) as context:
        yield context


def job_ended() -> _Event:
    """The charm's own event the job's ExecStopPost dispatches through ``juju-exec``."""
    return _Event("job_ended")


def listed_jobs(ctx: testing.Context, state: testing.State) -> list[dict]:
    ctx.run(ctx.on.action("list-jobs"), state)
    assert ctx.action_results is not None
    return json.loads(ctx.action_results["jobs"])


def test_a_run_started_by_the_previous_release_ends_with_this_charm(
    ctx, release, release_ctx, machine: Machine
):
    dataset, dataset_secret = dataset_relation()
    tracking, tracking_secret = tracking_relation()
    state = testing.State(
        leader=True, relations={dataset, tracking}, secrets={dataset_secret, tracking_secret}
    )

    with release.active():
        # The release's own code runs these hooks, not the current modules.
        assert release_ctx.charm_spec.charm_type is release.charm_class
        assert sys.modules["mlops_charms.training"] is release.module("mlops_charms.training")
        assert release.module("mlops_charms.training") is not training
        state = deployed(release_ctx, state, (dataset, tracking))
        state = release_ctx.run(
            release_ctx.on.action("train", params={"spec": "text-tfidf-logreg"}), state
        )
        assert release_ctx.action_results is not None
        job_id, unit_name = release_ctx.action_results["job"], release_ctx.action_results["unit"]
        state = release_ctx.run(release_ctx.on.update_status(), state)

    assert state.unit_status == testing.ActiveStatus(STATUS_RUNNING)
    units_dir = Path(machine_paths.PATHS.units_dir)
    released_unit = (units_dir / unit_name).read_text()
    job_folder = Path(machine_paths.PATHS.jobs_dir) / job_id
    released_env = (job_folder / "env").read_text()
    assert GIT_PASSWORD in released_env
    assert machine.running_units() == {unit_name}
    requests = {r.endpoint: dict(state.get_relation(r.id).local_app_data) for r in state.relations}
    assert json.loads(requests["mlops-dataset"]["access"]) == "write"
    assert json.loads(requests["mlops-tracking"]["experiment"]) == APP
    secrets_before = {secret.id: secret.latest_content for secret in state.secrets}
    before = len(machine.calls("systemctl"))

    # Juju refreshes the charm on the machine: upgrade-charm, config-changed, then the usual.
    for event in (ctx.on.upgrade_charm(), ctx.on.config_changed(), ctx.on.update_status()):
        state = ctx.run(event, state)

    assert ctx.charm_spec.charm_type is charm.TrainingMachineCharm
    assert state.unit_status == testing.ActiveStatus(STATUS_RUNNING)
    # The run goes on: its unit as the release wrote it, neither stopped nor restarted.
    assert (units_dir / unit_name).read_text() == released_unit
    assert (job_folder / "env").read_text() == released_env
    assert machine.systemd_changes(before) == []
    assert machine.running_units() == {unit_name}
    # The providers' secrets and what the charm asked them for are as they were.
    assert {s.id: s.latest_content for s in state.secrets} == secrets_before
    assert {
        r.endpoint: dict(state.get_relation(r.id).local_app_data) for r in state.relations
    } == requests
    # This charm lists the release's run as running.
    (listed,) = listed_jobs(ctx, state)
    assert listed["id"] == job_id and listed["state"] == "running", listed

    # The run ends: systemd runs the unit the release wrote, whose ExecStopPost is the script
    # this charm's upgrade put in place, which dispatches job-ended to this charm.
    unit = JobUnit(
        paths=machine_paths.PATHS.jobs,
        job_id=job_id,
        kind="train",
        juju_unit=UNIT,
        command=[],
        settings={},
    )
    assert unit.name == unit_name
    script = Path(machine_paths.PATHS.jobs.job_ended)
    assert script.read_text() == Path(systemd_jobs.JOB_ENDED_SCRIPT).read_text()
    Path(machine_paths.PATHS.mlops_workload).chmod(0o755)  # the venv's stub prints {}
    run_exec_start(unit)
    stopped = run_exec_stop_post(
        unit, machine, EXIT_CODE="exited", EXIT_STATUS="0", SERVICE_RESULT="success"
    )
    assert stopped.returncode == 0, stopped.stderr
    assert dispatched(machine) == [[UNIT, "JUJU_DISPATCH_PATH=hooks/job-ended ./dispatch"]]
    (machine.state / "units" / unit_name).unlink()  # systemd is done with the unit
    state = ctx.run(job_ended(), state)

    assert state.unit_status == testing.ActiveStatus(STATUS_IDLE)
    assert not (units_dir / unit_name).exists()  # this charm removed the release's unit
    (listed,) = listed_jobs(ctx, state)
    assert listed["id"] == job_id and listed["state"] == "succeeded", listed
    assert not list((Path(machine_paths.PATHS.jobs_dir) / "unreported").iterdir())

    # New since the release: a registry that now serves HTTPS gives its CA to this charm's runs.
    relation = state.get_relation(dataset.id)
    served = {**relation.remote_app_data, "ca": json.dumps(REGISTRY_CA)}
    relation = dataclasses.replace(relation, remote_app_data=served)
    others = {r for r in state.relations if r.id != relation.id}
    state = dataclasses.replace(state, relations={*others, relation})
    state = ctx.run(ctx.on.relation_changed(relation, remote_unit=0), state)
    ctx.run(ctx.on.action("train", params={"spec": "text-tfidf-logreg"}), state)
    assert ctx.action_results is not None and ctx.action_results["state"] == "running"
    folder = Path(machine_paths.PATHS.jobs_dir) / ctx.action_results["job"]
    assert (folder / "registry-ca.pem").read_text() == REGISTRY_CA
    text = (units_dir / ctx.action_results["unit"]).read_text()
    assert f'Environment="GIT_SSL_CAINFO={folder}/registry-ca.pem"' in text
