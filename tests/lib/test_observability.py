"""The pieces every service's observability shares: the port check, the rules, the layout."""

from __future__ import annotations

from typing import cast

import pytest

from mlops_charms import (
    labelling_observability,
    loop_observability,
    observability,
    registry_observability,
)

MODULES = (registry_observability, labelling_observability)


def panels(board: dict) -> list[dict]:
    return cast("list[dict]", board["panels"])


@pytest.mark.parametrize("port", [1023, 65536, 8080, 9001])
def test_a_metrics_port_out_of_range_or_taken_names_the_option(port):
    with pytest.raises(
        ValueError, match=r"^metrics-port: must be between 1024 and 65535, and not"
    ):
        observability.check_metrics_port(port, (8080, 9000, 9001, 9002), "git-port or s3-port")


def test_a_free_metrics_port_passes():
    observability.check_metrics_port(9102, (8080, 9000), "git-port or s3-port")


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_every_service_alerts_on_its_exporter_its_jobs_and_its_storage(module):
    (group,) = module.ALERT_RULES
    expressions = {rule["alert"]: rule["expr"] for rule in group["rules"]}
    assert expressions[f"{module.PREFIX}MetricsUnreachable"] == "up < 1"
    assert expressions[f"{module.PREFIX}JobFailed"] == "increase(mlops_jobs_failed_total[15m]) > 0"
    assert (
        "mlops_storage_available_bytes / mlops_storage_size_bytes"
        in (expressions[f"{module.PREFIX}StorageNearlyFull"])
    )
    assert all(rule["annotations"]["summary"] for rule in group["rules"])


@pytest.mark.parametrize(
    "board",
    [
        registry_observability.DASHBOARD,
        labelling_observability.DASHBOARD,
        loop_observability.DASHBOARD,
    ],
    ids=["registry", "labelling", "loop"],
)
def test_dashboards_lay_panels_out_two_a_row_without_overlap(board):
    cells = {(p["gridPos"]["x"], p["gridPos"]["y"]) for p in panels(board)}
    assert len(cells) == len(panels(board))
    assert {p["datasource"]["uid"] for p in panels(board)} == {"${prometheusds}"}
    ids = [p["id"] for p in panels(board)]
    assert ids == list(range(1, len(ids) + 1))


def test_service_panels_filter_on_grafanas_topology_and_the_loop_on_the_model_only():
    for board in (registry_observability.DASHBOARD, labelling_observability.DASHBOARD):
        for panel in panels(board):
            for target in panel["targets"]:
                assert "$juju_application" in target["expr"], target["expr"]
    for panel in panels(loop_observability.DASHBOARD):
        for target in panel["targets"]:
            assert "$juju_model" in target["expr"] and "$juju_application" not in target["expr"]
