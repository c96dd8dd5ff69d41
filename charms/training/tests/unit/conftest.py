"""Fixtures of the training machine charm's tests: a machine under a temporary root.

charmhelpers' host helpers import only on Ubuntu: the run re-executes itself under an Ubuntu
24.04 os-release in a private mount namespace (``tests/ubuntu_namespace.py``). The machine's
paths (``systemd_jobs.PATHS``) point into a temporary folder. The programs that cannot run
here (no systemd, no GPU, no apt on this Debian's behalf, no Juju) are fakes on ``PATH`` that
answer as the real ones do and log their calls: ``systemctl`` keeps unit states in a folder,
``nvidia-smi`` prints the GPUs a test gives it, ``journalctl`` prints a unit's log.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import ubuntu_namespace

ubuntu_namespace.reexec_under_ubuntu()
if not ubuntu_namespace.inside():  # pragma: no cover
    pytest.skip("charmhelpers needs an Ubuntu os-release: run as root", allow_module_level=True)

import yaml  # noqa: E402
from ops import testing  # noqa: E402

import charm  # noqa: E402
import systemd_jobs  # noqa: E402

FAKE_TOOL = r"""#!{python}
import json, os, sys
from pathlib import Path
tool = Path(sys.argv[0]).name
state = Path({state!r})
with (state / "calls.jsonl").open("a") as log:
    log.write(json.dumps([tool, *sys.argv[1:]]) + "\n")
args = sys.argv[1:]
if tool == "systemctl":
    units = state / "units"
    units.mkdir(exist_ok=True)
    words = [a for a in args if not a.startswith("--")]
    if words[0] == "is-active":
        active = (units / words[1]).exists()
        print("active" if active else "inactive")
        sys.exit(0 if active else 3)
    if words[0] == "start":
        (units / words[1]).touch()
    if words[0] == "stop":
        (units / words[1]).unlink(missing_ok=True)
    sys.exit(0)
if tool == "nvidia-smi":
    gpus = state / "gpus.csv"
    if not gpus.exists():
        print("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.")
        sys.exit(9)
    print(gpus.read_text(), end="")
    sys.exit(0)
if tool == "journalctl":
    unit = args[args.index("--unit") + 1]
    log = state / "journal" / unit
    print(log.read_text() if log.exists() else "", end="")
    sys.exit(0)
sys.exit(0)  # apt-get, ubuntu-drivers, useradd: the call is logged
"""


def _log_call(state: Path, call: list[str]) -> None:
    with (state / "calls.jsonl").open("a") as log:
        log.write(json.dumps(call) + "\n")


APP = "training"
UNIT = "training/0"


@dataclass
class Machine:
    """The fake machine: its root folder and the fake tools' state."""

    root: Path
    state: Path

    def calls(self, tool: str) -> list[list[str]]:
        lines = (self.state / "calls.jsonl").read_text().splitlines() if self.calls_file else []
        return [call[1:] for call in map(json.loads, lines) if call[0] == tool]

    @property
    def calls_file(self) -> bool:
        return (self.state / "calls.jsonl").exists()

    def give_gpus(self, *names: str) -> None:
        lines = [f"{i}, {name}, 81559, 570.86.15" for i, name in enumerate(names)]
        (self.state / "gpus.csv").write_text("".join(line + "\n" for line in lines))

    def running_units(self) -> set[str]:
        units = self.state / "units"
        return {path.name for path in units.iterdir()} if units.is_dir() else set()


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Machine]:
    state = tmp_path / "tools"
    bin_dir = tmp_path / "bin"
    for folder in (state, bin_dir, state / "journal"):
        folder.mkdir()
    for tool in ("systemctl", "nvidia-smi", "journalctl", "apt-get", "ubuntu-drivers"):
        script = bin_dir / tool
        script.write_text(FAKE_TOOL.format(python=sys.executable, state=str(state)))
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    root = tmp_path / "machine"
    venv = root / "opt/mlops-training/venv"
    (venv / "bin").mkdir(parents=True)
    # The workload's venv, as installed (the installer's stamp matches the carried package).
    (venv / "bin" / "mlops-workload").write_text("#!/bin/sh\necho '{}'\n")
    paths = systemd_jobs.MachinePaths(
        units_dir=str(root / "run/systemd/system"),
        jobs_dir=str(root / "var/lib/mlops-training/jobs"),
        venv=str(venv),
        scripts_dir=str(root / "usr/local/lib/mlops-training"),
        python=sys.executable,
        juju_exec=str(bin_dir / "juju-exec"),
        user="root",
    )
    Path(paths.units_dir).mkdir(parents=True)
    monkeypatch.setattr(systemd_jobs, "PATHS", paths)
    monkeypatch.setattr(charm.installer, "ensure_workload", lambda *_args: False)
    # charmhelpers runs apt-get with /etc/environment's PATH, not ours: it would reach the
    # real apt-get of this machine. Its calls are logged instead, as the fake tools' are.
    monkeypatch.setattr(
        charm.installer,
        "apt_install",
        lambda packages, fatal=False: _log_call(state, ["apt-get", "install", *packages]),
    )
    yield Machine(root, state)


@pytest.fixture(scope="session")
def charm_spec() -> dict:
    meta = yaml.safe_load((Path(__file__).parents[2] / "charmcraft.yaml").read_text())
    return {"meta": meta, "config": meta.pop("config"), "actions": meta.pop("actions")}


@pytest.fixture
def ctx(charm_spec: dict, machine: Machine) -> Iterator[testing.Context]:
    with testing.Context(charm.TrainingMachineCharm, app_name=APP, **charm_spec) as context:
        yield context
