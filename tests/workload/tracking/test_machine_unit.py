"""The tracking machine charm's systemd unit, checked by systemd and run for real.

This machine has no running systemd. The unit is rendered by the charm's own module
(``charms/tracking/src/mlflow_unit.py``, the text the charm writes to
``/etc/systemd/system/mlflow.service``) from the shared core's settings, with the server's files
(``secrets.env`` in the ``EnvironmentFile`` syntax, the auth config) written as the charm writes
them. ``systemd-analyze verify`` checks the unit; then the test does what systemd would: runs
the unit's ``ExecStart`` with its ``Environment=`` lines, its ``EnvironmentFile`` and its
``User`` in its ``WorkingDirectory``. The real MLflow client logs to it as the admin.
``mlflow-metrics.service`` is checked and run the same way, and scraped without a password.
"""

from __future__ import annotations

import os
import pwd
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlops_charms import mlflow, systemd
from tests.systemd_units import unit_settings
from tests.workload.processes import assert_systemd_verifies, free_port, missing, run_unit
from tests.workload.tracking.harness import CLIENT_ENV, as_user
from tests.workload.tracking.test_mlflow_workload import http_status, log_and_read_back

CHARM_SRC = Path(__file__).resolve().parents[3] / "charms" / "tracking" / "src"
if str(CHARM_SRC) not in sys.path:
    sys.path.insert(0, str(CHARM_SRC))

import mlflow_unit  # noqa: E402

ADMIN_PASSWORD = "admin-Pa55word-with-a-'quote'-and-$dollar"


@dataclass
class RenderedUnit:
    path: Path
    settings: dict[str, list[str]]
    url: str
    metrics_path: Path
    metrics_url: str


@pytest.fixture
def rendered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RenderedUnit:
    """mlflow.service and the server's files, as the charm writes them, MLflow from this venv."""
    venv = Path(sys.executable).parent.parent
    if not (venv / "bin" / "mlflow").exists():
        missing(f"no mlflow in {venv}: run in tox -e workload-tracking")
    user = pwd.getpwuid(os.getuid()).pw_name
    monkeypatch.setattr(
        mlflow_unit,
        "PATHS",
        mlflow_unit.MachinePaths(venv=str(venv), python=sys.executable, user=user),
    )
    data_dir = tmp_path / "mlflow-data"
    (data_dir / "secrets").mkdir(parents=True)
    port, metrics_port = free_port(), free_port()
    settings = mlflow.ServerSettings(
        data_dir=str(data_dir),
        port=port,
        metrics_port=metrics_port,
        workers=1,
        job_execution=False,
        default_permission="READ",
        admin_password=ADMIN_PASSWORD,
        flask_secret_key="flask-secret-key-0123456789abcdef0123456789abcdef",
        upgrade_schema=True,  # the leader's unit: it migrates the store first
    )
    for path, content in mlflow.files(settings, systemd.env_file).items():
        Path(path).write_text(content)
        Path(path).chmod(0o600)
    unit = tmp_path / "mlflow.service"
    unit.write_text(mlflow_unit.unit_file(settings, "tracking/0"))
    metrics_unit = tmp_path / "mlflow-metrics.service"
    metrics_unit.write_text(mlflow_unit.metrics_unit_file(settings, "tracking/0"))
    return RenderedUnit(
        unit,
        unit_settings(unit.read_text()),
        f"http://127.0.0.1:{port}",
        metrics_unit,
        f"http://127.0.0.1:{metrics_port}/metrics",
    )


@pytest.mark.parametrize("unit", ["path", "metrics_path"])
def test_rendered_units_pass_systemd_analyze_verify(rendered: RenderedUnit, unit: str):
    assert_systemd_verifies(getattr(rendered, unit))


@pytest.fixture
def server(rendered: RenderedUnit) -> Iterator[RenderedUnit]:
    """MLflow run as systemd would run the unit: its command, environment, user and folder."""
    (env_path,) = rendered.settings["EnvironmentFile"]
    assert oct(Path(env_path).stat().st_mode & 0o777) == "0o600"
    with run_unit(
        rendered.settings, f"{rendered.url}/health", rendered.path.with_suffix(".log"), 120
    ):
        yield rendered


def test_the_units_mlflow_serves_the_admin_with_basic_auth(
    server: RenderedUnit, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    for name, value in CLIENT_ENV.items():
        monkeypatch.setenv(name, value)
    assert http_status(f"{server.url}/api/2.0/mlflow/experiments/search?max_results=1") == 401
    client = as_user(monkeypatch, server.url, "admin", ADMIN_PASSWORD)
    log_and_read_back(client, "machine-unit", tmp_path)


def test_the_metrics_unit_serves_the_units_mlflow_metrics_without_a_password(
    server: RenderedUnit,
):
    unit = unit_settings(server.metrics_path.read_text())
    assert "EnvironmentFile" not in unit
    assert http_status(f"{server.url}/api/2.0/mlflow/experiments/search") == 401
    with run_unit(unit, server.metrics_url, server.metrics_path.with_suffix(".log"), 30):
        with urllib.request.urlopen(server.metrics_url, timeout=5) as answer:
            text = answer.read().decode()
    samples = {
        (sample.name, sample.labels.get("status")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert samples[("mlflow_server_up", None)] == 1.0
    assert samples[("mlflow_http_request_total", "401")] >= 1
