"""Label Studio over HTTPS, for real: the charm related to a CA serves it with its certificate.

The labelling charm (ops.testing) is related to a test CA over ``certificates``: it sends its
request, the CA signs it, and the charm pushes the certificate, key and CA and plans uWSGI's
HTTPS router (harness.py). A real Pebble runs that layer: its ready check verifies the
server with the CA. Then, as users and the charm's own clients reach it:

- the official SDK (label-studio-sdk 2.1.2, Label Studio's venv) given the CA creates a
  project and reads it back; given another CA it is refused; plain HTTP gets nothing;
- the charm's health probe and API reads, its metrics exporter and its labelling jobs verify
  Label Studio with the CA.

One server for the module: starting Label Studio takes most of a minute.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlops_charms import label_studio
from tests.tls_provider import TestCA
from tests.workload.labelling import harness
from tests.workload.labelling.harness import RunningLabelStudio, run_label_studio

pytestmark = pytest.mark.slow

SDK_HTTPS = Path(__file__).with_name("sdk_https.py")
PROJECT = "over HTTPS"


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, ca: TestCA) -> Iterator[RunningLabelStudio]:
    with run_label_studio(tmp_path_factory.mktemp("https"), ca=ca) as running:
        yield running


def run_sdk(url: str, ca_file: Path, api_key: str) -> dict:
    """sdk_https.py with Label Studio's venv (where the SDK is): its JSON report."""
    python = Path(harness.binaries().label_studio).with_name("python")
    result = subprocess.run(
        [str(python), str(SDK_HTTPS), url, str(ca_file)],
        env={"PATH": os.environ["PATH"], "LABEL_STUDIO_API_KEY": api_key},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"the SDK crashed:\n{result.stderr[-3000:]}"
    return json.loads(result.stdout)


def test_the_sdk_reaches_label_studio_over_https_with_its_ca_only(
    server: RunningLabelStudio, ca: TestCA, tmp_path: Path
):
    url, token = server.url, server.settings.admin_token
    assert url.startswith("https://localhost:")

    ours = run_sdk(url, ca.write_ca(tmp_path / "ca.pem"), token)
    assert ours.get("title") == PROJECT, ours
    assert ours["read_id"] == ours["id"]

    stranger = run_sdk(url, TestCA("another CA").write_ca(tmp_path / "other.pem"), token)
    assert stranger["error"] == "ConnectError", stranger
    assert "CERTIFICATE_VERIFY_FAILED" in stranger["message"]

    # HTTPS only: plain HTTP on the same port gets no answer.
    plain = run_sdk(url.replace("https://", "http://"), tmp_path / "ca.pem", token)
    assert "error" in plain, plain
    with pytest.raises((urllib.error.URLError, OSError)):
        urllib.request.urlopen(f"http://127.0.0.1:{server.settings.port}/health", timeout=10)


def test_the_charms_own_clients_verify_label_studio_with_the_ca(
    server: RunningLabelStudio, ca: TestCA
):
    settings = server.settings
    assert settings.tls is not None and settings.tls.ca == ca.ca_pem
    # The charm's probe and API reads (from the charm container: the CA in memory).
    assert label_studio.is_healthy(settings)
    assert isinstance(label_studio.project_counts(settings), list)
    strange = dataclasses.replace(settings.tls, ca=TestCA("another CA").ca_pem)
    assert not label_studio.is_healthy(dataclasses.replace(settings, tls=strange))

    # Pebble's ready check (Python, with the CA file) found it up: the server started.
    check = server.daemon.client.get_checks(names=["label-studio-ready"])[0]
    assert check.successes

    # The metrics exporter reads Label Studio with the CA file.
    assert _metric(settings.metrics_port, "mlops_labelling_up") == 1.0

    # A labelling job (as the charm execs it): LABEL_STUDIO_CA_FILE verifies the server.
    result = server.labelling(
        None, "consistency-report", "--project", "no such project", "--threshold", "0.5"
    )
    assert "CERTIFICATE_VERIFY_FAILED" not in result.stderr
    assert "unreachable" not in result.stderr, result.stderr
    assert "no such project" in result.stderr + result.stdout


def _metric(port: int, name: str, timeout: float = 60.0) -> float | None:
    """The value of ``name`` on the exporter, once it answers with ``name`` at 1."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
                text = answer.read().decode()
        except OSError:
            text = ""
        for line in text.splitlines():
            if line.startswith(name + " "):
                value = float(line.split()[1])
        if value == 1.0:
            return value
        time.sleep(1)
    return value
