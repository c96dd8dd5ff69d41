"""MLflow's metrics for real: the charm's layer run by a real Pebble, scraped as Prometheus does.

MLflow (``--expose-prometheus``) serves ``/metrics`` behind its basic auth; the charm's metrics
exporter serves the same multiprocess folder on its own port without auth, with whether MLflow
answers and how full the storage is. The alert rules and the dashboard the charms publish are
checked against what the real exporter serves: their PromQL parses (promql-parser, the Rust
parser's binding) and every series they name is scraped.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Iterator

import promql_parser
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlops_charms import grafana_dashboard, mlflow_observability
from tests.workload.processes import run_pebble
from tests.workload.tracking.harness import CLIENT_ENV, RunningServer, start_server
from tests.workload.tracking.test_mlflow_workload import http_status

SERIES = re.compile(r"\b(mlflow_[a-z_]+)\b")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    base = tmp_path_factory.mktemp("metrics-server")
    data_dir = base / "mlflow-data"
    data_dir.mkdir()
    with pytest.MonkeyPatch.context() as patch, run_pebble(base) as daemon:
        for name, value in CLIENT_ENV.items():
            patch.setenv(name, value)
        yield start_server(daemon, data_dir)


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample the exporter serves, by name and labels, parsed as Prometheus' text."""
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                text = response.read().decode()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)  # the exporter starts beside MLflow
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def requests_with_status(samples: dict, status: str) -> float:
    return sum(
        value
        for (name, labels), value in samples.items()
        if name == "mlflow_http_request_total" and dict(labels).get("status") == status
    )


def rule_expressions() -> list[str]:
    return [
        str(rule["expr"])
        for group in mlflow_observability.ALERT_RULES
        for rule in group["rules"]  # type: ignore[union-attr]
    ]


def dashboard_expressions() -> list[str]:
    dashboard = grafana_dashboard.decompress(
        grafana_dashboard.compress(mlflow_observability.DASHBOARD)
    )
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_mlflows_own_metrics_path_needs_an_mlflow_password(server: RunningServer):
    assert http_status(f"{server.url}/metrics") == 401
    assert http_status(f"{server.url}/metrics", ("admin", server.admin_password)) == 200


def test_exporter_serves_request_counters_that_move_without_auth(server: RunningServer):
    before = scrape(server.metrics_url)
    search = f"{server.url}/api/2.0/mlflow/experiments/search?max_results=1"
    for _ in range(3):
        assert http_status(search, ("admin", server.admin_password)) == 200
    assert http_status(search) == 401

    after = scrape(server.metrics_url)
    assert requests_with_status(after, "200") - requests_with_status(before, "200") >= 3
    assert requests_with_status(after, "401") - requests_with_status(before, "401") >= 1
    durations = [
        value
        for (name, _labels), value in after.items()
        if name == "mlflow_http_request_duration_seconds_count"
    ]
    assert sum(durations) >= 4


def test_exporter_says_mlflow_is_up_and_how_full_the_storage_is(server: RunningServer):
    samples = scrape(server.metrics_url)
    assert samples[("mlflow_server_up", ())] == 1.0
    size = samples[("mlflow_storage_size_bytes", ())]
    assert 0 < samples[("mlflow_storage_available_bytes", ())] <= size


@pytest.mark.parametrize("expression", rule_expressions())
def test_alert_rule_expressions_parse_as_promql(expression: str):
    promql_parser.parse(expression)


@pytest.mark.parametrize("expression", dashboard_expressions())
def test_dashboard_expressions_parse_as_promql(expression: str):
    promql_parser.parse(expression)


def test_a_typo_in_promql_is_caught():
    with pytest.raises(ValueError):
        promql_parser.parse("sum(rate(mlflow_http_request_total[5m])")


def test_dashboard_json_loads_with_its_panels(server: RunningServer):
    dashboard = json.loads(json.dumps(mlflow_observability.DASHBOARD))
    titles = [panel["title"] for panel in dashboard["panels"]]
    assert titles[0] == "MLflow up"
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(titles)
    assert all(panel["targets"] for panel in dashboard["panels"])


def test_every_series_the_rules_and_dashboard_name_is_served(server: RunningServer):
    # The requests above have happened: every labelled series exists now.
    served = {name for name, _labels in scrape(server.metrics_url)}
    named = {
        match
        for expression in [*rule_expressions(), *dashboard_expressions()]
        for match in SERIES.findall(expression)
    }
    assert named <= served, named - served


def test_exporter_says_mlflow_is_down_when_it_stops(server: RunningServer):
    # Last: it stops the module's server.
    server.pebble.client.stop_services(["mlflow"])
    assert scrape(server.metrics_url)[("mlflow_server_up", ())] == 0.0
