"""The loop's dashboard, offered by mlops-approach: the data-centric loop across the services.

Dataset versions (data versioning), annotations and agreement against the gate (labelling),
the jobs of every service by state, and MLflow's requests (training runs logging to
tracking): the series the services' exporters serve (``registry_observability``,
``labelling_observability``, ``mlflow_observability``), for the whole model rather than one
application, since the approach charm serves none of them.
"""

from __future__ import annotations

from mlops_charms import labelling_observability as labelling
from mlops_charms import observability
from mlops_charms import registry_observability as registry

DASHBOARD_NAME = "mlops-loop"
_MODEL = 'juju_model=~"$juju_model"'


def _in_model(metric: str) -> str:
    return f"{metric}{{{_MODEL}}}"


_PANELS: list[observability.Panel] = [
    (
        "Dataset versions",
        "none",
        [
            (_in_model(registry.LATEST_VERSION), "{{juju_application}} latest (vN)"),
            (_in_model(registry.PINNED_VERSION), "{{juju_application}} pinned (vN, 0: none)"),
        ],
    ),
    (
        "Agreement (Krippendorff's alpha) and the export gate",
        "none",
        [
            (_in_model(labelling.ALPHA_MIN), "{{juju_application}} lowest alpha"),
            (_in_model(labelling.GATE), "{{juju_application}} gate"),
        ],
    ),
    (
        "Answers per hour",
        "none",
        [(f"delta({_in_model(labelling.ANNOTATIONS)}[1h])", "{{juju_application}}")],
    ),
    (
        "Jobs, by service and state",
        "none",
        [
            (
                f"sum by (juju_application, state) ({_in_model(observability.JOBS)})",
                "{{juju_application}} {{state}}",
            )
        ],
    ),
    (
        "Failed jobs (last hour)",
        "none",
        [
            (
                "sum by (juju_application) "
                f"(increase({_in_model(observability.JOBS_FAILED)}[1h]))",
                "{{juju_application}}",
            )
        ],
    ),
    (
        "Tracking requests per second (training runs logging)",
        "reqps",
        [
            (
                f"sum by (juju_application) (rate({_in_model('mlflow_http_request_total')}[5m]))",
                "{{juju_application}}",
            )
        ],
    ),
]

DASHBOARD: dict[str, object] = observability.dashboard(
    "MLOps loop", "mlops-loop", ["mlops"], _PANELS
)
DASHBOARDS = {DASHBOARD_NAME: DASHBOARD}
