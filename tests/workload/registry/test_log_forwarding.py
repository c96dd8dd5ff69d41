"""The registry's logs and its jobs' logs reach COS, forwarded by the real Pebble.

data-versioning-k8s runs the registry on a real Pebble (harness.py). Related over
``send-otlp`` to an OpenTelemetry Collector and over ``logging`` to Loki (both the test's log
receiver, answering as they do), its Pebble must push what Apache logs for a git clone, and what
a create-version job prints, to both, labelled with the unit's Juju topology.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator

import pytest
from ops import testing

from mlops_charms import log_forwarding, registry
from tests.workload.log_receiver import LogLine, LogReceiver, run_log_receiver
from tests.workload.pebble_backed import wait_until
from tests.workload.registry.harness import (
    RunningRegistry,
    charm,
    chown_tree,
    git,
    make_files,
    start_registry,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def receiver() -> Iterator[LogReceiver]:
    with run_log_receiver() as running:
        yield running


@pytest.fixture(scope="module")
def running_registry(receiver: LogReceiver) -> Iterator[RunningRegistry]:
    """The registry, then its two log relations as the collector and Loki write them."""
    with start_registry() as running:
        otlp = testing.Relation(
            log_forwarding.OTLP_ENDPOINT,
            remote_app_name="otelcol",
            remote_app_data={
                "endpoints": json.dumps(
                    [{"protocol": "http", "endpoint": receiver.url, "telemetries": ["logs"]}]
                )
            },
        )
        loki = testing.Relation(
            log_forwarding.LOKI_ENDPOINT,
            remote_app_name="loki",
            remote_units_data={0: {"endpoint": json.dumps({"url": receiver.loki_url})}},
        )
        state = dataclasses.replace(
            running.state, relations={*running.state.relations, otlp, loki}
        )
        for relation in (otlp, loki):
            state = running.run_charm(
                running.unit.context.on.relation_changed(state.get_relation(relation.id)), state
            )
        yield running


def _of_this_unit(line: LogLine) -> bool:
    return line.labels.get("juju_unit") == "data-versioning-k8s/0" and (
        line.labels.get("juju_application") == "data-versioning-k8s"
    )


@pytest.mark.parametrize("api", ["otlp", "loki"])
def test_apache_logs_a_clone_to_each_api(running_registry, receiver, tmp_path, api):
    git("clone", "--quiet", running_registry.url_for(running_registry.reader), str(tmp_path / "c"))
    found = receiver.wait_for(
        lambda line: line.api == api
        and line.service == registry.GIT_SERVICE
        and "git-upload-pack" in line.line,
        f"{api} line of Apache's for the clone",
    )
    assert all(_of_this_unit(line) for line in found), found[0].labels


def test_a_jobs_output_is_forwarded_too(running_registry, receiver):
    source = running_registry.source_dir("logged")
    make_files(source, 2, 100, "logged")
    chown_tree(source)
    results, state = running_registry.unit.run_action(
        "create-version", running_registry.state, source=str(source)
    )
    running_registry.refresh(state)
    assert not isinstance(results, testing.ActionFailed), results.message
    job = results["job"]
    for api in ("otlp", "loki"):
        found = receiver.wait_for(
            lambda line, api=api: line.api == api
            and line.service.endswith("-job")
            and line.line == f"job {job}: ended, exit code 0",
            f"{api} line of the create-version job's end",
        )
        assert all(_of_this_unit(line) for line in found)
        lines = [line.line for line in receiver.lines if line.api == api and job in line.line]
        assert lines[0] == f"job {job} (create-version): started", lines


def test_a_broken_relation_stops_the_forwarding(running_registry, receiver, tmp_path):
    (loki,) = [
        r for r in running_registry.state.relations if r.endpoint == log_forwarding.LOKI_ENDPOINT
    ]
    out = running_registry.unit.run(
        running_registry.unit.context.on.relation_broken(loki), running_registry.state
    )
    running_registry.refresh(dataclasses.replace(out, relations=out.relations - {loki}))
    client = running_registry.unit.containers[charm.CONTAINER].client
    targets = client.get_plan().log_targets
    assert [t.services for t in targets.values() if t.type == "loki"] == [["-all"]]

    def clone_lines(api: str) -> int:
        return sum(
            1 for line in receiver.lines if line.api == api and "git-upload-pack" in line.line
        )

    loki_before, otlp_before = clone_lines("loki"), clone_lines("otlp")
    git("clone", "--quiet", running_registry.url_for(running_registry.reader), str(tmp_path / "c"))
    # The collector gets this clone's lines, so Pebble has flushed since the break.
    wait_until(lambda: clone_lines("otlp") > otlp_before, 30, "the clone's lines at the collector")
    time.sleep(2)  # Pebble flushes each target every second
    assert clone_lines("loki") == loki_before
