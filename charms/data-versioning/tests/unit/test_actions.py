"""Actions on a machine: the shared cases, short commands as the service user, jobs as units."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from ops import testing

import registry_units
from mlops_charms import registry_server
from tests.registry_action_cases import ActionCases, refused
from tests.registry_relations import consumer_relation, push_tags
from tests.systemd_units import systemd_words, unit_settings


class TestActions(ActionCases):
    """The action tests data-versioning-k8s shares (tests/registry_action_cases.py)."""


@pytest.fixture
def consumer() -> testing.Relation:
    return consumer_relation()


@pytest.fixture
def registry_with(deployed, consumer, data_dir, commands) -> Callable[..., testing.State]:
    """A running registry with a consumer and these versions, the last one the latest."""

    def make(*versions: str, peers: dict[str, str] | None = None, **kwargs) -> testing.State:
        push_tags(data_dir, *versions)
        latest = {registry_server.LATEST_KEY: versions[-1]} if versions else {}
        state = deployed(relations=[consumer], peer_data={**latest, **(peers or {})}, **kwargs)
        commands.calls.clear()
        return state

    return make


@pytest.fixture
def commands_run(commands) -> Callable[[], list]:
    """What the charm ran as the service user since the registry came up."""
    return lambda: commands.calls


def test_every_action_refuses_without_the_storage(ctx, make_state):
    message = refused(ctx, make_state(storages=set()), "list-jobs")
    assert message == "the registry is not ready: waiting for the registry-data storage"


def test_list_versions_runs_the_workload_as_the_service_user(ctx, deployed, commands):
    commands.results["list-versions"] = {"versions": [{"version": "v1"}]}
    ctx.run(ctx.on.action("list-versions"), deployed())
    assert commands.calls[-1] == [
        registry_units.PATHS.binaries.mlops_workload,
        "dataset",
        "list-versions",
    ]
    assert ctx.action_results["count"] == 1


def test_a_failed_command_fails_the_action_in_one_line(ctx, deployed, commands):
    commands.failures["diff-versions"] = "no version v9"
    message = refused(ctx, deployed(), "diff-versions", **{"from": "v1", "to": "v9"})
    assert message == "no version v9"


def test_create_version_starts_a_transient_unit_and_returns_its_id(ctx, deployed, data_dir):
    source = f"{data_dir}/incoming/batch-7"
    ctx.run(ctx.on.action("create-version", params={"source": source, "wait": False}), deployed())
    job_id = ctx.action_results["job"]
    unit = Path(registry_units.PATHS.job_units_dir, f"mlops-registry-job-{job_id}.service")
    text = unit.read_text()
    assert "User=root\n" in text  # the tests' service user
    exec_start = unit_settings(text)["ExecStart"][0]
    assert systemd_words(exec_start)[-4:] == ["--source", source, "--source-kind", "upload"]
    assert "AWS_SECRET_ACCESS_KEY" not in text
    assert "AWS_SECRET_ACCESS_KEY=" in (data_dir / "jobs" / job_id / "env").read_text()


def test_a_running_job_keeps_the_slot(ctx, deployed, data_dir):
    push_tags(data_dir, "v1")
    state = ctx.run(ctx.on.update_status(), deployed())  # validates v1 in a job
    with pytest.raises(testing.ActionFailed, match=r"\(validate-version\) is running"):
        ctx.run(ctx.on.action("rollback", params={"to": "v1", "wait": False}), state)
