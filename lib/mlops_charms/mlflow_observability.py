"""What the tracking charms tell Prometheus and Grafana about MLflow: alert rules, a dashboard.

Data, not files, so that both tracking charms ship the one copy (tools/stage.py copies the lib
modules a charm imports). The series are those of MLflow's ``--expose-prometheus``
(prometheus_flask_exporter: ``mlflow_http_request_total{method, status}`` and the histogram
``mlflow_http_request_duration_seconds``) and of the charm's metrics exporter (server up,
storage). MLflow labels its request series by method and status, not by endpoint.

Expressions name no Juju topology: the Prometheus charm adds the topology matchers of the
application that published them.
"""

from __future__ import annotations

from mlops_charms import observability
from mlops_charms.mlflow import STORAGE_AVAILABLE_METRIC, STORAGE_SIZE_METRIC, UP_METRIC

JOB_NAME = "mlflow"
DASHBOARD_NAME = "mlflow-tracking"

_REQUESTS = "mlflow_http_request_total"
_DURATION = "mlflow_http_request_duration_seconds_bucket"

ALERT_RULES: list[dict[str, object]] = [
    {
        "name": "mlflow",
        "rules": [
            {
                "alert": "MLflowMetricsUnreachable",
                "expr": "up < 1",
                "for": "5m",
                "labels": {"severity": "critical"},
                "annotations": {
                    "summary": "{{ $labels.juju_unit }}: the metrics exporter does not answer",
                    "description": "Prometheus cannot scrape the unit: it or its host is down.",
                },
            },
            {
                "alert": "MLflowDown",
                "expr": f"{UP_METRIC} < 1",
                "for": "5m",
                "labels": {"severity": "critical"},
                "annotations": {
                    "summary": "{{ $labels.juju_unit }}: MLflow does not answer on /health",
                    "description": "The tracking server is down or failing its health check.",
                },
            },
            {
                "alert": "MLflowHighServerErrorRate",
                "expr": (
                    f'sum without (method, status) (rate({_REQUESTS}{{status=~"5.."}}[5m]))'
                    f" / sum without (method, status) (rate({_REQUESTS}[5m])) > 0.05"
                ),
                "for": "10m",
                "labels": {"severity": "warning"},
                "annotations": {
                    "summary": "{{ $labels.juju_unit }}: over 5% of requests fail with 5xx",
                    "description": "Check the unit's log, its database and its object storage.",
                },
            },
            {
                "alert": "MLflowStorageNearlyFull",
                "expr": f"{STORAGE_AVAILABLE_METRIC} / {STORAGE_SIZE_METRIC} < 0.1",
                "for": "15m",
                "labels": {"severity": "warning"},
                "annotations": {
                    "summary": "{{ $labels.juju_unit }}: under 10% of the storage is free",
                    "description": (
                        "The SQLite stores and artifacts on the unit's storage grow with every"
                        " run: add storage, or relate PostgreSQL and S3."
                    ),
                },
            },
        ],
    }
]

_SELECTOR = observability.SELECTOR


def _latency(quantile: float) -> tuple[str, str]:
    expr = (
        f"histogram_quantile({quantile}, "
        f"sum by (juju_unit, le) (rate({_DURATION}{{{_SELECTOR}}}[5m])))"
    )
    return expr, f"{{{{juju_unit}}}} p{round(quantile * 100)}"


_PANELS: list[observability.Panel] = [
    # (title, unit, [(expression, legend), ...])
    ("MLflow up", "none", [(f"{UP_METRIC}{{{_SELECTOR}}}", "{{juju_unit}}")]),
    (
        "Requests per second, by status",
        "reqps",
        [
            (
                f"sum by (juju_unit, status) (rate({_REQUESTS}{{{_SELECTOR}}}[5m]))",
                "{{juju_unit}} {{status}}",
            )
        ],
    ),
    ("Latency", "s", [_latency(0.5), _latency(0.95)]),
    (
        "Server errors (5xx) per second, by method",
        "reqps",
        [
            (
                f'sum by (juju_unit, method) (rate({_REQUESTS}{{{_SELECTOR},status=~"5.."}}[5m]))',
                "{{juju_unit}} {{method}}",
            )
        ],
    ),
    (
        "Storage free",
        "percentunit",
        [
            (
                f"{STORAGE_AVAILABLE_METRIC}{{{_SELECTOR}}}"
                f" / {STORAGE_SIZE_METRIC}{{{_SELECTOR}}}",
                "{{juju_unit}}",
            )
        ],
    ),
]

DASHBOARD: dict[str, object] = observability.dashboard(
    "MLflow Tracking Server", "mlops-mlflow-tracking", ["mlops", "mlflow"], _PANELS
)
