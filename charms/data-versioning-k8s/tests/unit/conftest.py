"""Fixtures building the common state of data-versioning-k8s's unit tests.

The registry container's Pebble is ops.testing's; what runs in it is faked as the real
programs behave (see registry_testing): the bootstrap and ``mlops-workload`` are ``Exec``
mocks, jobs end as the job wrapper ends them. The storage is a real folder mounted at the
charm's storage location, so files the charm pushes, and those the fakes write (job results,
pushed tags), survive from one hook to the next, as they do on a unit.
"""

from __future__ import annotations

import base64
import copy
import functools
import random
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import bcrypt
import ops
import pytest
import yaml
from ops import testing
from registry_testing import (
    MODEL,
    STATE_DIR,
    WRITER_KEYS,
    WRITER_PASSWORD,
    JobWorkload,
    bootstrap_exec,
    dataset_exec,
)
from scenario import _runtime

import charm
from mlops_charms import jobs, registry, registry_server
from mlops_charms import secrets as mlops_secrets
from tests.charm_testing import record_service_changes

CHARM_ROOT = Path(charm.__file__).parents[1]


def pytest_configure(config: pytest.Config) -> None:
    # object-storage-charmlib 1.0.0 calls ops' deprecated JujuVersion.from_environ().
    config.addinivalue_line("filterwarnings", "ignore:JujuVersion.from_environ:DeprecationWarning")


@pytest.fixture(scope="session")
def charm_spec() -> dict[str, Any]:
    """charmcraft.yaml as ops.testing reads it, parsed once (with libyaml) for the session."""
    spec = yaml.load((CHARM_ROOT / "charmcraft.yaml").read_text(), Loader=yaml.CSafeLoader)
    return {"config": spec.pop("config"), "actions": spec.pop("actions"), "meta": spec}


@pytest.fixture(autouse=True, scope="session")
def _fast_yaml_and_bcrypt() -> Iterator[None]:
    """The same files and hashes, computed faster: the suite runs in seconds.

    Scenario writes the charm's metadata with pure-Python YAML on every run (two thirds of a
    run): libyaml writes the same. bcrypt of an unchanged password and salt gives the same
    hash: computed once per session.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_runtime, "yaml", _LibYaml(), raising=False)
        patch.setattr(bcrypt, "hashpw", functools.cache(bcrypt.hashpw))
        yield


class _LibYaml:
    def __getattr__(self, name: str):
        return getattr(yaml, name)

    @staticmethod
    def safe_dump(data, stream=None, **options):
        return yaml.dump(data, stream, Dumper=yaml.CSafeDumper, **options)


@pytest.fixture
def ctx(charm_spec) -> Iterator[testing.Context[charm.DataVersioningCharm]]:
    """The charm with its own charmcraft.yaml."""
    spec = copy.deepcopy(charm_spec)
    with testing.Context(charm.DataVersioningCharm, **spec) as context:
        yield context


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """The unit's ``registry-data`` storage, as the charm container sees it."""
    path = tmp_path / "registry-data"
    path.mkdir()
    return path


