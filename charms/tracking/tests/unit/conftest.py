"""Fixtures of the tracking machine charm's tests: a machine under a temporary root.

charmhelpers' host helpers import only on Ubuntu: the run re-executes itself under an Ubuntu
24.04 os-release in a private mount namespace (``tests/ubuntu_namespace.py``). The machine's
paths (``mlflow_unit.PATHS``) point into a temporary folder, MLflow's venv is there already
(the installer's stamp matches), and ``systemctl``, ``apt-get`` are fakes that log their calls
(``tests/fake_machine.py``). The MLflow server is the in-memory ``FakeMLflow`` behind the
charm's real ``MLflowAPI``, as in tracking-k8s's tests.
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
import mlflow_unit  # noqa: E402
from mlops_charms import machine as machine_install  # noqa: E402
from mlops_charms import mlflow as mlflow_core  # noqa: E402
from tests.tracking_testing import MODEL, FakeMLflow, server_secret  # noqa: E402

APP = "tracking"
UNIT = "tracking/0"
ADDRESS = "192.0.2.0"  # ops.testing's default address of a binding
INTERNAL_URL = f"http://{ADDRESS}:5000"

StateFactory = Callable[..., testing.State]


@pytest.fixture(autouse=True)
def mlflow(monkeypatch: pytest.MonkeyPatch) -> FakeMLflow:
    """The MLflow server every ``MLflowAPI`` the charm makes talks to."""
    server = FakeMLflow()
    monkeypatch.setattr(mlflow_core, "JSONClient", server.client)
    return server


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeMachine:
    fake = fake_machine(tmp_path, monkeypatch, machine_install)
    paths = mlflow_unit.MachinePaths(
        units_dir=str(fake.root / "etc/systemd/system"),
        venv=str(fake.root / "opt/mlflow/venv"),
        state_dir=str(fake.root / "var/lib/mlflow-charm"),
        python=sys.executable,
        user="root",
        workload_venv=str(fake.root / "opt/mlops"),
        jobs_units_dir=str(fake.root / "run/systemd/system"),
        jobs_scripts_dir=str(fake.root / "usr/local/lib/mlops-jobs"),
    )
    for folder in (paths.units_dir, paths.jobs_units_dir):
        Path(folder).mkdir(parents=True)
    # MLflow's venv, as installed: the installer's stamp matches what the charm asks for.
    installed(paths.mlflow)
    # The workload CLI's venv: its install is machine.ensure_workload's (tested with it); here
    # it is there already.
    installed(paths.mlops_workload)
    monkeypatch.setattr(charm.machine, "ensure_workload", lambda *_a, **_k: False)
    stamps = machine_install.Stamps(Path(paths.state_dir))
    stamps.record("apt", " ".join(mlflow_unit.APT_PACKAGES))
    stamps.record("venv", " ".join([*mlflow_unit.REQUIREMENTS, ""]))
    monkeypatch.setattr(mlflow_unit, "PATHS", paths)
    monkeypatch.setattr(charm, "PATHS", paths)
    return fake


@pytest.fixture
def ctx(machine: FakeMachine) -> Iterator[testing.Context[charm.TrackingMachineCharm]]:
    """The charm with its own charmcraft.yaml, on the fake machine."""
    with testing.Context(charm.TrackingMachineCharm, app_name=APP) as context:
        yield context


@pytest.fixture
def admin_secret() -> testing.Secret:
    return server_secret()


@pytest.fixture
def make_state(admin_secret: testing.Secret, tmp_path: Path) -> StateFactory:
    """A unit of tracking in model ``mlops``: leader, storage attached, admin secret created.

    The ``wheelhouse`` resource is an empty file, as Juju gives one nobody attached.

    Keyword arguments go to ``testing.State``; ``relations`` and ``secrets`` are added to the
    defaults, ``admin_secret_exists=False`` leaves the admin secret out.
    """
    wheelhouse = no_wheelhouse(tmp_path)

    def make(*, relations=(), secrets=(), admin_secret_exists: bool = True, **kwargs):
        kwargs.setdefault("leader", True)
        kwargs.setdefault("storages", {testing.Storage("mlflow-data")})
        kwargs.setdefault("resources", {wheelhouse})
        return testing.State(
            model=testing.Model(name=MODEL),
            relations=set(relations),
            secrets={*secrets, *((admin_secret,) if admin_secret_exists else ())},
            **kwargs,
        )

    return make
