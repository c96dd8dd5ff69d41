"""MLflow as tracking-k8s runs it, for the workload tests of tracking and of its consumers.

An ``ops.testing`` run of the charm produces the layer and the files it pushes (the storage
mount is a folder of the test); a real Pebble runs that layer, which starts the real MLflow
server. A consumer (training, say) relates as it would in a model: the charm provisions its
MLflow user and publishes the credentials in a Juju secret, which the consumer reads.
With a ``TestCA`` related over ``certificates``, the charm serves MLflow over HTTPS.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml
from ops import testing

from tests.charm_testing import load_charm_module
from tests.tls_provider import TestCA, issued_in
from tests.workload.processes import PebbleDaemon, free_port

CHARM_ROOT = Path(__file__).resolve().parents[3] / "charms" / "tracking-k8s"
CHARM_SRC = CHARM_ROOT / "src"
if str(CHARM_SRC) not in sys.path:
    sys.path.insert(0, str(CHARM_SRC))  # the charm's own modules (mlflow_server)

charm = load_charm_module(CHARM_SRC, "tracking_k8s_charm")

# Fail fast instead of MLflow's default four minutes of retries when something is wrong.
CLIENT_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


@dataclass
class RunningServer:
    """MLflow as started by Pebble from the charm's layer."""

    url: str
    metrics_url: str
    data_dir: Path
    admin_password: str
    state: testing.State
    context: testing.Context
    pebble: PebbleDaemon


@dataclass(frozen=True)
class TrackingConsumer:
    """What the charm gave a related consumer: its MLflow user and experiment (and CA)."""

    username: str
    password: str
    experiment: str
    tracking_uri: str = ""
    ca: str | None = None  # PEM, when the server serves HTTPS


def charm_context(data_dir: Path) -> testing.Context:
    """The charm with its real metadata, except the storage mount points at ``data_dir``."""
    raw = yaml.safe_load((CHARM_ROOT / "charmcraft.yaml").read_text())
    raw["containers"]["mlflow"]["mounts"][0]["location"] = str(data_dir)
    meta = {
        key: raw[key]
        for key in ("name", "containers", "resources", "storage", "provides", "requires")
    }
    return testing.Context(
        charm.TrackingCharm, meta=meta, config=raw["config"], actions=raw["actions"]
    )


def base_state(data_dir: Path, port: int, metrics_port: int, **kwargs) -> testing.State:
    container = testing.Container(
        "mlflow",
        can_connect=True,
        mounts={"data": testing.Mount(location=str(data_dir), source=data_dir)},
    )
    return testing.State(
        leader=True,
        config={"port": port, "metrics-port": metrics_port},
        containers={container},
        storages={testing.Storage("mlflow-data")},
        **kwargs,
    )


def start_from_layer(daemon: PebbleDaemon, state_out: testing.State) -> None:
    """Hand the layer the charm planned to the real Pebble and let it start the service."""
    layer = state_out.get_container("mlflow").layers["mlflow"]
    daemon.client.add_layer("mlflow", layer.to_yaml(), combine=True)
    daemon.client.replan_services()
    daemon.wait_for_check("mlflow-ready")


def admin_password(state: testing.State) -> str:
    (secret,) = [s for s in state.secrets if s.label == "mlflow-server"]
    return secret.tracked_content["admin-password"]


def with_certificate(context: testing.Context, state: testing.State, ca: TestCA) -> testing.State:
    """``state`` related to ``ca`` over ``certificates``, the unit's certificate issued."""
    relation = ca.relation()
    state = dataclasses.replace(state, relations={*state.relations, relation})
    state = context.run(context.on.relation_created(relation), state)
    return issued_in(ca, state)[0]


def start_server(
    daemon: PebbleDaemon, data_dir: Path, *, ca: TestCA | None = None, **state_kwargs
) -> RunningServer:
    """The charm's layer started by ``daemon``; with ``ca``, HTTPS with a certificate it issued."""
    port, metrics_port = free_port(), free_port()
    while metrics_port == port:
        metrics_port = free_port()
    context = charm_context(data_dir)
    state_in = base_state(data_dir, port, metrics_port, **state_kwargs)
    if ca is not None:
        state_in = with_certificate(context, state_in, ca)
    state_out = context.run(context.on.config_changed(), state_in)
    start_from_layer(daemon, state_out)
    # Over HTTPS, a name of the certificate: localhost.
    return RunningServer(
        url=f"https://localhost:{port}" if ca else f"http://127.0.0.1:{port}",
        metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
        data_dir=data_dir,
        admin_password=admin_password(state_out),
        state=state_out,
        context=context,
        pebble=daemon,
    )


def relate_consumer(server: RunningServer, app: str, experiment: str) -> TrackingConsumer:
    """Relate ``app`` on mlops-tracking asking for ``experiment``; return what it was given."""
    relation = testing.Relation(
        "mlops-tracking",
        remote_app_name=app,
        remote_app_data={"experiment": json.dumps(experiment)},
    )
    state_in = dataclasses.replace(server.state, relations={*server.state.relations, relation})
    state_out = server.context.run(server.context.on.relation_changed(relation), state_in)
    server.state = state_out
    published = {
        key: json.loads(value)
        for key, value in state_out.get_relation(relation.id).local_app_data.items()
    }
    (secret,) = [s for s in state_out.secrets if s.id == published["credentials_secret_id"]]
    return TrackingConsumer(
        username=secret.tracked_content["username"],
        password=secret.tracked_content["password"],
        experiment=published["default_experiment"],
        tracking_uri=published["tracking_uri"],
        ca=published.get("ca"),
    )


def as_user(monkeypatch, url: str, username: str, password: str):
    """An MLflow client authenticated as ``username`` (the client reads these variables)."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    mlflow.set_tracking_uri(url)
    return mlflow.MlflowClient(tracking_uri=url)
