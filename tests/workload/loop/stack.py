"""The whole stack as one Juju model run here: the five charms, every workload real.

``running_stack`` deploys bundle.yaml's applications into a ``JujuModel`` (the charms through
``ops.testing``, each container on a real Pebble) and integrates them with bundle.yaml's own
relations, read from the file. What runs for real: MLflow (tracking-k8s's layer), Apache,
git and rclone (data-versioning-k8s's), Label Studio (labelling-k8s's), training-k8s's job
watcher, and each training Job's pod: the trainer, run by a ``Kubelet`` of the Kubernetes API
fake (tests/fake_kubernetes.py) as a process here. Only Juju's transport (model_runner), the
Kubernetes API server and the cluster's DNS (cluster_dns) are simulated.

Used by the end-to-end test (test_loop.py) and by the local demo (demo.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from tests.charm_testing import load_charm_module
from tests.fake_kubernetes import FakeKubernetes, Kubelet
from tests.workload.labelling import harness as labelling_harness
from tests.workload.model_runner import JujuModel, PlainCharm
from tests.workload.pebble_backed import PebbleBackedCharm
from tests.workload.processes import free_port
from tests.workload.registry import harness as registry_harness
from tests.workload.registry.harness import free_ports_in_a_row

ROOT = Path(__file__).resolve().parents[3]
CHARMS = ROOT / "charms"
MODEL = "mlops"
APPS = ("mlops-approach", "tracking-k8s", "data-versioning-k8s", "labelling-k8s", "training-k8s")
VENV_BIN = Path(sys.executable).parent
# Label Studio's first start migrates its database: minutes of CPU on a busy machine.
LABEL_STUDIO_START = 900.0

for charm_name in ("training-k8s", "mlops-approach"):
    if str(CHARMS / charm_name / "src") not in sys.path:
        sys.path.insert(0, str(CHARMS / charm_name / "src"))
if str(CHARMS / "training-k8s" / "tests" / "unit") not in sys.path:
    sys.path.insert(0, str(CHARMS / "training-k8s" / "tests" / "unit"))

from training_testing import fake_cluster  # noqa: E402

import training_workload  # noqa: E402
from tests.workload.tracking import harness as tracking_harness  # noqa: E402

training_charm = load_charm_module(CHARMS / "training-k8s" / "src", "training_k8s_charm")
approach_charm = load_charm_module(CHARMS / "mlops-approach" / "src", "mlops_approach_charm")
registry_charm = registry_harness.charm
labelling_charm = load_charm_module(labelling_harness.CHARM_SRC, "labelling_k8s_charm")
tracking_charm = tracking_harness.charm


@dataclasses.dataclass
class Stack:
    """The model, the cluster, and where each workload answers on this machine."""

    model: JujuModel
    cluster: FakeKubernetes
    kubelet: Kubelet
    base: Path
    ports: dict[str, int]

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['tracking-k8s']}"

    @property
    def label_studio_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['labelling-k8s']}"

    def secret_content(self, app: str, label: str) -> dict[str, str]:
        """An application's own secret (by label), as its charm last wrote it."""
        state = self.model.apps[app].state
        (secret,) = [s for s in state.secrets if s.label == label]
        return dict(secret.latest_content or secret.tracked_content)


def bundle_relations() -> list[tuple[str, str]]:
    """bundle.yaml's relations, each ``(app:endpoint, app:endpoint)``."""
    bundle = yaml.safe_load((ROOT / "bundle.yaml").read_text())
    return [(first, second) for first, second in bundle["relations"]]


