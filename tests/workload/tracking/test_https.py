"""tracking-k8s with its certificate: the real MLflow serves HTTPS only, verified with the CA.

A ``TestCA`` answers the charm's ``certificates`` request (tests/tls_provider.py) with a really
signed certificate; the charm's layer, run by a real Pebble, starts MLflow with it. The
official MLflow client, given the CA the charm published to its consumer (as a consumer charm
sets ``MLFLOW_TRACKING_SERVER_CERT_PATH``), logs and reads back; another CA's file is refused,
and plain HTTP to the port gets no answer.
"""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tls_provider import TestCA
from tests.workload.processes import run_pebble
from tests.workload.tracking.harness import (
    CLIENT_ENV,
    RunningServer,
    as_user,
    relate_consumer,
    start_server,
)
from tests.workload.tracking.test_mlflow_workload import log_and_read_back

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def https_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    base = tmp_path_factory.mktemp("https-server")
    data_dir = base / "mlflow-data"
    data_dir.mkdir()
    with pytest.MonkeyPatch.context() as patch, run_pebble(base) as daemon:
        for name, value in CLIENT_ENV.items():
            patch.setenv(name, value)
        # start_server waits for the layer's readiness check: it verifies over HTTPS too.
        yield start_server(daemon, data_dir, ca=TestCA())


def test_a_consumer_logs_over_https_verified_with_the_published_ca(
    https_server: RunningServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    consumer = relate_consumer(https_server, "trainer", "https-experiment")
    assert consumer.tracking_uri.startswith("https://")
    assert consumer.ca is not None
    ca_file = tmp_path / "tracking-ca.pem"
    ca_file.write_text(consumer.ca)
    monkeypatch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", str(ca_file))

    client = as_user(monkeypatch, https_server.url, consumer.username, consumer.password)
    log_and_read_back(client, consumer.experiment, tmp_path)


def test_a_client_trusting_another_ca_is_refused(
    https_server: RunningServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    stranger = TestCA("another CA").write_ca(tmp_path / "another-ca.pem")
    monkeypatch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", str(stranger))
    client = as_user(monkeypatch, https_server.url, "admin", https_server.admin_password)

    with pytest.raises(Exception, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        client.search_experiments()


def test_plain_http_to_the_port_gets_no_answer(https_server: RunningServer):
    plain = https_server.url.replace("https://", "http://", 1)
    with pytest.raises((urllib.error.URLError, http.client.HTTPException, OSError)):
        urllib.request.urlopen(f"{plain}/health", timeout=10)


def test_the_metrics_exporter_sees_mlflow_up_over_https(https_server: RunningServer):
    with urllib.request.urlopen(https_server.metrics_url, timeout=10) as response:
        metrics = response.read().decode()
    assert "mlflow_server_up 1.0" in metrics
