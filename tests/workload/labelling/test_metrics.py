"""Label Studio's metrics for real: the charm's exporter beside Label Studio, under Pebble.

The exporter (``mlops-workload metrics labelling``) is a service of the charm's layer; it asks
Label Studio (with the admin's token, from the sourced secrets file) for its counts, and reads
the charm's agreement record, the export gate and the jobs' folders. The tests scrape it as
Prometheus does and watch values move with real work (a project, tasks and an answer through
Label Studio's API; jobs and measures recorded by the charm's own code). The alert rules and
the dashboard the charms publish are checked against what it serves: every PromQL expression
parses (promql-parser) and every series they name is served.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pwd
import re
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import promql_parser
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlops_charms import (
    agreement,
    grafana_dashboard,
    jobs,
    label_studio,
    loop_observability,
    mlflow_observability,
    observability,
    systemd,
)
from mlops_charms import labelling_observability as observed
from mlops_charms import registry_observability as registry_observed
from mlops_charms.host_files import HostFiles
from tests.systemd_units import unit_settings
from tests.workload.labelling.harness import RunningLabelStudio, run_label_studio
from tests.workload.pebble_backed import shared_folder
from tests.workload.processes import assert_systemd_verifies, free_port, run_unit

CHARM_SRC = Path(__file__).resolve().parents[3] / "charms" / "labelling" / "src"
if str(CHARM_SRC) not in sys.path:
    sys.path.insert(0, str(CHARM_SRC))

import label_studio_unit  # noqa: E402

SERIES = re.compile(r"\b(mlops_[a-z_]+)\b")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
LABEL_CONFIG = (
    '<View><Text name="text" value="$text"/><Choices name="label" toName="text">'
    '<Choice value="good"/><Choice value="bad"/></Choices></View>'
)


@pytest.fixture(scope="module")
def running() -> Iterator[RunningLabelStudio]:
    with shared_folder("labelling-metrics-") as base, run_label_studio(base) as server:
        yield server


def scrape_text(server: RunningLabelStudio) -> str:
    url = f"http://127.0.0.1:{server.settings.metrics_port}/metrics"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)  # the exporter starts beside Label Studio


def scrape(server: RunningLabelStudio) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(scrape_text(server))
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def expressions() -> list[str]:
    dashboards = {
        name: grafana_dashboard.decompress(grafana_dashboard.compress(board))
        for name, board in observed.DASHBOARDS.items()
    }
    return observability.expressions(observed.ALERT_RULES, dashboards)


def record_jobs(server: RunningLabelStudio) -> None:
    """One succeeded and one failed job, recorded by the charms' own job records."""
    records = jobs.JobRecords(HostFiles(), server.settings.jobs_dir)
    done = records.create("consistency-report", {"project": "reviews"})
    records.record_end(done.id, 0, stdout=json.dumps({"krippendorff_alpha": 0.42}))
    failed = records.create("export-annotations", {"project": "reviews"})
    records.record_end(failed.id, 1, stderr="error: agreement 0.42 is below the gate 0.8")


def test_label_studio_counts_move_with_a_project_tasks_and_an_answer(running):
    before = scrape(running)
    assert value(before, "mlops_labelling_up") == 1.0
    assert value(before, "mlops_labelling_api_up") == 1.0
    project = running.api(
        "POST", "/api/projects", {"title": "metrics", "label_config": LABEL_CONFIG}
    )
    running.api(
        "POST",
        f"/api/projects/{project['id']}/import",
        [{"text": f"item {n}"} for n in range(3)],
    )
    tasks = running.api("GET", f"/api/tasks?project={project['id']}")["tasks"]
    answer = [
        {
            "from_name": "label",
            "to_name": "text",
            "type": "choices",
            "value": {"choices": ["good"]},
        }
    ]
    running.api("POST", f"/api/tasks/{tasks[0]['id']}/annotations", {"result": answer})
    after = scrape(running)
    for name, added in (
        ("mlops_labelling_projects", 1),
        ("mlops_labelling_tasks", 3),
        ("mlops_labelling_annotations", 1),
    ):
        assert value(after, name) == value(before, name) + added, name


def test_the_lowest_agreement_and_the_gate_are_served(running):
    record = agreement.AgreementRecord(HostFiles(), running.settings.agreement_path)
    measures = {
        "reviews": agreement.Measure(4, 0, "j1", krippendorff_alpha=0.42, compared_tasks=2),
        "photos": agreement.Measure(6, 1, "j2", krippendorff_alpha=0.91, compared_tasks=3),
    }
    record.save(measures)
    gate = HostFiles()
    gate.push(running.settings.agreement_gate_path, "", make_dirs=True)
    samples = scrape(running)
    assert value(samples, "mlops_labelling_agreement_alpha_min") == pytest.approx(0.42)
    assert value(samples, "mlops_labelling_agreement_measured_projects") == 2
    assert ("mlops_labelling_agreement_gate_threshold", ()) not in samples  # no gate
    gate.push(running.settings.agreement_gate_path, "0.8")
    samples = scrape(running)
    assert value(samples, "mlops_labelling_agreement_gate_threshold") == pytest.approx(0.8)
    assert value(samples, "mlops_labelling_projects_below_gate") == 1


