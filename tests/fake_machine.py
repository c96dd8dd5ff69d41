"""A machine's programs that cannot run here, as fakes on ``PATH``, for machine charms' tests.

This machine has no systemd, no GPU, no apt on this Debian's behalf and no Juju: the fakes
answer as the real programs do and log their calls (``calls.jsonl`` in a state folder).
``systemctl`` keeps unit states in a folder, ``nvidia-smi`` prints the GPUs a test gives it,
``journalctl`` prints a unit's log.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from ops import testing

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
    failing = state / "systemctl-fails"  # the verbs a test makes fail, one per line
    if failing.exists() and words[0] in failing.read_text().split():
        print("Failed to", words[0], words[-1] + ": Unit is masked.", file=sys.stderr)
        sys.exit(1)
    if words[0] == "is-active":
        active = (units / words[1]).exists()
        print("active" if active else "inactive")
        sys.exit(0 if active else 3)
    if words[0] in ("start", "restart"):
        (units / words[1]).touch()
    if words[0] == "stop":
        for unit in words[1:]:
            (units / unit).unlink(missing_ok=True)
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


TOOLS = ("systemctl", "nvidia-smi", "journalctl", "apt-get", "ubuntu-drivers")


def install_fake_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """The fake programs first on ``PATH``; their state folder and their folder."""
    state = tmp_path / "tools"
    bin_dir = tmp_path / "bin"
    for folder in (state, bin_dir, state / "journal"):
        folder.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    for tool in TOOLS:
        script = bin_dir / tool
        script.write_text(FAKE_TOOL.format(python=sys.executable, state=str(state)))
        script.chmod(0o755)
    return state, bin_dir


def log_call(state: Path, call: list[str]) -> None:
    with (state / "calls.jsonl").open("a") as log:
        log.write(json.dumps(call) + "\n")


def log_apt_installs(monkeypatch: pytest.MonkeyPatch, state: Path, *modules: object) -> None:
    """``apt_install`` of each of ``modules`` logs its call, as the fake tools do.

    charmhelpers runs apt-get with /etc/environment's PATH, not ours: it would reach the real
    apt-get of this machine.
    """

    def apt_install(packages: list[str], fatal: bool = False) -> None:
        log_call(state, ["apt-get", "install", *packages])

    for module in modules:
        monkeypatch.setattr(module, "apt_install", apt_install)


def fake_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *apt_modules: object
) -> FakeMachine:
    """A machine rooted at ``tmp_path/machine``: the fake tools on ``PATH``, apt installs logged.

    ``apt_modules`` are those whose ``apt_install`` is logged (``log_apt_installs``).
    """
    state, _bin_dir = install_fake_tools(tmp_path, monkeypatch)
    log_apt_installs(monkeypatch, state, *apt_modules)
    return FakeMachine(tmp_path / "machine", state)


def installed(program: str) -> None:
    """A venv's program, as its install leaves it."""
    path = Path(program)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")


def no_wheelhouse(tmp_path: Path) -> testing.Resource:
    """The ``wheelhouse`` resource as Juju gives one nobody attached: an empty file."""
    path = tmp_path / "wheelhouse.tar.gz"
    path.touch()
    return testing.Resource(name="wheelhouse", path=path)


@dataclass
class FakeMachine:
    """The fake machine: its root folder and the fake tools' state."""

    root: Path
    state: Path

    def calls(self, tool: str) -> list[list[str]]:
        lines = (self.state / "calls.jsonl").read_text().splitlines() if self.calls_file else []
        return [call[1:] for call in map(json.loads, lines) if call[0] == tool]

    @property
    def calls_file(self) -> bool:
        return (self.state / "calls.jsonl").exists()

    def systemd_changes(self, since: int) -> list[list[str]]:
        """The systemctl calls after the first ``since`` that change something (not queries)."""
        changing = ("daemon-reload", "enable", "restart", "start", "stop")
        return [call for call in self.calls("systemctl")[since:] if call[0] in changing]

    def running_units(self) -> set[str]:
        units = self.state / "units"
        return {path.name for path in units.iterdir()} if units.is_dir() else set()
