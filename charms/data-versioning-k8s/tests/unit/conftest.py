"""Fixtures building the common state of data-versioning-k8s's unit tests.

The registry container's commands (bootstrap, ``mlops-workload``) are ops.testing ``Exec``
mocks answering as the real CLI does (tests/workload/registry runs the real ones). The
storage is a real folder mounted at the charm's storage location, so pushed files survive
from one hook to the next.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from ops import testing
from registry_testing import BOOTSTRAP, MODEL, STATE_DIR, dataset_exec, versions_output

import charm


@pytest.fixture
def ctx() -> Iterator[testing.Context[charm.DataVersioningCharm]]:
    with testing.Context(charm.DataVersioningCharm) as context:
        yield context


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "registry-data"
    path.mkdir()
    return path


ContainerFactory = Callable[..., testing.Container]


@pytest.fixture
def make_container(data_dir: Path) -> ContainerFactory:
    """The registry container, Pebble up, with the given exec mocks besides the bootstrap."""

    def make(*execs: testing.Exec, can_connect: bool = True, **kwargs) -> testing.Container:
        defaults = {
            tuple(BOOTSTRAP.command_prefix): BOOTSTRAP,
            ("/bin/mlops-workload", "dataset", "list-versions"): dataset_exec(
                "list-versions", versions_output()
            ),
        }
        for given in execs:
            defaults.pop(tuple(given.command_prefix), None)
        return testing.Container(
            "registry",
            can_connect=can_connect,
            mounts={"registry-data": testing.Mount(location=STATE_DIR, source=data_dir)},
            execs={*defaults.values(), *execs},
            **kwargs,
        )

    return make


@pytest.fixture
def writer_secret() -> testing.Secret:
    return testing.Secret(
        {"username": "registry", "password": "writer-password-0123456789abcdef"},
        label=charm.REGISTRY_SECRET,
        owner="app",
    )


@pytest.fixture
def peers() -> testing.PeerRelation:
    return testing.PeerRelation(charm.PEERS)


StateFactory = Callable[..., testing.State]


@pytest.fixture
def make_state(
    make_container: ContainerFactory, writer_secret: testing.Secret, peers: testing.PeerRelation
) -> StateFactory:
    """A leader unit in model ``mlops`` with its writer secret; kwargs go to State."""

    def make(*, relations=(), secrets=(), execs=(), container=None, **kwargs) -> testing.State:
        kwargs.setdefault("leader", True)
        kwargs.setdefault("storages", {testing.Storage("registry-data")})
        return testing.State(
            model=testing.Model(name=MODEL),
            containers={container or make_container(*execs)},
            relations={
                *relations,
                *(() if any(r.endpoint == peers.endpoint for r in relations) else (peers,)),
            },
            secrets={writer_secret, *secrets},
            **kwargs,
        )

    return make
