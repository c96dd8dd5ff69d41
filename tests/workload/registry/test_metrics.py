"""The registry's metrics for real: the charm's exporter beside Apache and rclone, under Pebble.

The exporter (``mlops-workload metrics registry``) is a service of the charm's layer; it reads
Apache's mod_status, both rclone servers' own metrics, the repository and the jobs' folders.
The tests scrape it as Prometheus does and watch values move with real work (git requests, a
version cut by the charm's action in a job, a failed job). The alert rules and the dashboard
the charms publish are checked against what it serves: every PromQL expression parses
(promql-parser) and every series they name is served.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.error
import urllib.request

import promql_parser
import pytest
from ops import testing
from prometheus_client.parser import text_string_to_metric_families

from mlops_charms import grafana_dashboard, observability, registry, registry_observability
from tests.workload.registry.harness import RunningRegistry, chown_tree, git, make_files

SERIES = re.compile(r"\b((?:mlops|apache|rclone)_[a-z_]+)\b")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape_text(running: RunningRegistry) -> str:
    url = f"http://127.0.0.1:{running.settings.metrics_port}/metrics"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)  # the exporter starts beside the servers


def scrape(running: RunningRegistry) -> Samples:
    """Every sample the exporter serves, by name and labels, parsed as Prometheus' text."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(scrape_text(running))
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def expressions() -> list[str]:
    dashboards = {
        name: grafana_dashboard.decompress(grafana_dashboard.compress(board))
        for name, board in registry_observability.DASHBOARDS.items()
    }
    return observability.expressions(registry_observability.ALERT_RULES, dashboards)


def cut_version(running: RunningRegistry, name: str) -> dict:
    source = running.source_dir(name)
    make_files(source, 5, 800, name)
    chown_tree(source)
    results, state = running.unit.run_action("create-version", running.state, source=str(source))
    running.refresh(state)
    assert not isinstance(results, testing.ActionFailed), results.message
    return results


def test_apaches_request_counter_moves_with_git_requests(running_registry):
    before = scrape(running_registry)
    for _ in range(5):  # each: a 401, then the authenticated request
        git("ls-remote", running_registry.url_for(running_registry.writer))
    after = scrape(running_registry)
    # The exporter's own two requests per scrape (health, status) count as well.
    assert value(after, "apache_accesses_total") - value(before, "apache_accesses_total") >= 10
    assert value(after, "apache_up") == 1.0
    assert value(after, "mlops_registry_up") == 1.0


def test_apaches_status_page_is_refused_off_loopback(running_registry):
    addresses = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
    outside = next((a for a in addresses if "." in a and not a.startswith("127.")), None)
    if outside is None:
        pytest.skip("this machine has no IPv4 address but loopback")
    port = running_registry.settings.git_port
    assert http_status(f"http://127.0.0.1:{port}/server-status?auto") == 200
    assert http_status(f"http://{outside}:{port}/server-status?auto") == 403


def test_a_version_cut_in_a_job_appears_with_the_job(running_registry):
    before = scrape(running_registry)
    results = cut_version(running_registry, "metrics-v")
    assert results["state"] == "succeeded", results
    number = int(results["version"].removeprefix("v"))
    after = scrape(running_registry)
    versions = "mlops_registry_dataset_versions"
    assert value(after, versions) == value(before, versions) + 1
    assert value(after, "mlops_registry_latest_version_number") == number
    assert value(after, "mlops_registry_objects_bytes") > value(
        before, "mlops_registry_objects_bytes"
    )
    assert value(after, "mlops_registry_repository_bytes") > 0
    assert value(after, "mlops_jobs", state="succeeded") >= 1
    duration = value(after, "mlops_job_last_duration_seconds", kind="create-version")
    assert 0 <= duration < 300


def test_a_failed_job_increments_the_failed_jobs_counter(running_registry):
    before = scrape(running_registry)
    source = running_registry.source_dir("unreadable")
    make_files(source, 2, 100, "x")
    source.chmod(0o700)  # root's: the job runs as the registry's user and cannot read it
    results, state = running_registry.unit.run_action(
        "create-version", running_registry.state, source=str(source)
    )
    running_registry.refresh(state)
    assert isinstance(results, testing.ActionFailed), results
    after = scrape(running_registry)
    assert value(after, "mlops_jobs_failed_total") == value(before, "mlops_jobs_failed_total") + 1
    assert value(after, "mlops_jobs", state="failed") >= 1


def test_each_s3_server_serves_rclones_own_metrics(running_registry):
    samples = scrape(running_registry)
    for server in ("read-write", "read-only"):
        assert value(samples, "mlops_registry_s3_up", server=server) == 1.0
        assert ("rclone_errors_total", (("server", server),)) in samples


def test_storage_and_pin_are_served(running_registry):
    samples = scrape(running_registry)
    size = value(samples, "mlops_storage_size_bytes")
    assert 0 < value(samples, "mlops_storage_available_bytes") <= size
    assert value(samples, "mlops_registry_pinned_version_number") == 0


@pytest.mark.parametrize("expression", expressions())
def test_every_rule_and_panel_expression_parses_as_promql(expression: str):
    promql_parser.parse(expression)


def test_a_typo_in_promql_is_caught():
    with pytest.raises(ValueError):
        promql_parser.parse("sum by (juju_unit) (rate(apache_accesses_total[5m])")


def test_dashboard_json_loads_with_its_panels():
    dashboard = json.loads(json.dumps(registry_observability.DASHBOARD))
    titles = [panel["title"] for panel in dashboard["panels"]]
    assert titles[0] == "Registry up"
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(titles)
    assert all(panel["targets"] for panel in dashboard["panels"])


def test_every_series_the_rules_and_dashboard_name_is_served(running_registry):
    cut_version(running_registry, "series")  # a job has ended: its series exist
    served = {name for name, _labels in scrape(running_registry)}
    named = {match for expression in expressions() for match in SERIES.findall(expression)}
    assert named <= served, named - served


def test_the_exporter_serves_no_secret(running_registry):
    text = scrape_text(running_registry)
    for secret in (running_registry.writer.password, running_registry.writer.s3_secret_key):
        assert secret not in text


def test_the_registry_is_down_when_apache_stops(running_registry):
    # Last: it stops the module's git server.
    running_registry.client.stop_services([registry.GIT_SERVICE])
    samples = scrape(running_registry)
    assert value(samples, "mlops_registry_up") == 0.0
    assert value(samples, "apache_up") == 0.0
