"""The approach's loop in the machine charm: the shared suite (``loop_cases``) on systemd jobs.

A run started is a job unit rendered and started on the fake machine (see conftest); its end
is what the unit's ``ExecStopPost`` records in the job's folder, and the hook it dispatches
(``job-ended``) reconciles as ``update-status`` does.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import Machine
from ops import testing

import machine_paths
from mlops_charms import systemd_jobs
from mlops_charms.systemd_jobs import JobUnit

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "training-k8s/tests/unit"))
from loop_cases import (
    LoopCases,
    Started,
    approach_relation,
    kinds,
    options,
    related,
)


@dataclasses.dataclass
class MachineUnit:
    """A leader of the training machine charm whose runs are systemd units of the machine."""

    ctx: testing.Context
    machine: Machine
    units: list[JobUnit] = dataclasses.field(default_factory=list)

    def state(
        self, relations: set[testing.Relation], secrets: set[testing.Secret], *, leader: bool
    ) -> testing.State:
        return testing.State(leader=leader, relations=relations, secrets=secrets)

    def started(self) -> list[Started]:
        return [
            Started(
                job=unit.job_id,
                kind=unit.kind,
                options=options(list(unit.command[3:])),
                settings=dict(unit.settings),
            )
            for unit in self.units
        ]

    def end(
        self, state: testing.State, job: str, result: dict[str, Any], *, succeeded: bool = True
    ) -> testing.State:
        folder = Path(machine_paths.PATHS.jobs_dir) / job
        (folder / "stdout").write_text(json.dumps(result) + "\n" if succeeded else "")
        (folder / "stderr").write_text("" if succeeded else "error: no labels in v2\n")
        (folder.parent / "unreported" / job).touch()
        (folder / "exit").write_text(f"{0 if succeeded else 1} 2026-11-30T16:00:00Z\n")
        (self.machine.state / "units" / machine_paths.unit_name(job)).unlink()  # it stopped
        return self.ctx.run(self.ctx.on.update_status(), state)  # as job-ended does

    def restarted(self, state: testing.State) -> testing.State:
        return self.ctx.run(self.ctx.on.start(), state)


@pytest.fixture
def unit(ctx, machine: Machine, monkeypatch: pytest.MonkeyPatch) -> MachineUnit:
    recorded = MachineUnit(ctx, machine)
    start = systemd_jobs.start_unit

    def record(job: JobUnit) -> None:
        recorded.units.append(job)
        start(job)

    monkeypatch.setattr(systemd_jobs, "start_unit", record)
    return recorded


class TestApproachLoop(LoopCases):
    """The shared suite, on systemd jobs."""


def test_the_loop_state_is_beside_the_job_records(unit: MachineUnit):
    unit.ctx.run(unit.ctx.on.config_changed(), related(unit, approach_relation()))
    saved = json.loads((Path(machine_paths.PATHS.jobs_dir) / "loop.json").read_text())
    assert saved["applied_revision"] == 3
    assert [(run["kind"], run["version"]) for run in saved["runs"]] == [("train", "v2")]


def test_with_no_free_gpu_the_loop_waits_and_starts_once_one_is_free(unit: MachineUnit):
    unit.machine.give_gpus("NVIDIA A100")
    state = related(unit, approach_relation("data-centric", 3, relabel_top_k=0))
    unit.ctx.run(unit.ctx.on.action("train", params={"spec": "image-svc"}), state)
    (manual,) = unit.started()
    state = unit.ctx.run(unit.ctx.on.config_changed(), state)
    assert len(unit.started()) == 1
    assert state.unit_status == testing.WaitingStatus(
        "data-centric loop: cannot start train on v2 yet: 1 GPU(s) wanted, fewer are free:"
        " wait for a job (list-jobs)"
    )
    state = unit.end(state, manual.job, {"run_id": "r"})
    assert kinds(unit)[-1] == ("train", "v2")
    assert list(unit.units[-1].limits.gpus or ()) == [0]
