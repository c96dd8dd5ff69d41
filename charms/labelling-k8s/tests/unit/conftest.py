"""Fixtures building the common state of labelling-k8s's unit tests.

Only the health probe is replaced (``mlops_charms.label_studio.is_healthy``); labelling jobs
run their real wrapper with a fake ``mlops-workload`` (``workload_jobs``). The storage is a real
folder mounted at the charm's storage location, so what the charm and its jobs write persists
between hooks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from ops import testing
from workload_jobs import WorkloadJobs

import charm
from mlops_charms import label_studio
from tests.charm_testing import record_service_changes
from tests.labelling_testing import DATA_DIR, MODEL, server_secret


@pytest.fixture(autouse=True)
def healthy(monkeypatch: pytest.MonkeyPatch) -> dict[str, bool]:
    """Whether Label Studio answers /health; tests flip ``healthy["up"]``."""
    state = {"up": True}
    monkeypatch.setattr(label_studio, "is_healthy", lambda *_a, **_k: state["up"])
    return state


@pytest.fixture(scope="session", autouse=True)
def fast_metadata_files() -> Iterator[None]:
    """Write the charm's metadata with libyaml's dumper, the same YAML, four times faster.

    ops.testing writes it on every run with PyYAML's pure-Python dumper: a third of a hook's
    cost here.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(yaml, "safe_dump", _c_safe_dump)
        yield


def _c_safe_dump(data, stream=None, **options):
    return yaml.dump(data, stream, Dumper=yaml.CSafeDumper, **options)


@pytest.fixture(scope="session")
def charm_spec() -> dict:
    """charmcraft.yaml, read once as ops.testing reads it: reading it costs more than a hook."""
    meta = yaml.safe_load((Path(charm.__file__).parents[1] / "charmcraft.yaml").read_text())
    return {"meta": meta, "config": meta.pop("config"), "actions": meta.pop("actions")}


@pytest.fixture
def ctx(charm_spec: dict) -> Iterator[testing.Context[charm.LabellingCharm]]:
    with testing.Context(charm.LabellingCharm, **charm_spec) as context:
        yield context


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "labelling-data"
    path.mkdir()
    return path


@pytest.fixture(autouse=True)
def workload_jobs(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> WorkloadJobs:
    """The labelling jobs: each test sets what a command prints and when its job ends."""
    fake = WorkloadJobs(DATA_DIR, data_dir, tmp_path / "fake-programs")
    fake.install(monkeypatch)
    return fake


ContainerFactory = Callable[..., testing.Container]
MIGRATE_PYTHON = "/opt/label-studio/bin/python"
MIGRATE_SUCCEEDS = frozenset({testing.Exec([MIGRATE_PYTHON], return_code=0)})


@pytest.fixture
def make_container(data_dir: Path) -> ContainerFactory:
    """The label-studio container, Pebble up, the storage mounted."""

    def make(*, can_connect: bool = True, **kwargs) -> testing.Container:
        # The leader's migration of a PostgreSQL database (Label Studio's Python) succeeds.
        kwargs.setdefault("execs", MIGRATE_SUCCEEDS)
        return testing.Container(
            "label-studio",
            can_connect=can_connect,
            mounts={"data": testing.Mount(location=DATA_DIR, source=data_dir)},
            **kwargs,
        )

    return make


StateFactory = Callable[..., testing.State]


@pytest.fixture
def make_state(make_container: ContainerFactory) -> StateFactory:
    """A unit of labelling-k8s: leader, Pebble up, admin secret created (unless told not)."""

    def make(
        *,
        relations=(),
        secrets=(),
        container: testing.Container | None = None,
        admin_secret_exists: bool = True,
        **kwargs,
    ) -> testing.State:
        kwargs.setdefault("leader", True)
        return testing.State(
            model=testing.Model(name=MODEL),
            containers={container or make_container()},
            storages={testing.Storage("labelling-data")},
            relations=set(relations),
            secrets={*secrets, *((server_secret(),) if admin_secret_exists else ())},
            **kwargs,
        )

    return make


@pytest.fixture
def pebble_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the ``ops.Container`` methods called that change running services."""
    return record_service_changes(monkeypatch)


@pytest.fixture
def url() -> str:
    """Where the charm says Label Studio is reached."""
    return "http://labelling-k8s.mlops.svc.cluster.local:8080"


@pytest.fixture
def registry_charm() -> str:
    """The registry's charm, which action failures name."""
    return "data-versioning-k8s"


@pytest.fixture
def jobs_started(workload_jobs: WorkloadJobs) -> Callable[[], int]:
    """How many labelling jobs the charm started."""
    return lambda: len(workload_jobs.runs)
