"""What Prometheus and Grafana are told: tests/tracking_observability_cases.py, on this charm."""

from __future__ import annotations

from tests.tracking_observability_cases import ObservabilityCases


class TestObservability(ObservabilityCases):
    pass
