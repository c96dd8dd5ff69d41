"""MLflow from the tracking charm's layer phones no one: proven in a loopback-only namespace.

The charm's layer runs under a real Pebble inside a network namespace with only loopback, every
``connect()`` traced (tests/workload/netns.py). The MLflow client, run through ``pebble exec``
in the same namespace, logs a run with a parameter, a metric and an artifact, registers a model
and loads what a browser loads (the UI page and its telemetry config). Once Pebble and every
process it ran have ended (what the server sends on exit is tried too), the trace must hold no
``connect()`` beyond this host. The client is the user's, not the workload: its own telemetry
is off, so that what the trace shows is the server's.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import pytest

from tests.workload.netns import exec_in, run_isolated_pebble
from tests.workload.tracking.harness import CLIENT_ENV, RunningServer, start_server

pytestmark = pytest.mark.slow

# The user's MLflow client, as a script run in the namespace; it prints what it logged.
CLIENT = """
import json, os, sys, tempfile, urllib.request
import mlflow

client = mlflow.MlflowClient()
experiment = client.create_experiment("offline")
run = client.create_run(experiment)
run_id = run.info.run_id
client.log_param(run_id, "learning_rate", "0.01")
client.log_metric(run_id, "accuracy", 0.93)
with tempfile.TemporaryDirectory() as folder:
    path = os.path.join(folder, "confusion.json")
    with open(path, "w") as out:
        out.write("{}")
    client.log_artifact(run_id, path)
client.set_terminated(run_id)
client.create_registered_model("offline-model")
client.create_model_version("offline-model", f"runs:/{run_id}/confusion.json", run_id=run_id)
fetched = client.get_run(run_id)
ui = {}
for path in ("/", "/ajax-api/3.0/mlflow/ui-telemetry"):
    request = urllib.request.Request(
        os.environ["MLFLOW_TRACKING_URI"] + path, headers={"Authorization": sys.argv[1]}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        ui[path] = response.status
print(json.dumps({"params": fetched.data.params, "metrics": fetched.data.metrics, "ui": ui}))
"""


def client_environment(server: RunningServer) -> dict[str, str]:
    """The user's client: the server's URL and admin login, its own telemetry off."""
    return {
        **CLIENT_ENV,
        "MLFLOW_TRACKING_URI": server.url,
        "MLFLOW_TRACKING_USERNAME": "admin",
        "MLFLOW_TRACKING_PASSWORD": server.admin_password,
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }


def test_mlflow_logs_runs_and_serves_its_ui_without_reaching_outside(tmp_path: Path):
    data_dir = tmp_path / "mlflow-data"
    data_dir.mkdir()
    with run_isolated_pebble(tmp_path) as daemon:
        server = start_server(daemon, data_dir)
        token = base64.b64encode(f"admin:{server.admin_password}".encode()).decode()
        result = exec_in(
            daemon,
            [sys.executable, "-c", CLIENT, f"Basic {token}"],
            client_environment(server),
            timeout=300,
        )
        assert result.exit_code == 0, result.stderr[-3000:]
        logged = json.loads(result.stdout.strip().splitlines()[-1])

    assert logged["params"] == {"learning_rate": "0.01"}
    assert logged["metrics"] == {"accuracy": 0.93}
    assert logged["ui"] == {"/": 200, "/ajax-api/3.0/mlflow/ui-telemetry": 200}
    # Pebble has stopped the server: what it sent on its way out is in the trace too.
    daemon.assert_nothing_left()
