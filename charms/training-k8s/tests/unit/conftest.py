"""Fixtures building the common state of training-k8s's unit tests.

The Kubernetes API is a fake server over real HTTP (``tests/fake_kubernetes.py``) that
lightkube reaches through a kubeconfig, as it would reach a cluster: nothing of lightkube is
replaced. The storage is a real folder mounted at the charm's storage location, and the job
watcher's own code (``job_watcher.Watcher``) records a Job's end into it, as the watcher
service does in the container.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from ops import testing
from training_testing import (
    APP,
    DATA_DIR,
    IMAGE,
    MODEL,
    dataset_relation,
    fake_cluster,
    tracking_relation,
)

import charm
import job_watcher
import kubernetes_jobs
from tests.fake_kubernetes import FakeKubernetes


@pytest.fixture(scope="session", autouse=True)
def fast_metadata_files() -> Iterator[None]:
    """Write the charm's metadata with libyaml's dumper (ops.testing writes it every run)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(yaml, "safe_dump", _c_safe_dump)
        yield


def _c_safe_dump(data, stream=None, **options):
    return yaml.dump(data, stream, Dumper=yaml.CSafeDumper, **options)


@pytest.fixture(scope="session")
def charm_spec() -> dict:
    """charmcraft.yaml, read once as ops.testing reads it."""
    meta = yaml.safe_load((Path(charm.__file__).parents[1] / "charmcraft.yaml").read_text())
    return {"meta": meta, "config": meta.pop("config"), "actions": meta.pop("actions")}


@pytest.fixture
def ctx(charm_spec: dict) -> Iterator[testing.Context[charm.TrainingCharm]]:
    with testing.Context(charm.TrainingCharm, app_name=APP, **charm_spec) as context:
        yield context


@pytest.fixture
def kubernetes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKubernetes]:
    """The cluster: lightkube finds it through KUBECONFIG (no in-cluster account here)."""
    with fake_cluster().serve() as fake:
        monkeypatch.setenv("KUBECONFIG", str(fake.kubeconfig(tmp_path / "kubeconfig", MODEL)))
        yield fake


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "training-data"
    path.mkdir()
    return path


@pytest.fixture
def watcher(kubernetes: FakeKubernetes, data_dir: Path) -> job_watcher.Watcher:
    """The job watcher's logic on the fake cluster and the unit's storage (no notice sent)."""
    api = job_watcher.Api(kubernetes.url, None, None)
    return job_watcher.Watcher(api, MODEL, kubernetes_jobs.selector(APP), data_dir / "jobs", [])


@pytest.fixture
def image_resource(tmp_path: Path) -> testing.Resource:
    """The oci-image resource as Juju hands it to the charm (resource-get)."""
    path = tmp_path / "training-image.yaml"
    path.write_text(yaml.safe_dump({"registrypath": IMAGE, "username": "", "password": ""}))
    return testing.Resource(name="training-image", path=path)


ContainerFactory = Callable[..., testing.Container]


@pytest.fixture
def make_container(data_dir: Path) -> ContainerFactory:
    def make(*, can_connect: bool = True, **kwargs) -> testing.Container:
        return testing.Container(
            "training",
            can_connect=can_connect,
            mounts={"data": testing.Mount(location=DATA_DIR, source=data_dir)},
            **kwargs,
        )

    return make


StateFactory = Callable[..., testing.State]


@pytest.fixture
def make_state(make_container: ContainerFactory, image_resource: testing.Resource) -> StateFactory:
    """A leader unit of training-k8s, Pebble up, storage mounted, related as asked."""

    def make(
        *,
        relations=(),
        secrets=(),
        container: testing.Container | None = None,
        related: bool = True,
        **kwargs,
    ) -> testing.State:
        kwargs.setdefault("leader", True)
        kwargs.setdefault("resources", {image_resource})
        all_relations, all_secrets = set(relations), set(secrets)
        if related:
            for relation, secret in (dataset_relation(), tracking_relation()):
                all_relations.add(relation)
                all_secrets.add(secret)
        return testing.State(
            model=testing.Model(name=MODEL),
            containers={container or make_container()},
            storages={testing.Storage("training-data")},
            relations=all_relations,
            secrets=all_secrets,
            **kwargs,
        )

    return make
