"""Jobs: a one-shot Pebble service per job, its folder on the storage, its end acted on once."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from ops import pebble, testing
from registry_testing import (
    JOB_SERVICE,
    STATE_DIR,
    WRITER_KEYS,
    JobOutcome,
    consumer_relation,
    job_ids,
    job_record,
    job_running,
    peer_data,
    provided,
    push_tags,
    running_job_id,
    unreported,
    with_container,
)

import charm
from mlops_charms import jobs, registry_server


@pytest.fixture
def validating(ctx, deployed, data_dir) -> testing.State:
    """v1 was pushed; a hook started its validation."""
    push_tags(data_dir, "v1")
    return ctx.run(ctx.on.update_status(), deployed(relations=[consumer_relation()]))


def test_a_job_is_a_one_shot_service_of_the_jobs_layer(validating):
    container = validating.get_container(charm.CONTAINER)
    service = container.layers[jobs.LAYER].services[JOB_SERVICE]
    assert service.startup == "disabled"  # a replan never starts it again
    assert (service.on_success, service.on_failure) == ("ignore", "ignore")
    assert (service.user, service.group, service.working_dir) == (
        "_daemon_",
        "_daemon_",
        STATE_DIR,
    )
    assert service.summary == "job: validate-version"
    assert container.service_statuses[JOB_SERVICE] == pebble.ServiceStatus.ACTIVE
    assert JOB_SERVICE not in container.layers["registry"].services


def test_a_jobs_folder_records_what_it_runs_and_keeps_its_secrets_private(validating, data_dir):
    job_id = running_job_id(validating.get_container(charm.CONTAINER))
    folder = data_dir / "jobs" / job_id
    record = job_record(data_dir, job_id)
    assert record["id"] == job_id and record["kind"] == "validate-version"
    assert record["params"] == {"version": "v1"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record["started"])
    assert stat.S_IMODE((folder / "env").stat().st_mode) == 0o600
    assert (
        f"export AWS_SECRET_ACCESS_KEY={WRITER_KEYS['secret-key']}" in (folder / "env").read_text()
    )
    plan = str(validating.get_container(charm.CONTAINER).plan.to_dict())
    assert WRITER_KEYS["secret-key"] not in plan + (folder / "job.json").read_text()


def _run_wrapper(plan: pebble.Plan, folder: Path, *command: str) -> None:
    """Run the job service's real wrapper script, its folder moved to ``folder``."""
    words = shlex.split(plan.services[JOB_SERVICE].command)
    subprocess.run([*words[:4], str(folder), *command], check=True, timeout=10)


def test_the_fake_job_ends_as_the_real_wrapper_does(validating, workload, data_dir, tmp_path):
    job_id = running_job_id(validating.get_container(charm.CONTAINER))
    real_jobs = tmp_path / "real" / "jobs"
    shutil.copytree(data_dir / "jobs", real_jobs)
    # What the command prints uses the job's env file, which the wrapper sources.
    script = (
        """printf '{"key": "%s"}\\n' "$AWS_ACCESS_KEY_ID"; """
        """echo 'error: two files missing' >&2; exit 3"""
    )
    plan = validating.get_container(charm.CONTAINER).plan
    _run_wrapper(plan, real_jobs / job_id, "/bin/sh", "-c", script)

    outcome = JobOutcome(
        code=3,
        stdout=json.dumps({"key": WRITER_KEYS["access-key"]}) + "\n",
        stderr="error: two files missing\n",
    )
    workload.end(validating, outcome)
    real, fake = real_jobs / job_id, data_dir / "jobs" / job_id
    assert sorted(p.name for p in real.iterdir()) == sorted(p.name for p in fake.iterdir())
    for name in ("stdout", "stderr"):
        assert (real / name).read_text() == (fake / name).read_text(), name
    for folder in (real, fake):
        assert re.fullmatch(r"3 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\n", (folder / "exit").read_text())
    assert (real_jobs / jobs.UNREPORTED / job_id).exists()
    assert unreported(data_dir) == [job_id]


def test_an_ended_job_is_acted_on_once(ctx, validating, workload, data_dir, pushes):
    state, notice = workload.end(validating)
    container = state.get_container(charm.CONTAINER)
    first = ctx.run(ctx.on.pebble_custom_notice(container, notice), state)
    assert peer_data(first)[registry_server.LATEST_KEY] == "v1"
    assert unreported(data_dir) == []
    pushes.clear()
    again = ctx.run(
        ctx.on.pebble_custom_notice(first.get_container(charm.CONTAINER), notice), first
    )
    assert peer_data(again) == peer_data(first)
    consumer = first.get_relations(registry_server.DATASET_ENDPOINT)[0]
    assert provided(again, consumer) == provided(first, consumer)
    assert len(job_ids(data_dir)) == 1
    assert pushes == []


def test_a_job_lost_without_a_result_is_listed_failed_and_its_work_started_again(
    ctx, validating, data_dir
):
    # The pod restarted under the job: Pebble shows it inactive; no exit was recorded.
    lost = running_job_id(validating.get_container(charm.CONTAINER))
    statuses = {**validating.get_container(charm.CONTAINER).service_statuses}
    statuses[JOB_SERVICE] = pebble.ServiceStatus.INACTIVE
    state = with_container(validating, service_statuses=statuses)
    state = ctx.run(ctx.on.action("list-jobs"), state)
    [listed] = json.loads(ctx.action_results["jobs"])
    assert (listed["id"], listed["state"]) == (lost, "failed")
    assert listed["error"] == "the job ended without recording a result"

    out = ctx.run(ctx.on.update_status(), state)
    assert job_running(out)
    assert len(job_ids(data_dir)) == 2
    assert job_record(data_dir, job_ids(data_dir)[-1])["params"] == {"version": "v1"}


def test_a_wrapper_slow_to_exit_does_not_fail_the_hook(ctx, validating, workload, data_dir):
    push_tags(data_dir, "v2")
    state, _notice = workload.end(validating)
    statuses = {**state.get_container(charm.CONTAINER).service_statuses}
    statuses[JOB_SERVICE] = pebble.ServiceStatus.ACTIVE  # still notifying Pebble
    out = ctx.run(ctx.on.update_status(), with_container(state, service_statuses=statuses))
    assert peer_data(out)[registry_server.LATEST_KEY] == "v1"


def test_a_job_notice_of_another_charms_job_changes_nothing(ctx, deployed, data_dir):
    notice = testing.Notice(jobs.NOTICE_KEY, last_data={"job": "20250101000000-beef"})
    state = deployed()
    state = with_container(state, notices=[notice])
    out = ctx.run(ctx.on.pebble_custom_notice(state.get_container(charm.CONTAINER), notice), state)
    assert job_ids(data_dir) == []
    assert out.unit_status == testing.ActiveStatus("no versions yet")


def test_jobs_started_within_one_second_are_listed_in_start_order(ctx, deployed, workload):
    workload.frozen = True  # every job starts in the same second
    state = deployed()
    state = ctx.run(ctx.on.action("create-version", params={"source": f"{STATE_DIR}/in"}), state)
    state = ctx.run(ctx.on.action("rollback", params={"to": "v1"}), state)
    ctx.run(ctx.on.action("list-jobs"), state)
    listed = json.loads(ctx.action_results["jobs"])
    assert [job["kind"] for job in listed] == ["rollback", "create-version"]
    assert listed[0]["id"][:14] == listed[1]["id"][:14]