def _units(base: Path, cluster: FakeKubernetes) -> dict[str, tuple[Any, Path]]:
    """Each application's unit: its charm, its containers on Pebble, its rock's paths here."""
    account = base / "service-account"
    account.mkdir()
    (account / "token").write_text("token-of-the-pod\n")
    training_rock = training_workload.Binaries(
        python=sys.executable,
        watcher=str(CHARMS / "training-k8s" / "src" / "job_watcher.py"),
        mlops_workload=str(VENV_BIN / "mlops-workload"),
        api_server=cluster.url,
        service_account=str(account),
    )
    registry_harness.service_owner()
    return {
        "mlops-approach": (
            PlainCharm(approach_charm.ApproachCharm, CHARMS / "mlops-approach"),
            CHARMS / "mlops-approach",
        ),
        "tracking-k8s": (
            PebbleBackedCharm(tracking_charm.TrackingCharm, CHARMS / "tracking-k8s", base / "t"),
            CHARMS / "tracking-k8s",
        ),
        "data-versioning-k8s": (
            PebbleBackedCharm(
                registry_charm.DataVersioningCharm,
                CHARMS / "data-versioning-k8s",
                base / "d",
                rock_paths={registry_harness.registry: registry_harness.local_binaries()},
            ),
            CHARMS / "data-versioning-k8s",
        ),
        "labelling-k8s": (
            PebbleBackedCharm(
                labelling_charm.LabellingCharm,
                CHARMS / "labelling-k8s",
                base / "l",
                rock_paths={labelling_harness.label_studio: labelling_harness.binaries()},
            ),
            CHARMS / "labelling-k8s",
        ),
        "training-k8s": (
            PebbleBackedCharm(
                training_charm.TrainingCharm,
                CHARMS / "training-k8s",
                base / "k",
                rock_paths={training_workload: training_rock},
            ),
            CHARMS / "training-k8s",
        ),
    }


@contextlib.contextmanager
def running_stack(base: Path, approach_config: Mapping[str, Any]) -> Iterator[Stack]:
    """The bundle deployed and integrated, every service up; torn down on exit."""
    # Pebble passes its environment to the services: the tests' PYTHONPATH (the charms' src
    # and lib/) would shadow the workloads' own packages. A rock sets none.
    os.environ.pop("PYTHONPATH", None)
    cluster = fake_cluster()
    with cluster.serve(), contextlib.ExitStack() as stack:
        os.environ["KUBECONFIG"] = str(cluster.kubeconfig(base / "kubeconfig", MODEL))
        pods = base / "pods"
        pods.mkdir()
        kubelet = Kubelet(
            cluster,
            MODEL,
            programs={},
            scratch=pods,
            environment={"PATH": os.environ["PATH"], "HOME": str(pods), "LANG": "C.UTF-8"},
        )
        stack.enter_context(kubelet.running())
        model = JujuModel(MODEL)
        stack.callback(model.stop)
        ports = {
            "tracking-k8s": free_port(),
            "labelling-k8s": free_port(),
            "data-versioning-k8s": free_port(),
        }
        config: dict[str, dict[str, Any]] = {
            "mlops-approach": dict(approach_config),
            "tracking-k8s": {"port": ports["tracking-k8s"], "metrics-port": free_port()},
            "labelling-k8s": {"port": ports["labelling-k8s"]},
            "data-versioning-k8s": {
                "git-port": ports["data-versioning-k8s"],
                "s3-port": free_ports_in_a_row(3),
            },
            "training-k8s": {},
        }
        image = base / "training-image.yaml"
        image.write_text("registrypath: localhost:32000/training:0.1.0\n")
        resources = {"training-k8s": {"training-image": image}}
        units = _units(base, cluster)
        # Label Studio first: its first start (migrations) runs while the others deploy.
        for app in (
            "labelling-k8s",
            "mlops-approach",
            "tracking-k8s",
            "data-versioning-k8s",
            "training-k8s",
        ):
            unit, root = units[app]
            model.add(app, unit, root, config=config[app], resources=resources.get(app))
            model.deploy(app)
        for first, second in bundle_relations():
            model.integrate(first, second)
        running = Stack(model, cluster, kubelet, base, ports)
        wait_for_services(running)
        yield running


def wait_for_services(stack: Stack) -> None:
    """Until every unit is active (Label Studio's first start is the long one)."""
    started = time.monotonic()
    while time.monotonic() - started < LABEL_STUDIO_START:
        stack.model.deliver_notices()
        stack.model.update_status()
        if all(stack.model.status(app).name == "active" for app in APPS):
            return
        time.sleep(5)
    statuses = {app: stack.model.status(app) for app in APPS}
    raise AssertionError(f"not all active after {LABEL_STUDIO_START:.0f} s: {statuses}")
