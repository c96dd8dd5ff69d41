"""What the labelling charms tell Prometheus and Grafana: alert rules, a dashboard.

The series are those of Label Studio's exporter (``mlops-workload metrics labelling``, run by
each labelling charm next to the server): whether Label Studio answers, its projects', tasks'
and answers' counts, the lowest agreement (Krippendorff's alpha) of the projects' last
measures and the export gate (``mlops_charms.agreement``), and the storage and jobs every
exporter serves (``mlops_charms.observability``). Data, not files, so both charms ship the
one copy.
"""

from __future__ import annotations

from mlops_charms import observability
from mlops_charms.observability import selected

JOB_NAME = "label-studio"
DASHBOARD_NAME = "label-studio"
PREFIX = "LabelStudio"

UP = "mlops_labelling_up"
PROJECTS = "mlops_labelling_projects"
TASKS = "mlops_labelling_tasks"
ANNOTATIONS = "mlops_labelling_annotations"
SKIPPED = "mlops_labelling_skipped_annotations"
ALPHA_MIN = "mlops_labelling_agreement_alpha_min"
GATE = "mlops_labelling_agreement_gate_threshold"
BELOW_GATE = "mlops_labelling_projects_below_gate"

ALERT_RULES: list[dict[str, object]] = [
    {
        "name": "label_studio",
        "rules": [
            observability.exporter_unreachable(PREFIX, "labelling"),
            observability.service_down(PREFIX, UP, "Label Studio's /health"),
            {
                "alert": f"{PREFIX}AgreementBelowGate",
                "expr": f"{ALPHA_MIN} < {GATE}",
                "for": "1h",
                "labels": {"severity": "warning"},
                "annotations": {
                    "summary": "{{ $labels.juju_unit }}: annotators agree less than the export"
                    " gate asks (alpha {{ $value }})",
                    "description": (
                        "Exports of the projects below the gate are refused: run"
                        " consistency-report, review the items it lists, and relabel them."
                    ),
                },
            },
            observability.job_failed(PREFIX),
            observability.storage_nearly_full(
                PREFIX,
                "Imported media and, without PostgreSQL, the SQLite database grow with every"
                " import: add storage, or relate PostgreSQL.",
            ),
        ],
    }
]

_PANELS: list[observability.Panel] = [
    ("Label Studio up", "none", [(selected(UP), "{{juju_unit}}")]),
    (
        "Projects and tasks",
        "none",
        [
            (selected(PROJECTS), "{{juju_unit}} projects"),
            (selected(TASKS), "{{juju_unit}} tasks"),
        ],
    ),
    (
        "Answers per hour",
        "none",
        [
            (f"delta({selected(ANNOTATIONS)}[1h])", "{{juju_unit}} annotations"),
            (f"delta({selected(SKIPPED)}[1h])", "{{juju_unit}} skipped"),
        ],
    ),
    (
        "Agreement (Krippendorff's alpha) and the export gate",
        "none",
        [
            (selected(ALPHA_MIN), "{{juju_unit}} lowest alpha"),
            (selected(GATE), "{{juju_unit}} gate"),
        ],
    ),
    (
        "Projects below the gate",
        "none",
        [(selected(BELOW_GATE), "{{juju_unit}}")],
    ),
    observability.STORAGE_PANEL,
    *observability.JOB_PANELS,
]

DASHBOARD: dict[str, object] = observability.dashboard(
    "Label Studio", "mlops-label-studio", ["mlops", "label-studio"], _PANELS
)
DASHBOARDS = {DASHBOARD_NAME: DASHBOARD}
