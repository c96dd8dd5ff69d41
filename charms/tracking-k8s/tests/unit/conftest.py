"""Fixtures building the common state of tracking-k8s's unit tests.

The MLflow JSON client is the only thing replaced: the charm's real ``MLflowAPI`` talks to an
in-memory ``FakeMLflow`` that answers as MLflow 3.17.2 does. The storage is a real folder
mounted at the charm's storage location, so files the charm pushes survive from one hook to
the next, as they do on a unit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import ops
import pytest
from ops import testing

import charm
from mlops_charms import mlflow as mlflow_core
from tests.charm_testing import record_service_changes
from tests.tracking_testing import DATA_DIR, MODEL, FakeMLflow, server_secret


@pytest.fixture(autouse=True)
def mlflow(monkeypatch: pytest.MonkeyPatch) -> FakeMLflow:
    """The MLflow server every ``MLflowAPI`` the charm makes talks to."""
    server = FakeMLflow()
    monkeypatch.setattr(mlflow_core, "JSONClient", server.client)
    return server


@pytest.fixture
def ctx() -> Iterator[testing.Context[charm.TrackingCharm]]:
    """The charm with its own charmcraft.yaml."""
    with testing.Context(charm.TrackingCharm) as context:
        yield context


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """The unit's ``mlflow-data`` storage, as seen from the charm container."""
    path = tmp_path / "mlflow-data"
    path.mkdir()
    return path


@pytest.fixture
def container(data_dir: Path) -> testing.Container:
    """The mlflow container, Pebble up, nothing planned yet."""
    return testing.Container(
        "mlflow",
        can_connect=True,
        mounts={"mlflow-data": testing.Mount(location=DATA_DIR, source=data_dir)},
    )


@pytest.fixture
def admin_secret() -> testing.Secret:
    return server_secret()


StateFactory = Callable[..., testing.State]


@pytest.fixture
def make_state(container: testing.Container, admin_secret: testing.Secret) -> StateFactory:
    """A unit of tracking-k8s in model ``mlops``: leader, Pebble up, admin secret created.

    Keyword arguments go to ``testing.State``; ``relations`` and ``secrets`` are added to the
    defaults, ``admin_secret_exists=False`` leaves the admin secret out.
    """

    def make(
        *,
        relations=(),
        secrets=(),
        admin_secret_exists: bool = True,
        **kwargs,
    ) -> testing.State:
        kwargs.setdefault("leader", True)
        kwargs.setdefault("containers", {container})
        kwargs.setdefault("storages", {testing.Storage("mlflow-data")})
        return testing.State(
            model=testing.Model(name=MODEL),
            relations=set(relations),
            secrets={*secrets, *((admin_secret,) if admin_secret_exists else ())},
            **kwargs,
        )

    return make


@pytest.fixture
def pebble_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the ``ops.Container`` methods called that change running services."""
    return record_service_changes(monkeypatch)


@pytest.fixture
def secret_grants(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The relation ids of every ``secret-grant`` hook tool call, in order."""
    grants: list[int] = []
    original = ops.Secret.grant

    def spy(self, relation: ops.Relation, *, unit: ops.Unit | None = None) -> None:
        grants.append(relation.id)
        original(self, relation, unit=unit)

    monkeypatch.setattr(ops.Secret, "grant", spy)
    return grants
