"""What the data-versioning charms tell Prometheus and Grafana: alert rules, a dashboard.

The series are those of the registry's exporter (``mlops-workload metrics registry``, run by
``mlops_charms.registry`` next to the servers): Apache's mod_status (``apache_*``), each rclone
S3 server's own (``rclone_*``, by ``server``), the registry's (``mlops_registry_*``) and the
storage and jobs every exporter serves (``mlops_charms.observability``). Data, not files, so
both charms ship the one copy.
"""

from __future__ import annotations

from mlops_charms import observability
from mlops_charms.observability import selected

JOB_NAME = "data-registry"
DASHBOARD_NAME = "data-registry"
PREFIX = "DataRegistry"

UP = "mlops_registry_up"
S3_UP = "mlops_registry_s3_up"
VERSIONS = "mlops_registry_dataset_versions"
LATEST_VERSION = "mlops_registry_latest_version_number"
PINNED_VERSION = "mlops_registry_pinned_version_number"
REPOSITORY_BYTES = "mlops_registry_repository_bytes"
OBJECTS_BYTES = "mlops_registry_objects_bytes"
APACHE_ACCESSES = "apache_accesses_total"
APACHE_SENT = "apache_sent_kilobytes_total"
APACHE_WORKERS = "apache_workers"
RCLONE_BYTES = "rclone_bytes_transferred_total"
RCLONE_ERRORS = "rclone_errors_total"

ALERT_RULES: list[dict[str, object]] = [
    {
        "name": "data_registry",
        "rules": [
            observability.exporter_unreachable(PREFIX, "data registry"),
            observability.service_down(PREFIX, UP, "the registry's git server (Apache)"),
            {
                "alert": f"{PREFIX}S3Down",
                "expr": f"{S3_UP} < 1",
                "for": "5m",
                "labels": {"severity": "critical"},
                "annotations": {
                    "summary": "{{ $labels.juju_unit }}: the DVC remote's {{ $labels.server }}"
                    " S3 server does not answer",
                    "description": "dvc push or pull fails: see the unit's log (rclone).",
                },
            },
            observability.job_failed(PREFIX),
            observability.storage_nearly_full(
                PREFIX,
                "The repository and, without an s3 relation, the DVC objects grow with every"
                " version: add storage, or relate S3 to move the objects to a bucket.",
            ),
        ],
    }
]

_PANELS: list[observability.Panel] = [
    (
        "Registry up",
        "none",
        [
            (selected(UP), "{{juju_unit}} git"),
            (selected(S3_UP), "{{juju_unit}} s3 {{server}}"),
        ],
    ),
    (
        "Dataset versions",
        "none",
        [
            (selected(VERSIONS), "{{juju_unit}} versions"),
            (selected(LATEST_VERSION), "{{juju_unit}} latest (vN)"),
            (selected(PINNED_VERSION), "{{juju_unit}} pinned (vN, 0: none)"),
        ],
    ),
    (
        "Apache requests per second (git and S3 front)",
        "reqps",
        [(f"rate({selected(APACHE_ACCESSES)}[5m])", "{{juju_unit}}")],
    ),
    (
        "Apache bytes sent per second",
        "KBs",
        [(f"rate({selected(APACHE_SENT)}[5m])", "{{juju_unit}}")],
    ),
    (
        "Apache workers",
        "none",
        [(selected(APACHE_WORKERS), "{{juju_unit}} {{state}}")],
    ),
    (
        "S3 bytes transferred per second (rclone)",
        "Bps",
        [
            (
                f"sum by (juju_unit, server) (rate({selected(RCLONE_BYTES)}[5m]))",
                "{{juju_unit}} {{server}}",
            ),
            (
                f"sum by (juju_unit, server) (rate({selected(RCLONE_ERRORS)}[5m]))",
                "{{juju_unit}} {{server}} errors",
            ),
        ],
    ),
    (
        "Repository and objects on the storage",
        "bytes",
        [
            (selected(REPOSITORY_BYTES), "{{juju_unit}} git"),
            (selected(OBJECTS_BYTES), "{{juju_unit}} DVC objects"),
        ],
    ),
    observability.STORAGE_PANEL,
    *observability.JOB_PANELS,
]

DASHBOARD: dict[str, object] = observability.dashboard(
    "DVC data registry", "mlops-data-registry", ["mlops", "dvc"], _PANELS
)
DASHBOARDS = {DASHBOARD_NAME: DASHBOARD}
