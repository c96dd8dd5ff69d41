"""The approach's loop in training-k8s: the shared suite (``loop_cases``) on Kubernetes Jobs.

A run started is a Job in the fake cluster; its end is played as in a cluster (the pod's log,
the Job's condition), the job watcher's own code records it on the unit's storage, and the
watcher's Pebble notice runs the hook that acts on it.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from conftest import ContainerFactory, StateFactory
from loop_cases import LoopCases, Started, approach_relation, kinds, options, related
from ops import testing
from training_testing import APP, MODEL

import job_watcher
import kubernetes_jobs
from mlops_charms.jobs import NOTICE_KEY
from tests.fake_kubernetes import FakeKubernetes


@dataclasses.dataclass
class KubernetesUnit:
    """A leader of training-k8s whose runs are Jobs of the fake cluster."""

    ctx: testing.Context
    make_state: StateFactory
    make_container: ContainerFactory
    kubernetes: FakeKubernetes
    watcher: job_watcher.Watcher

    def state(
        self, relations: set[testing.Relation], secrets: set[testing.Secret], *, leader: bool
    ) -> testing.State:
        return self.make_state(related=False, relations=relations, secrets=secrets, leader=leader)

    def started(self) -> list[Started]:
        runs = []
        for job in self.kubernetes.list(MODEL, "jobs"):
            container = job["spec"]["template"]["spec"]["containers"][0]
            command = container["command"]
            runs.append(
                Started(
                    job=job["metadata"]["name"].removeprefix(f"{APP}-"),
                    kind=command[2],
                    options=options(command[3:]),
                    settings={e["name"]: e["value"] for e in container["env"] if "value" in e},
                )
            )
        return runs

    def end(
        self, state: testing.State, job: str, result: dict[str, Any], *, succeeded: bool = True
    ) -> testing.State:
        name = kubernetes_jobs.job_name(APP, job)
        log = json.dumps(result) + "\n" if succeeded else "error: no labels in v2\n"
        self.kubernetes.run_pod(MODEL, name, log, exit_code=0 if succeeded else 1)
        self.kubernetes.finish(MODEL, "jobs", name, succeeded=succeeded)
        self.watcher.sync(job_watcher.JOBS)
        notice = testing.Notice(NOTICE_KEY, last_data={"job": job})
        container = dataclasses.replace(state.get_container("training"), notices=[notice])
        state = dataclasses.replace(state, containers={container})
        return self.ctx.run(self.ctx.on.pebble_custom_notice(container, notice), state)

    def restarted(self, state: testing.State) -> testing.State:
        """The pod rescheduled: a fresh container on the same storage, then pebble-ready."""
        container = self.make_container()
        state = dataclasses.replace(state, containers={container})
        return self.ctx.run(self.ctx.on.pebble_ready(container), state)


@pytest.fixture
def unit(ctx, make_state, make_container, kubernetes, watcher) -> KubernetesUnit:
    return KubernetesUnit(ctx, make_state, make_container, kubernetes, watcher)


class TestApproachLoop(LoopCases):
    """The shared suite, on Kubernetes Jobs."""


def test_the_loop_state_is_beside_the_job_records(unit: KubernetesUnit, data_dir):
    unit.ctx.run(unit.ctx.on.config_changed(), related(unit, approach_relation()))
    saved = json.loads((data_dir / "jobs" / "loop.json").read_text())
    assert saved["applied_revision"] == 3
    assert [(run["kind"], run["version"], run["state"]) for run in saved["runs"]] == [
        ("train", "v2", "running")
    ]


def test_without_trust_the_loop_waits_and_tries_again_at_the_next_hook(unit: KubernetesUnit):
    unit.kubernetes.forbidden = True
    state = unit.ctx.run(unit.ctx.on.config_changed(), related(unit, approach_relation()))
    assert unit.started() == []
    unit.kubernetes.forbidden = False
    state = unit.ctx.run(unit.ctx.on.update_status(), state)
    assert kinds(unit) == [("train", "v2")]


def test_a_job_the_cluster_refuses_is_a_failed_loop_run_not_retried(unit: KubernetesUnit):
    unit.kubernetes.validators["jobs"] = lambda body: ["spec.template: Required value"]
    state = unit.ctx.run(unit.ctx.on.config_changed(), related(unit, approach_relation()))
    assert state.unit_status.message.endswith(
        "; data-centric loop: train on v2 failed (list-jobs)"
    )
    del unit.kubernetes.validators["jobs"]
    unit.ctx.run(unit.ctx.on.update_status(), state)
    assert unit.started() == []
