"""Fixtures of the labelling machine charm's tests: a machine under a temporary root.

charmhelpers' host helpers import only on Ubuntu: the run re-executes itself under an Ubuntu
24.04 os-release in a private mount namespace (``tests/ubuntu_namespace.py``). The machine's
paths (``label_studio_unit.PATHS``) point into a temporary folder, Label Studio's venv is there
already (the installer's stamp matches), and ``systemctl``, ``journalctl``, ``apt-get`` are fakes
that log their calls (``tests/fake_machine.py``). Only Label Studio's health probe is replaced
(``mlops_charms.label_studio.is_healthy``), as in labelling-k8s's tests.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import ubuntu_namespace
from tests.fake_machine import FakeMachine, fake_machine, installed, no_wheelhouse

ubuntu_namespace.reexec_under_ubuntu()
if not ubuntu_namespace.inside():  # pragma: no cover
    pytest.skip("charmhelpers needs an Ubuntu os-release: run as root", allow_module_level=True)

from ops import testing  # noqa: E402

import charm  # noqa: E402
import label_studio_unit  # noqa: E402
from mlops_charms import label_studio  # noqa: E402
from mlops_charms import machine as machine_install  # noqa: E402
from tests.labelling_testing import MODEL, server_secret  # noqa: E402

APP = "labelling"
UNIT = "labelling/0"
ADDRESS = "192.0.2.0"  # ops.testing's default address of a binding

StateFactory = Callable[..., testing.State]


@pytest.fixture(autouse=True)
def healthy(monkeypatch: pytest.MonkeyPatch) -> dict[str, bool]:
    """Whether Label Studio answers /health; tests flip ``healthy["up"]``."""
    state = {"up": True}
    monkeypatch.setattr(label_studio, "is_healthy", lambda *_a, **_k: state["up"])
    return state


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeMachine:
    fake = fake_machine(tmp_path, monkeypatch, machine_install)
    paths = label_studio_unit.MachinePaths(
        units_dir=str(fake.root / "etc/systemd/system"),
        venv=str(fake.root / "opt/label-studio"),
        workload_venv=str(fake.root / "opt/mlops"),
        state_dir=str(fake.root / "var/lib/labelling-charm"),
        python=sys.executable,
        user="root",
        jobs_units_dir=str(fake.root / "run/systemd/system"),
        jobs_scripts_dir=str(fake.root / "usr/local/lib/mlops-jobs"),
    )
    for folder in (paths.units_dir, paths.jobs_units_dir):
        Path(folder).mkdir(parents=True)
    # Label Studio's venv, as installed: the installer's stamp matches what the charm asks for.
    installed(paths.binaries.uwsgi)
    # Its Python, which the leader migrates a PostgreSQL database with: a stand-in that succeeds.
    Path(paths.binaries.app_dir).mkdir(parents=True)
    python = Path(paths.binaries.label_studio).with_name("python")
    python.write_text("#!/bin/sh\nexit 0\n")
    python.chmod(0o755)
    stamps = machine_install.Stamps(Path(paths.state_dir))
    stamps.record("apt", " ".join(label_studio_unit.APT_PACKAGES))
    stamps.record("label-studio-venv", " ".join([label_studio_unit.VENV_FINGERPRINT, ""]))
    monkeypatch.setattr(label_studio_unit, "PATHS", paths)
    monkeypatch.setattr(charm, "PATHS", paths)
    # The workload package's install is machine.ensure_workload's (tested with it); here it is
    # there already.
    monkeypatch.setattr(charm.machine, "ensure_workload", lambda *_a, **_k: False)
    return fake


@pytest.fixture
def ctx(machine: FakeMachine) -> Iterator[testing.Context[charm.LabellingMachineCharm]]:
    """The charm with its own charmcraft.yaml, on the fake machine."""
    with testing.Context(charm.LabellingMachineCharm, app_name=APP) as context:
        yield context


@pytest.fixture
def make_state(tmp_path: Path) -> StateFactory:
    """A unit of labelling in model ``mlops``: leader, storage attached, admin secret created.

    The ``wheelhouse`` resource is an empty file, as Juju gives one nobody attached.
    """
    wheelhouse = no_wheelhouse(tmp_path)

    def make(*, relations=(), secrets=(), admin_secret_exists: bool = True, **kwargs):
        kwargs.setdefault("leader", True)
        kwargs.setdefault("storages", {testing.Storage("labelling-data")})
        kwargs.setdefault("resources", {wheelhouse})
        return testing.State(
            model=testing.Model(name=MODEL),
            relations=set(relations),
            secrets={*secrets, *((server_secret(),) if admin_secret_exists else ())},
            **kwargs,
        )

    return make


@pytest.fixture
def url() -> str:
    """Where the charm says Label Studio is reached: the unit's address."""
    return f"http://{ADDRESS}:8080"


@pytest.fixture
def registry_charm() -> str:
    """The registry's charm, which action failures name."""
    return "data-versioning"


@pytest.fixture
def jobs_started(machine: FakeMachine) -> Callable[[], int]:
    """How many labelling jobs the charm asked systemd to start."""
    return lambda: sum(
        1 for call in machine.calls("systemctl") if call[-1].startswith(charm.JOB_UNIT_PREFIX)
    )
