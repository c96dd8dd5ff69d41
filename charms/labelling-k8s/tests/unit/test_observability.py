"""Prometheus' and Grafana's data (tests/labelling_observability_cases.py); the exporter."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops_charms import label_studio
from tests.labelling_observability_cases import ObservabilityCases


@pytest.fixture
def gate_file(data_dir: Path):
    return lambda _state: data_dir / "agreement-gate"


class TestObservability(ObservabilityCases):
    pass


def test_the_exporter_runs_beside_label_studio_with_its_secrets_sourced(ctx, make_state):
    out = ctx.run(ctx.on.config_changed(), make_state(config={"metrics-port": 9300}))
    plan = out.get_container("label-studio").plan
    command = plan.services[label_studio.METRICS_SERVICE].command
    assert "secrets.env" in command  # the admin's token, for Label Studio's counts
    assert "exec /opt/mlops/bin/mlops-workload metrics labelling --port 9300 " in command
    # No check: Label Studio serves without its exporter.
    assert all("9300" not in str(check.to_dict()) for check in plan.checks.values())
