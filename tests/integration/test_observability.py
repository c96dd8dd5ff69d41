"""tracking-k8s scraped by a real Prometheus on MicroK8s: its target, its series, its rules.

tracking-k8s and prometheus-k8s share a model, related over ``metrics-endpoint``. Prometheus,
reached at its unit's address, must scrape the charm's exporter (the target is up and serves
``mlflow_server_up`` 1) and load the charm's alert rules, labelled with the Juju topology.

Environment overrides: ``MLOPS_MLFLOW_IMAGE`` (as in test_tracking.py),
``MLOPS_PROMETHEUS_CHANNEL`` (default ``latest/stable``), ``MLOPS_CHARM_TRACKING_K8S``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.parse
import urllib.request
from typing import Any

import pytest
from pytest_operator.plugin import OpsTest

APP = "tracking-k8s"
PROMETHEUS = "prometheus-k8s"
PROMETHEUS_CHANNEL = os.environ.get("MLOPS_PROMETHEUS_CHANNEL", "latest/stable")
IMAGE = os.environ.get("MLOPS_MLFLOW_IMAGE", "localhost:32000/mlflow:3.17.2")
DEPLOY_TIMEOUT_S = 20 * 60
SCRAPE_TIMEOUT_S = 5 * 60


def _prometheus(base: str, path: str, **query: str) -> Any:
    url = f"{base}{path}?{urllib.parse.urlencode(query)}" if query else f"{base}{path}"
    with urllib.request.urlopen(url, timeout=30) as response:
        answer = json.load(response)
    assert answer["status"] == "success", answer
    return answer["data"]


def _wait_for_series(base: str, query: str) -> list[dict[str, Any]]:
    """The instant vector of ``query`` once it is not empty (a scrape interval or two)."""
    deadline = time.monotonic() + SCRAPE_TIMEOUT_S
    while time.monotonic() < deadline:
        result = _prometheus(base, "/api/v1/query", query=query)["result"]
        if result:
            return result
        time.sleep(10)
    raise AssertionError(f"Prometheus has no {query} after {SCRAPE_TIMEOUT_S} s")


@pytest.mark.abort_on_fail
async def test_deploy_with_prometheus(ops_test: OpsTest, charm_builder):
    assert ops_test.model is not None
    charm = await charm_builder(APP)
    await ops_test.model.deploy(charm, application_name=APP, resources={"mlflow-image": IMAGE})
    await ops_test.model.deploy(PROMETHEUS, channel=PROMETHEUS_CHANNEL, trust=True)
    await ops_test.model.integrate(f"{APP}:metrics-endpoint", f"{PROMETHEUS}:metrics-endpoint")
    async with ops_test.fast_forward("10s"):
        await ops_test.model.wait_for_idle(
            apps=[APP, PROMETHEUS], status="active", timeout=DEPLOY_TIMEOUT_S
        )


async def test_prometheus_scrapes_mlflow_and_loads_its_rules(ops_test: OpsTest, unit_address):
    assert ops_test.model is not None
    base = f"http://{await unit_address(f'{PROMETHEUS}/0')}:9090"
    up = await asyncio.to_thread(
        _wait_for_series, base, f'mlflow_server_up{{juju_application="{APP}"}}'
    )
    assert [series["value"][1] for series in up] == ["1"]
    assert up[0]["metric"]["juju_model"] == ops_test.model_name
    groups = await asyncio.to_thread(_prometheus, base, "/api/v1/rules")
    alerts = {rule["name"] for group in groups["groups"] for rule in group["rules"]}
    assert {"MLflowDown", "MLflowMetricsUnreachable", "MLflowStorageNearlyFull"} <= alerts
