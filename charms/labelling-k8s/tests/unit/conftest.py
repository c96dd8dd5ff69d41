"""Fixtures building the common state of labelling-k8s's unit tests.

Only the health probe is replaced (``label_studio.is_healthy``); labelling commands run through
``ops.testing``'s simulated Pebble exec. The storage is a real folder mounted at the charm's
storage location, so files the charm pushes can be read back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from labelling_testing import DATA_DIR, MODEL, server_secret
from ops import testing

import charm
from tests.charm_testing import record_service_changes


@pytest.fixture(autouse=True)
def healthy(monkeypatch: pytest.MonkeyPatch) -> dict[str, bool]:
    """Whether Label Studio answers /health; tests flip ``healthy["up"]``."""
    state = {"up": True}
    monkeypatch.setattr(charm.label_studio, "is_healthy", lambda *_a, **_k: state["up"])
    return state


@pytest.fixture
def ctx() -> Iterator[testing.Context[charm.LabellingCharm]]:
    with testing.Context(charm.LabellingCharm) as context:
        yield context


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "labelling-data"
    path.mkdir()
    return path


ContainerFactory = Callable[..., testing.Container]


@pytest.fixture
def make_container(data_dir: Path) -> ContainerFactory:
    """The label-studio container, Pebble up, with the given simulated execs."""

    def make(*execs: testing.Exec, can_connect: bool = True, **kwargs) -> testing.Container:
        return testing.Container(
            "label-studio",
            can_connect=can_connect,
            mounts={"data": testing.Mount(location=DATA_DIR, source=data_dir)},
            execs=set(execs),
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
        execs=(),
        container: testing.Container | None = None,
        admin_secret_exists: bool = True,
        **kwargs,
    ) -> testing.State:
        kwargs.setdefault("leader", True)
        return testing.State(
            model=testing.Model(name=MODEL),
            containers={container or make_container(*execs)},
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