def test_jobs_by_state_and_the_failed_ones_counted(running):
    before = scrape(running)
    record_jobs(running)
    after = scrape(running)
    assert value(after, "mlops_jobs", state="succeeded") == (
        value(before, "mlops_jobs", state="succeeded") + 1
    )
    assert value(after, "mlops_jobs_failed_total") == value(before, "mlops_jobs_failed_total") + 1
    assert value(after, "mlops_job_last_duration_seconds", kind="export-annotations") >= 0


def test_storage_is_served(running):
    samples = scrape(running)
    size = value(samples, "mlops_storage_size_bytes")
    assert 0 < value(samples, "mlops_storage_available_bytes") <= size


@pytest.mark.parametrize("expression", expressions())
def test_every_rule_and_panel_expression_parses_as_promql(expression: str):
    promql_parser.parse(expression)


def test_a_typo_in_promql_is_caught():
    with pytest.raises(ValueError):
        promql_parser.parse("mlops_labelling_agreement_alpha_min < < 0.5")


def test_dashboard_json_loads_with_its_panels():
    dashboard = json.loads(json.dumps(observed.DASHBOARD))
    titles = [panel["title"] for panel in dashboard["panels"]]
    assert titles[0] == "Label Studio up"
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(titles)


def test_every_series_the_rules_and_dashboard_name_is_served(running):
    # After the tests above: a measure, a gate and ended jobs exist.
    served = {name for name, _labels in scrape(running)}
    named = {match for expression in expressions() for match in SERIES.findall(expression)}
    assert named <= served, named - served


def test_the_loops_dashboard_parses_and_names_only_served_series(running):
    """mlops-approach's dashboard: what labelling serves here, or another service's test proves.

    The registry's and MLflow's series it names are those their own rules and dashboards
    name, which tests/workload/registry and tests/workload/tracking scrape for real.
    """
    loop = observability.expressions([], loop_observability.DASHBOARDS)
    for expression in loop:
        promql_parser.parse(expression)
    any_series = re.compile(r"\b((?:mlops|mlflow|apache|rclone)_[a-z_]+)\b")
    proven = {
        name
        for rules, board in (
            (registry_observed.ALERT_RULES, registry_observed.DASHBOARD),
            (mlflow_observability.ALERT_RULES, mlflow_observability.DASHBOARD),
        )
        for expression in observability.expressions(rules, {"board": board})
        for name in any_series.findall(expression)
    }
    served = {name for name, _labels in scrape(running)}
    named = {name for expression in loop for name in any_series.findall(expression)}
    assert named <= served | proven, named - served - proven


def test_the_exporter_serves_no_secret_nor_title(running):
    text = scrape_text(running)
    assert running.settings.admin_token not in text
    for title in ("metrics", "reviews", "photos"):
        assert f'"{title}"' not in text


def test_the_machine_charms_exporter_unit_verifies_and_reads_its_token_from_the_env_file(
    running, tmp_path
):
    """label-studio-metrics.service as the machine charm renders it, run as systemd would."""
    settings = dataclasses.replace(
        running.settings, data_dir=str(tmp_path), metrics_port=free_port()
    )
    (tmp_path / "secrets").mkdir()
    for path, content in label_studio.files(settings, systemd.env_file).items():
        Path(path).write_text(content)
        Path(path).chmod(0o600)
    paths = label_studio_unit.MachinePaths(user=pwd.getpwuid(os.getuid()).pw_name)
    unit = tmp_path / f"{label_studio_unit.METRICS_SERVICE}.service"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(label_studio_unit, "PATHS", paths)
        unit.write_text(label_studio_unit.metrics_unit_file(settings, "labelling/0"))
    assert_systemd_verifies(unit)
    assert running.settings.admin_token not in unit.read_text()
    metrics_url = f"http://127.0.0.1:{settings.metrics_port}/metrics"
    with run_unit(unit_settings(unit.read_text()), metrics_url, unit.with_suffix(".log"), 30):
        server = dataclasses.replace(running, settings=settings)
        assert value(scrape(server), "mlops_labelling_api_up") == 1.0


def test_label_studio_is_down_when_it_stops(running):
    # Last: it stops the module's Label Studio.
    running.daemon.client.stop_services([label_studio.SERVICE])
    samples = scrape(running)
    assert value(samples, "mlops_labelling_up") == 0.0
    assert value(samples, "mlops_labelling_api_up") == 0.0
