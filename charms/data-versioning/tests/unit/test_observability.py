"""What Prometheus and Grafana are told (tests/registry_observability_cases.py); the exporter."""

from __future__ import annotations

from pathlib import Path

import registry_units
from mlops_charms import registry
from tests.registry_observability_cases import ObservabilityCases


class TestObservability(ObservabilityCases):
    pass


def test_the_exporter_runs_as_a_systemd_unit_on_the_metrics_port(deployed):
    deployed(config={"metrics-port": 9300})
    unit = registry_units.server_unit(registry.METRICS_SERVICE)
    text = Path(registry_units.PATHS.unit_file(unit)).read_text()
    venv = registry_units.PATHS.venv
    assert f'ExecStart="{venv}/bin/mlops-workload" "metrics" "registry"' in text
    assert '"--port" "9300"' in text
