"""What Prometheus and Grafana are told (tests/registry_observability_cases.py); the exporter."""

from __future__ import annotations

from mlops_charms import registry
from tests.registry_observability_cases import ObservabilityCases


class TestObservability(ObservabilityCases):
    pass


def test_the_exporter_runs_as_a_pebble_service_on_the_metrics_port(deployed):
    out = deployed(config={"metrics-port": 9300})
    plan = out.get_container("registry").plan
    command = plan.services[registry.METRICS_SERVICE].command
    assert command.startswith("/bin/mlops-workload metrics registry --port 9300 ")
    # No ready check: the registry serves without its exporter.
    assert all("9300" not in str(check.to_dict()) for check in plan.checks.values())
