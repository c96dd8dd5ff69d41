"""Fixtures of the training machine charm's tests: a machine under a temporary root.

charmhelpers' host helpers import only on Ubuntu: the run re-executes itself under an Ubuntu
24.04 os-release in a private mount namespace (``tests/ubuntu_namespace.py``). The machine's
paths (``machine_paths.PATHS``) point into a temporary folder. The programs that cannot run
here (no systemd, no GPU, no apt on this Debian's behalf, no Juju) are fakes on ``PATH`` that
answer as the real ones do and log their calls: ``systemctl`` keeps unit states in a folder,
``nvidia-smi`` prints the GPUs a test gives it, ``journalctl`` prints a unit's log.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import ubuntu_namespace
from tests.fake_machine import FakeMachine, install_fake_tools, log_apt_installs

ubuntu_namespace.reexec_under_ubuntu()
if not ubuntu_namespace.inside():  # pragma: no cover
    pytest.skip("charmhelpers needs an Ubuntu os-release: run as root", allow_module_level=True)

import yaml  # noqa: E402
from ops import testing  # noqa: E402

import charm  # noqa: E402
import machine_paths  # noqa: E402
from mlops_charms import machine as machine_install  # noqa: E402

APP = "training"
UNIT = "training/0"


class Machine(FakeMachine):
    """The fake machine, whose GPUs a test chooses."""

    def give_gpus(self, *names: str) -> None:
        lines = [f"{i}, {name}, 81559, 570.86.15" for i, name in enumerate(names)]
        (self.state / "gpus.csv").write_text("".join(line + "\n" for line in lines))


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Machine]:
    state, bin_dir = install_fake_tools(tmp_path, monkeypatch)
    root = tmp_path / "machine"
    venv = root / "opt/mlops-training/venv"
    (venv / "bin").mkdir(parents=True)
    # The workload's venv, as installed (the installer's stamp matches the carried package).
    (venv / "bin" / "mlops-workload").write_text("#!/bin/sh\necho '{}'\n")
    paths = machine_paths.MachinePaths(
        units_dir=str(root / "run/systemd/system"),
        jobs_dir=str(root / "var/lib/mlops-training/jobs"),
        venv=str(venv),
        scripts_dir=str(root / "usr/local/lib/mlops-training"),
        python=sys.executable,
        juju_exec=str(bin_dir / "juju-exec"),
        user="root",
    )
    Path(paths.units_dir).mkdir(parents=True)
    monkeypatch.setattr(machine_paths, "PATHS", paths)
    monkeypatch.setattr(charm.installer, "ensure_workload", lambda *_args: False)
    log_apt_installs(monkeypatch, state, charm.installer, machine_install)
    yield Machine(root, state)


@pytest.fixture(scope="session")
def charm_spec() -> dict:
    meta = yaml.safe_load((Path(__file__).parents[2] / "charmcraft.yaml").read_text())
    return {"meta": meta, "config": meta.pop("config"), "actions": meta.pop("actions")}


@pytest.fixture
def ctx(charm_spec: dict, machine: Machine) -> Iterator[testing.Context]:
    with testing.Context(charm.TrainingMachineCharm, app_name=APP, **charm_spec) as context:
        yield context
