"""HTTPS on MicroK8s: tracking-k8s and data-versioning-k8s with self-signed-certificates.

The tests run in order and share one model. The CA (self-signed-certificates, as in
overlays/tls.yaml) signs each unit's certificate; the clients outside the cluster get the CA
from its ``get-ca-certificate`` action, as a user would, and reach the units at their pod
address (in each unit's certificate as an IP SAN):

- the official MLflow client with ``MLFLOW_TRACKING_SERVER_CERT_PATH`` logs and reads a run;
- git with ``GIT_SSL_CAINFO`` reaches the registry's git server (and is asked to log in);
- plain HTTP, and a client that does not trust the CA, are refused.

Environment overrides: those of test_tracking.py and test_data_versioning.py (images, charms),
and ``MLOPS_CERTIFICATES_CHANNEL`` (self-signed-certificates' channel, default ``1/stable``).
"""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from pytest_operator.plugin import OpsTest

from tests.integration.test_data_versioning import REGISTRY_IMAGE
from tests.integration.test_tracking import IMAGE as MLFLOW_IMAGE
from tests.integration.test_tracking import Login, log_run, read_run

TRACKING = "tracking-k8s"
REGISTRY = "data-versioning-k8s"
CA_APP = "self-signed-certificates"
CA_CHANNEL = os.environ.get("MLOPS_CERTIFICATES_CHANNEL", "1/stable")
MLFLOW_PORT = 5000
GIT_PORT = 8080
DEPLOY_TIMEOUT_S = 25 * 60


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory) -> dict[str, Path]:
    """Where the tests keep the CA they fetched (one file for the module)."""
    return {"path": tmp_path_factory.mktemp("ca") / "ca.pem"}


def https_status(url: str, cafile: Path | None) -> int | str:
    """The status of an HTTPS GET, verified with ``cafile`` (or the system's CAs), or the error."""
    context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    try:
        with urllib.request.urlopen(url, timeout=30, context=context) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, OSError) as error:
        return type(getattr(error, "reason", error)).__name__


@pytest.mark.abort_on_fail
async def test_deploy_with_the_ca(ops_test: OpsTest, charm_builder):
    assert ops_test.model is not None
    tracking = await charm_builder(TRACKING)
    registry = await charm_builder(REGISTRY)
    await asyncio.gather(
        ops_test.model.deploy(
            tracking, application_name=TRACKING, resources={"mlflow-image": MLFLOW_IMAGE}
        ),
        ops_test.model.deploy(
            registry, application_name=REGISTRY, resources={"registry-image": REGISTRY_IMAGE}
        ),
        ops_test.model.deploy(CA_APP, channel=CA_CHANNEL),
    )
    await ops_test.model.integrate(f"{TRACKING}:certificates", f"{CA_APP}:certificates")
    await ops_test.model.integrate(f"{REGISTRY}:certificates", f"{CA_APP}:certificates")
    async with ops_test.fast_forward("10s"):
        await ops_test.model.wait_for_idle(
            apps=[TRACKING, REGISTRY, CA_APP],
            status="active",
            raise_on_blocked=True,
            timeout=DEPLOY_TIMEOUT_S,
        )
    message = ops_test.model.units[f"{TRACKING}/0"].workload_status_message
    assert message.startswith("serving at https://"), message


async def test_the_ca_comes_from_its_action(run_action, ca_file):
    outcome = await run_action(f"{CA_APP}/0", "get-ca-certificate")
    pem = outcome.results["ca-certificate"]
    assert "BEGIN CERTIFICATE" in pem
    ca_file["path"].write_text(pem)


async def test_mlflow_client_logs_over_https(run_action, unit_address, ca_file, tmp_path):
    credentials = await run_action(f"{TRACKING}/0", "get-admin-credentials")
    assert credentials.results["url"].startswith("https://")
    url = f"https://{await unit_address(f'{TRACKING}/0')}:{MLFLOW_PORT}"
    os.environ["MLFLOW_TRACKING_SERVER_CERT_PATH"] = str(ca_file["path"])
    try:
        admin = Login(url, credentials.results["username"], credentials.results["password"])
        run_id = await asyncio.to_thread(log_run, admin, "tls", "admin")
        await asyncio.to_thread(read_run, admin, run_id, "admin", tmp_path)
    finally:
        del os.environ["MLFLOW_TRACKING_SERVER_CERT_PATH"]


async def test_plain_http_and_an_untrusted_ca_are_refused(unit_address, ca_file):
    address = await unit_address(f"{TRACKING}/0")
    assert (
        await asyncio.to_thread(
            https_status, f"https://{address}:{MLFLOW_PORT}/health", ca_file["path"]
        )
        == 200
    )
    # Without the CA the client's own trust store does not know the server.
    assert (
        await asyncio.to_thread(https_status, f"https://{address}:{MLFLOW_PORT}/health", None)
        == "SSLCertVerificationError"
    )
    plain = await asyncio.to_thread(https_status, f"http://{address}:{MLFLOW_PORT}/health", None)
    assert plain != 200


async def test_the_registry_serves_git_over_https_only(unit_address, ca_file):
    """The CA verifies the git server; git gets as far as asking for credentials."""
    address = await unit_address(f"{REGISTRY}/0")
    healthz = f"https://{address}:{GIT_PORT}/healthz"
    assert await asyncio.to_thread(https_status, healthz, ca_file["path"]) == 200
    assert await asyncio.to_thread(https_status, healthz, None) == "SSLCertVerificationError"
    url = f"https://{address}:{GIT_PORT}/registry.git"

    def ls_remote(extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", "ls-remote", url],
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0", **extra_env},
            capture_output=True,
            text=True,
            timeout=120,
        )

    trusted = await asyncio.to_thread(ls_remote, {"GIT_SSL_CAINFO": str(ca_file["path"])})
    # Verified TLS, then basic auth refuses the anonymous client (401), not the certificate.
    assert trusted.returncode != 0
    assert "certificate" not in trusted.stderr.lower(), trusted.stderr
    untrusted = await asyncio.to_thread(ls_remote, {})
    assert "certificate" in untrusted.stderr.lower(), untrusted.stderr
