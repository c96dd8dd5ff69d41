"""Fixtures of the data-versioning machine charm's tests: a machine under a temporary root.

charmhelpers' host helpers import only on Ubuntu: the run re-executes itself under an Ubuntu
24.04 os-release in a private mount namespace (``tests/ubuntu_namespace.py``). The machine's
paths (``registry_units.PATHS``) point into a temporary folder, the registry's venv is there
already (the installer is a spy), ``systemctl`` and ``apt-get`` are fakes that log their calls
(``tests/fake_machine.py``), and the short commands the charm runs as the service user (the
bootstrap, ``mlops-workload dataset ...``) answer as the real ones do, without running.
"""

from __future__ import annotations

import json
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
import registry_units  # noqa: E402
from mlops_charms import machine as machine_install  # noqa: E402
from mlops_charms import registry_server  # noqa: E402
from mlops_charms.workload_exec import WorkloadError  # noqa: E402
from tests.registry_relations import COMMIT  # noqa: E402

APP = "data-versioning"
MODEL = "mlops"
WRITER_PASSWORD = "writer-password-0123456789abcdef"
WRITER_KEYS = {"access-key": "mlopsWriterKey0123", "secret-key": "writer-secret-key-0123456789"}

StateFactory = Callable[..., testing.State]


class FakeCommands:
    """The short commands the charm runs as the service user, answered as the real ones do.

    The bootstrap prints the commit it leaves; ``mlops-workload dataset <command>`` prints the
    JSON of ``results[command]``, or fails as it does (``error: why``) for ``failures``.
    """

    def __init__(self):
        self.calls: list[list[str]] = []
        self.results: dict[str, dict] = {"list-versions": {"versions": []}}
        self.failures: dict[str, str] = {}

    def __call__(self, user, command, *, what, environment, working_dir, timeout) -> str:
        self.calls.append(list(command))
        if what in self.failures:
            raise WorkloadError(f"{what} failed: {self.failures[what]}")
        if what == "bootstrap":
            return f"{COMMIT}\n"
        return json.dumps(self.results.get(what, {})) + "\n"


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeMachine:
    fake = fake_machine(tmp_path, monkeypatch, machine_install)
    paths = registry_units.MachinePaths(
        units_dir=str(fake.root / "etc/systemd/system"),
        venv=str(fake.root / "opt/mlops-registry/venv"),
        state_dir=str(fake.root / "var/lib/mlops-registry-charm"),
        user="root",
        job_units_dir=str(fake.root / "run/systemd/system"),
        job_scripts_dir=str(fake.root / "usr/local/lib/mlops-jobs"),
    )
    for folder in (paths.units_dir, paths.job_units_dir):
        Path(folder).mkdir(parents=True)
    # The registry's venv, as installed.
    installed(paths.binaries.mlops_workload)
    machine_install.Stamps(Path(paths.state_dir)).record(
        "apt", " ".join(registry_units.APT_PACKAGES)
    )
    monkeypatch.setattr(registry_units, "PATHS", paths)
    monkeypatch.setattr(charm, "PATHS", paths)
    return fake


@pytest.fixture
def installs(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Every install of the workload package the charm asked for (installed already)."""
    calls: list[dict] = []

    def spy(stamps, venv, source, **options) -> bool:
        calls.append({"venv": str(venv.path), "source": str(source), **options})
        return False

    monkeypatch.setattr(machine_install, "ensure_workload", spy)
    return calls


@pytest.fixture
def commands(monkeypatch: pytest.MonkeyPatch) -> FakeCommands:
    fake = FakeCommands()
    monkeypatch.setattr(registry_units, "run_as", fake)
    return fake


@pytest.fixture
def ctx(
    machine: FakeMachine, installs: list[dict], commands: FakeCommands
) -> Iterator[testing.Context[charm.DataVersioningMachineCharm]]:
    """The charm with its own charmcraft.yaml, on the fake machine."""
    with testing.Context(charm.DataVersioningMachineCharm, app_name=APP) as context:
        yield context


@pytest.fixture
def storage() -> testing.Storage:
    return testing.Storage(registry_server.STORAGE)


@pytest.fixture
def data_dir(ctx, storage: testing.Storage) -> Path:
    """The unit's ``registry-data`` storage: a real folder."""
    path = storage.get_filesystem(ctx)
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def state_dir(data_dir: Path) -> str:
    """Where the charm sees the storage: on a machine, the folder itself."""
    return str(data_dir)


@pytest.fixture
def writer_secret() -> testing.Secret:
    """The registry's own user, as the leader created it."""
    return testing.Secret(
        {"username": "registry", "password": WRITER_PASSWORD, **WRITER_KEYS},
        label=registry_server.REGISTRY_SECRET,
        owner="app",
    )


@pytest.fixture
def make_state(
    storage: testing.Storage, writer_secret: testing.Secret, tmp_path: Path
) -> StateFactory:
    """A unit of data-versioning in model ``mlops``: leader, storage attached, writer secret.

    The ``wheelhouse`` resource is an empty file, as Juju gives one nobody attached.
    ``relations`` and ``secrets`` are added to the defaults; ``peer_data`` is the peer
    relation's application data; other keyword arguments go to ``testing.State``.
    """
    wheelhouse = no_wheelhouse(tmp_path)

    def make(*, relations=(), secrets=(), peer_data=None, **kwargs) -> testing.State:
        kwargs.setdefault("leader", True)
        kwargs.setdefault("storages", {storage})
        kwargs.setdefault("resources", {wheelhouse})
        peers = testing.PeerRelation(registry_server.PEERS, local_app_data=peer_data or {})
        return testing.State(
            model=testing.Model(name=MODEL),
            relations={*relations, peers},
            secrets={writer_secret, *secrets},
            **kwargs,
        )

    return make


@pytest.fixture
def come_up(ctx) -> Callable[[testing.State], testing.State]:
    """Run the event after which the substrate is ready: the unit starts."""
    return lambda state: ctx.run(ctx.on.start(), state)


@pytest.fixture
def servers_defined(machine: FakeMachine) -> Callable[[testing.State], bool]:
    """Whether any unit of the registry was written on the machine."""
    units = Path(registry_units.PATHS.units_dir)
    return lambda _state: any(units.glob(f"{registry_units.UNIT_PREFIX}*"))


@pytest.fixture
def deployed(ctx, make_state) -> Callable[..., testing.State]:
    """A registry that came up: installed, bootstrapped, its units running."""

    def deploy(**kwargs) -> testing.State:
        return ctx.run(ctx.on.start(), make_state(**kwargs))

    return deploy
