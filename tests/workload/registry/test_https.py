"""The registry over HTTPS for real: the charm takes its certificate from a CA over the relation.

The charm runs on a real Pebble (tests/workload/registry/harness.py) related to a ``TestCA``
that really signs its CSR; Apache then serves git and the S3 front over TLS only. A consumer
knows only what the charm published (URLs and ``ca``): plain ``git`` and ``dvc`` verify the
server with that CA and read a version back byte for byte; another CA is refused, and plain
HTTP on the ports gets nothing.
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from ops import pebble

from mlops_charms import registry
from mlops_charms.dataset import DatasetProviderData
from tests.tls_provider import TestCA, issued_in
from tests.workload.pebble_backed import shared_folder
from tests.workload.registry.harness import (
    RunningRegistry,
    chown_tree,
    consumer_relation,
    deploy,
    dvc,
    first_state,
    git,
    make_files,
    read_tree,
    registry_unit,
)

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class HttpsRegistry:
    running: RunningRegistry
    ca_file: Path  # what the consumer wrote from the published ``ca``
    v1: dict[str, bytes]


@pytest.fixture(scope="module")
def https_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpsRegistry]:
    ca = TestCA()
    with shared_folder("registry-https-") as base:
        unit = registry_unit(base)
        relations = {"training": consumer_relation("training"), "certificates": ca.relation()}
        unit.start()
        try:
            state = deploy(unit, first_state(unit, relations.values()))
            # The CA answers the unit's CSR; the charm switches the servers to HTTPS.
            state, issued = issued_in(ca, state)
            state = unit.run(unit.context.on.relation_changed(issued), state)
            unit.containers["registry"].wait_for_checks(timeout=60)
            running = RunningRegistry(unit=unit, base=base, state=state, relations=relations)
            databag = state.get_relation(relations["training"].id).local_app_data
            published = DatasetProviderData.model_validate(
                {key: json.loads(value) for key, value in databag.items()}
            )
            assert published.ca is not None and published.ca == ca.ca_pem
            ca_file = tmp_path_factory.mktemp("consumer") / "registry-ca.pem"
            ca_file.write_text(published.ca)
            source = running.source_dir("upload")
            v1 = make_files(source, 12, 1500, "v1")
            chown_tree(source)
            cut = running.workload("create-version", "--source", str(source))
            assert cut.exit_code == 0, cut.stderr
            yield HttpsRegistry(running, ca_file, v1)
        finally:
            unit.stop()


def test_the_published_urls_are_https(https_registry):
    reader = https_registry.running.reader
    assert reader.registry_url.startswith("https://127.0.0.1:")
    assert reader.remote_endpoint.startswith("https://127.0.0.1:")


def test_git_clone_and_dvc_pull_read_a_version_with_the_published_ca(https_registry, tmp_path):
    running, reader = https_registry.running, https_registry.running.reader
    checkout = tmp_path / "consumer"
    git(
        "clone",
        "--quiet",
        running.url_for(reader),
        str(checkout),
        env={"GIT_SSL_CAINFO": str(https_registry.ca_file)},
    )
    git("checkout", "--quiet", "v1", cwd=checkout)
    # The committed DVC config names the HTTPS endpoint; the consumer adds only its CA.
    endpoint = dvc("config", "remote.storage.endpointurl", cwd=checkout, user=reader)
    assert endpoint.stdout.strip() == reader.remote_endpoint
    trusted = dvc(
        "remote",
        "modify",
        "--local",
        "storage",
        "ssl_verify",
        str(https_registry.ca_file),
        cwd=checkout,
        user=reader,
    )
    assert trusted.returncode == 0, trusted.stderr
    pulled = dvc("pull", "--quiet", cwd=checkout, user=reader)
    assert pulled.returncode == 0, pulled.stderr
    assert read_tree(checkout / "data") == https_registry.v1


def test_git_refuses_a_server_of_another_ca(https_registry, tmp_path):
    running = https_registry.running
    other = TestCA("another CA").write_ca(tmp_path / "other-ca.pem")
    out = git(
        "ls-remote",
        running.url_for(running.reader),
        check=False,
        env={"GIT_SSL_CAINFO": str(other)},
    )
    assert "refs/tags/v1" not in out
    assert "certificate" in out.lower(), out


def _plain_http_status(port: int) -> int | None:
    """The status plain HTTP gets on ``port``, or None when no HTTP answer comes."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/healthz")
        return connection.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


def test_plain_http_gets_nothing_from_either_port(https_registry):
    settings = https_registry.running.settings
    for port in (settings.git_port, settings.s3_port):
        # mod_ssl answers plain HTTP with 400 at most: never the page.
        assert _plain_http_status(port) in (None, 400)
    context = ssl.create_default_context(cafile=str(https_registry.ca_file))
    url = f"https://127.0.0.1:{settings.git_port}/healthz"
    with urllib.request.urlopen(url, timeout=10, context=context) as response:
        assert response.status == 200


def test_checks_are_up_and_the_exporter_reads_mod_status_over_https(https_registry):
    running = https_registry.running
    checks = running.client.get_checks()
    assert checks and all(check.status == pebble.CheckStatus.UP for check in checks)
    url = f"http://127.0.0.1:{running.settings.metrics_port}/metrics"
    deadline, text = time.monotonic() + 30, ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                text = response.read().decode()
        except (urllib.error.URLError, ConnectionError):
            text = ""
        if "apache_up 1" in text and "mlops_registry_up 1" in text:
            break
        time.sleep(0.5)
    assert "apache_up 1" in text and "mlops_registry_up 1" in text, text[-2000:]
    assert registry.METRICS_SERVICE in running.client.get_plan().services
