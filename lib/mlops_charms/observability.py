"""What every service charm tells Prometheus and Grafana: shared rules, panels and publishing.

The services' exporters (``mlops-workload metrics ...``, in the workload package) serve the
same series for what every service has: the unit's storage and the jobs (read from the jobs'
folder layout of ``mlops_charms.jobs``). This module names those series once, builds the alert
rules and dashboard panels on them, lays a dashboard out, and publishes a service's scrape job,
rules and dashboards over ``metrics-endpoint`` and ``grafana-dashboard``. Each service's own
module (``registry_observability``, ``labelling_observability``) adds its own series.

Expressions name no Juju topology: the Prometheus charm adds the topology matchers of the
application that published them; dashboards filter on Grafana's topology variables.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import ops

from mlops_charms import cos_agent, grafana_dashboard, prometheus_scrape

METRICS_ENDPOINT = "metrics-endpoint"
DASHBOARD_ENDPOINT = "grafana-dashboard"

# The series every exporter of the workload package serves.
STORAGE_SIZE = "mlops_storage_size_bytes"
STORAGE_AVAILABLE = "mlops_storage_available_bytes"
JOBS = "mlops_jobs"  # gauge, by state: running, succeeded, failed
JOBS_FAILED = "mlops_jobs_failed_total"  # counter
JOB_LAST_DURATION = "mlops_job_last_duration_seconds"  # gauge, by kind

SELECTOR = (
    'juju_model=~"$juju_model",juju_application=~"$juju_application",juju_unit=~"$juju_unit"'
)

# A panel: (title, unit, [(expression, legend), ...]).
Panel = tuple[str, str, list[tuple[str, str]]]


def check_metrics_port(metrics_port: int, taken: Sequence[int], taken_names: str) -> None:
    """Raise ``ValueError`` naming ``metrics-port`` if it is out of range or already taken."""
    if not 1024 <= metrics_port <= 65535 or metrics_port in taken:
        raise ValueError(f"metrics-port: must be between 1024 and 65535, and not {taken_names}")


def exporter_unreachable(prefix: str, service: str) -> dict[str, object]:
    """Prometheus cannot scrape the unit's exporter (its ``up``)."""
    return {
        "alert": f"{prefix}MetricsUnreachable",
        "expr": "up < 1",
        "for": "5m",
        "labels": {"severity": "critical"},
        "annotations": {
            "summary": "{{ $labels.juju_unit }}: the metrics exporter does not answer",
            "description": f"Prometheus cannot scrape the {service} unit: it or its host is down.",
        },
    }


def service_down(prefix: str, metric: str, what: str) -> dict[str, object]:
    """The exporter says the service does not answer (``metric`` is 0)."""
    return {
        "alert": f"{prefix}Down",
        "expr": f"{metric} < 1",
        "for": "5m",
        "labels": {"severity": "critical"},
        "annotations": {
            "summary": f"{{{{ $labels.juju_unit }}}}: {what} does not answer",
            "description": "The service is down or failing its health check: see the unit's log.",
        },
    }


def job_failed(prefix: str) -> dict[str, object]:
    """A job failed in the last 15 minutes (the failed jobs' counter grew)."""
    return {
        "alert": f"{prefix}JobFailed",
        "expr": f"increase({JOBS_FAILED}[15m]) > 0",
        "labels": {"severity": "warning"},
        "annotations": {
            "summary": "{{ $labels.juju_unit }}: a job failed",
            "description": "Run the list-jobs action: the failed job's error says why.",
        },
    }


def storage_nearly_full(prefix: str, hint: str) -> dict[str, object]:
    """Under 10% of the unit's storage is free; ``hint`` says what grows and what to do."""
    return {
        "alert": f"{prefix}StorageNearlyFull",
        "expr": f"{STORAGE_AVAILABLE} / {STORAGE_SIZE} < 0.1",
        "for": "15m",
        "labels": {"severity": "warning"},
        "annotations": {
            "summary": "{{ $labels.juju_unit }}: under 10% of the storage is free",
            "description": hint,
        },
    }


def selected(metric: str, matchers: str = "") -> str:
    """``metric`` filtered on Grafana's topology variables (and ``matchers``)."""
    return f"{metric}{{{SELECTOR}{',' + matchers if matchers else ''}}}"


JOB_PANELS: list[Panel] = [
    (
        "Jobs, by state",
        "none",
        [(f"sum by (juju_unit, state) ({selected(JOBS)})", "{{juju_unit}} {{state}}")],
    ),
    (
        "Last job's run time",
        "s",
        [(selected(JOB_LAST_DURATION), "{{juju_unit}} {{kind}}")],
    ),
]

STORAGE_PANEL: Panel = (
    "Storage free",
    "percentunit",
    [(f"{selected(STORAGE_AVAILABLE)} / {selected(STORAGE_SIZE)}", "{{juju_unit}}")],
)


def dashboard(title: str, uid: str, tags: Sequence[str], panels: Sequence[Panel]) -> dict:
    """A Grafana dashboard of time series panels, two a row, on ``${prometheusds}``."""
    return {
        "title": title,
        "uid": uid,
        "tags": list(tags),
        "schemaVersion": 39,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "1m",
        # Grafana's side adds the data source and Juju topology variables.
        "templating": {"list": []},
        "panels": [
            {
                "id": index + 1,
                "type": "timeseries",
                "title": panel_title,
                "datasource": {"type": "prometheus", "uid": "${prometheusds}"},
                "gridPos": {"h": 8, "w": 12, "x": 12 * (index % 2), "y": 8 * (index // 2)},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "targets": [
                    {"refId": chr(ord("A") + number), "expr": expr, "legendFormat": legend}
                    for number, (expr, legend) in enumerate(targets)
                ],
            }
            for index, (panel_title, unit, targets) in enumerate(panels)
        ],
    }


def expressions(alert_rules: Sequence[Mapping], dashboards: Mapping[str, Mapping]) -> list[str]:
    """Every PromQL expression of ``alert_rules`` and ``dashboards`` (for the tests)."""
    found = [str(rule["expr"]) for group in alert_rules for rule in group["rules"]]
    for board in dashboards.values():
        found += [str(t["expr"]) for panel in board["panels"] for t in panel["targets"]]
    return found


def publish(
    charm: ops.CharmBase,
    *,
    port: int,
    job_name: str,
    alert_rules: Sequence[Mapping[str, object]],
    dashboards: Mapping[str, Mapping[str, object]],
) -> None:
    """Offer the exporter on ``port``, the rules and the dashboards to related COS charms.

    On a machine the same reach COS through the machine's agent too (``cos-agent``).
    """
    prometheus_scrape.publish(
        charm, METRICS_ENDPOINT, port=port, alert_rules=alert_rules, job_name=job_name
    )
    grafana_dashboard.publish(charm, DASHBOARD_ENDPOINT, dashboards)
    cos_agent.publish(
        charm, port=port, job_name=job_name, alert_rules=alert_rules, dashboards=dashboards
    )