@pytest.fixture(autouse=True)
def workload(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> JobWorkload:
    """The jobs' processes, and the clock an action waiting for one reads (never real time)."""
    fake = JobWorkload(data_dir)
    monkeypatch.setattr(jobs, "time", fake)
    monkeypatch.setattr(jobs, "datetime", types.SimpleNamespace(now=fake.wall_clock))
    start = jobs.JobRunner.start

    def spy(runner: jobs.JobRunner, spec: jobs.JobSpec) -> jobs.Job:
        job = start(runner, spec)
        fake.started(runner.workload, job.id)
        return job

    monkeypatch.setattr(jobs.JobRunner, "start", spy)
    return fake


@pytest.fixture(autouse=True)
def passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    """Passwords and keys drawn from a seeded generator: each test gets the same ones.

    Distinct within a test as real ones are; the same across tests, so their bcrypt hashes
    are computed once (see ``_fast_yaml_and_bcrypt``).
    """
    generator = random.Random(20250501)  # noqa: S311 - seeded on purpose, for tests

    class SeededSecrets:
        @staticmethod
        def token_urlsafe(nbytes: int) -> str:
            return base64.urlsafe_b64encode(generator.randbytes(nbytes)).rstrip(b"=").decode()

    monkeypatch.setattr(mlops_secrets, "secrets", SeededSecrets)


@pytest.fixture
def service_changes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every replan, restart, start and stop of the charm, in order."""
    return record_service_changes(monkeypatch)


@pytest.fixture
def bcrypt_runs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of users each rendering of the (slow) bcrypt file hashed."""
    runs: list[int] = []
    render = registry.htpasswd

    def spy(users):
        runs.append(len(users))
        return render(users)

    monkeypatch.setattr(registry, "htpasswd", spy)
    return runs


@pytest.fixture
def pushes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every path the charm writes in the container, in order."""
    paths: list[str] = []
    push = ops.Container.push

    def spy(container, path, *args, **kwargs):
        paths.append(str(path))
        return push(container, path, *args, **kwargs)

    monkeypatch.setattr(ops.Container, "push", spy)
    return paths


ContainerFactory = Callable[..., testing.Container]


@pytest.fixture
def make_container(data_dir: Path) -> ContainerFactory:
    """The registry container, Pebble up; ``execs`` replace the default ones by prefix."""

    def make(*execs: testing.Exec, **kwargs) -> testing.Container:
        defaults = {
            tuple(e.command_prefix): e
            for e in (bootstrap_exec(), dataset_exec("list-versions", {"versions": []}))
        }
        defaults.update({tuple(e.command_prefix): e for e in execs})
        kwargs.setdefault("can_connect", True)
        return testing.Container(
            charm.CONTAINER,
            mounts={registry_server.STORAGE: testing.Mount(location=STATE_DIR, source=data_dir)},
            execs=set(defaults.values()),
            **kwargs,
        )

    return make


@pytest.fixture
def writer_secret() -> testing.Secret:
    """The registry's own user, as the leader created it."""
    return testing.Secret(
        {"username": "registry", "password": WRITER_PASSWORD, **WRITER_KEYS},
        label=registry_server.REGISTRY_SECRET,
        owner="app",
    )


@pytest.fixture
def peers() -> testing.PeerRelation:
    return testing.PeerRelation(registry_server.PEERS)


StateFactory = Callable[..., testing.State]


@pytest.fixture
def make_state(
    make_container: ContainerFactory, writer_secret: testing.Secret, peers: testing.PeerRelation
) -> StateFactory:
    """A unit of data-versioning-k8s in model ``mlops``: leader, Pebble up, writer secret made.

    ``relations`` and ``secrets`` are added to the defaults (a peer relation given replaces
    the default one); ``execs`` go to the container; other keyword arguments to State.
    """

    def make(
        *, relations=(), secrets=(), execs=(), container=None, peer_data=None, **kwargs
    ) -> testing.State:
        kwargs.setdefault("leader", True)
        kwargs.setdefault("storages", {testing.Storage(registry_server.STORAGE)})
        default_peers = testing.PeerRelation(
            registry_server.PEERS, id=peers.id, local_app_data=peer_data or {}
        )
        given_peers = any(r.endpoint == registry_server.PEERS for r in relations)
        return testing.State(
            model=testing.Model(name=MODEL),
            containers={container or make_container(*execs)},
            relations={*relations, *(() if given_peers else (default_peers,))},
            secrets={writer_secret, *secrets},
            **kwargs,
        )

    return make


@pytest.fixture
def deployed(ctx, make_state) -> Callable[..., testing.State]:
    """A registry that came up: pebble-ready ran, bootstrapped, services running."""

    def deploy(**kwargs) -> testing.State:
        state = make_state(**kwargs)
        out = ctx.run(ctx.on.pebble_ready(state.get_container(charm.CONTAINER)), state)
        ctx.exec_history.clear()
        return out

    return deploy


@pytest.fixture
def come_up(ctx) -> Callable[[testing.State], testing.State]:
    """Run the event after which the substrate is ready: Pebble is up in the container."""

    def run(state: testing.State) -> testing.State:
        return ctx.run(ctx.on.pebble_ready(state.get_container(charm.CONTAINER)), state)

    return run


@pytest.fixture
def servers_defined() -> Callable[[testing.State], bool]:
    """Whether the registry container has any service in its plan."""
    return lambda state: bool(state.get_container(charm.CONTAINER).plan.services)


@pytest.fixture
def state_dir() -> str:
    """Where the charm sees the storage: its mount in the registry container."""
    return STATE_DIR
