"""Prometheus' and Grafana's data (tests/labelling_observability_cases.py); the exporter."""

from __future__ import annotations

from pathlib import Path

import pytest

import label_studio_unit
from tests.labelling_observability_cases import ObservabilityCases


@pytest.fixture
def gate_file(ctx):
    return lambda state: Path(next(iter(state.storages)).get_filesystem(ctx)) / "agreement-gate"


class TestObservability(ObservabilityCases):
    pass


def test_the_exporter_runs_as_its_own_unit_with_the_servers_secrets_file(ctx, make_state):
    ctx.run(ctx.on.config_changed(), make_state(config={"metrics-port": 9300}))
    text = Path(label_studio_unit.PATHS.metrics_unit_file).read_text()
    assert "EnvironmentFile=" in text and "secrets.env" in text
    assert '"metrics" "labelling" "--port" "9300"' in text
