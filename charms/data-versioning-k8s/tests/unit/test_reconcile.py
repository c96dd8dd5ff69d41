"""Reconcile: the layer, the files, the bootstrap, the statuses."""

from __future__ import annotations

from pathlib import Path

import pytest
from ops import testing
from registry_testing import dataset_exec, versions_output

import registry


def test_pebble_ready_runs_git_and_both_s3_servers_as_the_service_user(ctx, make_state):
    state = make_state()
    out = ctx.run(ctx.on.pebble_ready(state.get_container("registry")), state)
    plan = out.get_container("registry").plan
    assert set(plan.services) == {"git-http", "s3", "s3-read-only"}
    assert {s.user for s in plan.services.values()} == {"_daemon_"}
    assert set(plan.checks) == {"git-http-ready", "s3-ready", "s3-read-only-ready"}


def test_no_password_appears_in_the_plan(ctx, make_state, writer_secret):
    state = make_state()
    out = ctx.run(ctx.on.pebble_ready(state.get_container("registry")), state)
    plan_text = str(out.get_container("registry").plan.to_dict())
    assert writer_secret.tracked_content["password"] not in plan_text


def test_files_hold_only_hashes_and_s3_keys_are_private(
    ctx, make_state, data_dir: Path, writer_secret
):
    state = make_state()
    ctx.run(ctx.on.pebble_ready(state.get_container("registry")), state)
    password = writer_secret.tracked_content["password"]
    htpasswd = (data_dir / "conf" / "htpasswd").read_text()
    assert htpasswd.startswith("registry:$2y$") and password not in htpasswd
    assert (data_dir / "conf" / "s3.env").stat().st_mode & 0o777 == 0o600


def test_bootstrap_runs_when_the_repository_is_missing(ctx, make_state):
    state = make_state()
    ctx.run(ctx.on.pebble_ready(state.get_container("registry")), state)
    commands = [e.command for e in ctx.exec_history["registry"]]
    assert any(c[:2] == ["/bin/sh", "-c"] and "dvc" in c[2] for c in commands)


def test_nothing_is_run_or_restarted_when_nothing_changed(ctx, make_state, data_dir: Path):
    state = make_state()
    first = ctx.run(ctx.on.pebble_ready(state.get_container("registry")), state)
    (data_dir / "git" / "registry.git").mkdir(parents=True)
    (data_dir / "git" / "registry.git" / "HEAD").write_text("ref: refs/heads/main\n")
    ctx.exec_history.clear()
    second = ctx.run(ctx.on.config_changed(), first)
    assert ctx.exec_history.get("registry", []) == []
    assert second.get_container("registry").plan == first.get_container("registry").plan


def test_pebble_ready_publishes_the_latest_existing_version(ctx, make_state):
    state = make_state(execs=[dataset_exec("list-versions", versions_output("v1", "v2"))])
    out = ctx.run(ctx.on.pebble_ready(state.get_container("registry")), state)
    assert out.unit_status == testing.ActiveStatus("latest v2")


def test_without_versions_the_status_says_so(ctx, make_state):
    state = make_state()
    out = ctx.run(ctx.on.pebble_ready(state.get_container("registry")), state)
    assert out.unit_status == testing.ActiveStatus("no versions yet")


def test_waiting_for_pebble(ctx, make_state, make_container):
    state = make_state(container=make_container(can_connect=False))
    out = ctx.run(ctx.on.config_changed(), state)
    assert out.unit_status == testing.WaitingStatus("waiting for Pebble in the registry container")


def test_bad_bucket_blocks_and_names_the_option(ctx, make_state):
    state = make_state(config={"bucket": "Not_A_Bucket"})
    out = ctx.run(ctx.on.config_changed(), state)
    assert out.unit_status == testing.BlockedStatus(
        "invalid config: bucket: must be 3-63 lowercase letters, digits or '-'"
    )
    assert out.get_container("registry").plan.services == {}


def test_bad_approach_blocks(ctx, make_state):
    state = make_state(config={"approach": "both"})
    out = ctx.run(ctx.on.config_changed(), state)
    assert isinstance(out.unit_status, testing.BlockedStatus)
    assert "approach" in out.unit_status.message


def test_failed_bootstrap_blocks_with_its_reason(ctx, make_state, make_container):
    failing = testing.Exec(["/bin/sh", "-c"], return_code=1, stderr="fatal: disk full\n")
    container = make_container(failing)
    state = make_state(container=container)
    out = ctx.run(ctx.on.pebble_ready(container), state)
    assert out.unit_status == testing.BlockedStatus("bootstrap failed: fatal: disk full")
    assert out.get_container("registry").plan.services == {}


def test_more_than_one_unit_is_blocked(ctx, make_state):
    state = make_state(planned_units=2)
    out = ctx.run(ctx.on.config_changed(), state)
    assert out.unit_status == testing.BlockedStatus(
        "scale to 1 unit: the registry's git server is a single writer"
    )


def test_leader_creates_the_writer_secret(ctx, make_container, peers):
    state = testing.State(leader=True, containers={make_container()}, relations={peers})
    out = ctx.run(ctx.on.pebble_ready(state.get_container("registry")), state)
    secret = out.get_secret(label="registry-writer")
    assert secret.tracked_content["username"] == "registry"
    assert len(secret.tracked_content["password"]) == 32


def test_non_leader_waits_for_the_secret(ctx, make_container, peers):
    state = testing.State(leader=False, containers={make_container()}, relations={peers})
    out = ctx.run(ctx.on.pebble_ready(state.get_container("registry")), state)
    assert out.unit_status == testing.WaitingStatus("waiting for the leader to create the secrets")


def test_ports_are_opened(ctx, make_state):
    state = make_state()
    out = ctx.run(ctx.on.pebble_ready(state.get_container("registry")), state)
    assert {p.port for p in out.opened_ports} == {8080, 9000, 9001}


def test_ports_come_from_config(ctx, make_state, data_dir: Path):
    state = make_state(config={"git-port": 18080, "s3-port": 19000})
    out = ctx.run(ctx.on.pebble_ready(state.get_container("registry")), state)
    assert {p.port for p in out.opened_ports} == {18080, 19000, 19001}
    plan = out.get_container("registry").plan
    assert plan.checks["git-http-ready"].to_dict()["http"]["url"].endswith(":18080/healthz")
    assert "--addr :19000" in plan.services["s3"].command
    assert "--addr 127.0.0.1:19002" in plan.services["s3-read-only"].command
    conf = (data_dir / "conf" / "httpd.conf").read_text()
    assert "Listen 18080" in conf and "Listen 19001" in conf


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"git-port": 80}, "git-port: must be between 1024 and 65535"),
        ({"s3-port": 65534}, "s3-port: must be between 1024 and 65533"),
        ({"git-port": 9002}, "git-port: must not be s3-port, s3-port + 1 or s3-port + 2"),
    ],
)
def test_bad_ports_block(ctx, make_state, config, problem):
    out = ctx.run(ctx.on.config_changed(), make_state(config=config))
    assert out.unit_status == testing.BlockedStatus(f"invalid config: {problem}")
    assert out.get_container("registry").plan.services == {}


def test_hook_records_notices_for_the_charm(ctx, make_state, data_dir: Path):
    state = make_state()
    ctx.run(ctx.on.pebble_ready(state.get_container("registry")), state)
    hook = (data_dir / "conf" / "post-receive").read_text()
    assert f"notify {registry.NOTICE_KEY}" in hook
    assert "/charm/container/pebble.socket" in hook
