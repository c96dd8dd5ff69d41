"""The goal state one reconcile produces: the layer, the files, the bootstrap, ports, secrets.

And that reconciling again changes nothing: no replan, no restart, no exec, no bcrypt.
"""

from __future__ import annotations

import dataclasses
import stat
from pathlib import Path

import pytest
from ops import pebble, testing
from registry_testing import (
    BOOTSTRAP_COMMAND,
    HOST,
    S3_KEYS,
    SERVICES,
    STATE_DIR,
    WRITER_KEYS,
    WRITER_PASSWORD,
    bootstrap_exec,
    bootstrap_runs,
    consumer_relation,
    consumer_secret,
    integrator_2,
    peer_data,
    push_tags,
    with_container,
)

import charm
import registry_layer
from mlops_charms import jobs, registry, registry_server
from tests.provider_data import approach_relation

# --- every observed event reconciles -------------------------------------------------------------


def _container_event(name):
    def build(ctx, state):
        return getattr(ctx.on, name)(state.get_container(charm.CONTAINER)), state

    return build


def _check_event(name, status):
    def build(ctx, state):
        info = testing.CheckInfo(
            registry_layer.GIT_READY_CHECK, level=pebble.CheckLevel.READY, status=status
        )
        container = state.get_container(charm.CONTAINER)
        layers = dict(container.layers)
        if registry_layer.GIT_READY_CHECK not in container.plan.checks:
            # Planned by an earlier hook (an earlier charm revision): the check exists.
            layer: pebble.LayerDict = {
                "checks": {
                    registry_layer.GIT_READY_CHECK: {
                        "override": "replace",
                        "level": "ready",
                        "http": {"url": "http://127.0.0.1:8080/healthz"},
                    }
                }
            }
            layers["registry"] = pebble.Layer(layer)
        state = with_container(state, check_infos={info}, layers=layers)
        return getattr(ctx.on, name)(state.get_container(charm.CONTAINER), info), state

    return build


def _relation_event(name, make_relation):
    def build(ctx, state):
        relation = make_relation()
        state = dataclasses.replace(state, relations={*state.relations, relation})
        return getattr(ctx.on, name)(relation), state

    return build


def _approach_relation():
    return approach_relation("data-centric", 1, annotator_overlap=2)


def _s3_event(name):
    def build(ctx, state):
        relation, keys = integrator_2()
        state = dataclasses.replace(
            state, relations={*state.relations, relation}, secrets={*state.secrets, keys}
        )
        event = ctx.on.secret_changed(keys) if name == "secret_changed" else None
        return event or getattr(ctx.on, name)(relation), state

    return build


def _notice_event(key, **data):
    def build(ctx, state):
        notice = testing.Notice(key, last_data=data)
        state = with_container(state, notices=[notice])
        return ctx.on.pebble_custom_notice(state.get_container(charm.CONTAINER), notice), state

    return build


def _simple(name):
    def build(ctx, state):
        return getattr(ctx.on, name)(), state

    return build


def _storage_attached(ctx, state):
    return ctx.on.storage_attached(next(iter(state.storages))), state


def _peer_changed(ctx, state):
    return ctx.on.relation_changed(
        state.get_relations(registry_server.PEERS)[0], remote_unit=1
    ), state


OBSERVED_EVENTS = {
    "config-changed": _simple("config_changed"),
    "upgrade-charm": _simple("upgrade_charm"),
    "leader-elected": _simple("leader_elected"),
    "update-status": _simple("update_status"),
    "pebble-ready": _container_event("pebble_ready"),
    "pebble-check-failed": _check_event("pebble_check_failed", pebble.CheckStatus.DOWN),
    "pebble-check-recovered": _check_event("pebble_check_recovered", pebble.CheckStatus.UP),
    "storage-attached": _storage_attached,
    "peers-relation-changed": _peer_changed,
    "consumer-relation-joined": _relation_event("relation_joined", consumer_relation),
    "consumer-relation-changed": _relation_event("relation_changed", consumer_relation),
    "consumer-relation-broken": _relation_event("relation_broken", consumer_relation),
    "approach-relation-created": _relation_event("relation_created", _approach_relation),
    "approach-relation-changed": _relation_event("relation_changed", _approach_relation),
    "approach-relation-broken": _relation_event("relation_broken", _approach_relation),
    "s3-relation-changed": _s3_event("relation_changed"),
    "s3-relation-broken": _s3_event("relation_broken"),
    "s3-secret-changed": _s3_event("secret_changed"),
    "tags-pushed-notice": _notice_event(registry.NOTICE_KEY, tags="v1"),
    "job-finished-notice": _notice_event(jobs.NOTICE_KEY, job="20250101000000-0001"),
}


@pytest.mark.parametrize("build", OBSERVED_EVENTS.values(), ids=OBSERVED_EVENTS.keys())
def test_every_observed_event_brings_the_registry_up(ctx, make_state, data_dir: Path, build):
    event, state = build(ctx, make_state())
    out = ctx.run(event, state)
    container = out.get_container(charm.CONTAINER)
    assert SERVICES <= set(container.plan.services)  # and a job, for a new s3 relation
    assert {container.service_statuses[name] for name in SERVICES} == {pebble.ServiceStatus.ACTIVE}
    assert (data_dir / "conf" / "bootstrap.done").exists()
    assert {p.port for p in out.opened_ports} == {8080, 9000, 9102}


@pytest.fixture
def settled(ctx, deployed) -> testing.State:
    """A registry with a consumer that two hooks have brought to its goal state."""
    consumer = consumer_relation()
    state = deployed(relations=[consumer])
    state = ctx.run(ctx.on.update_status(), state)
    ctx.exec_history.clear()
    return state


def _consumer_changed(ctx, state):
    return ctx.on.relation_changed(state.get_relations(registry_server.DATASET_ENDPOINT)[0]), state


# Events that change nothing on a settled registry (the others add or remove a relation).
NO_OP_EVENTS = {
    **{
        name: build
        for name, build in OBSERVED_EVENTS.items()
        if not name.startswith(("s3-", "consumer-", "approach-"))
    },
    "consumer-relation-changed": _consumer_changed,
}


@pytest.mark.parametrize("build", NO_OP_EVENTS.values(), ids=NO_OP_EVENTS.keys())
def test_a_hook_that_changes_nothing_replans_restarts_and_runs_nothing(
    ctx, settled, service_changes, bcrypt_runs, pushes, build
):
    event, state = build(ctx, settled)
    for recorded in (service_changes, bcrypt_runs, pushes):
        recorded.clear()  # what settling did
    out = ctx.run(event, state)
    assert service_changes == []
    assert ctx.exec_history.get(charm.CONTAINER, []) == []
    assert bcrypt_runs == []
    assert pushes == []
    assert out.get_container(charm.CONTAINER).plan == settled.get_container(charm.CONTAINER).plan
    assert out.unit_status == testing.ActiveStatus("no versions yet")


# --- the layer -----------------------------------------------------------------------------------


def test_pebble_ready_runs_apache_and_both_s3_servers_as_the_service_user(ctx, deployed):
    plan = deployed().get_container(charm.CONTAINER).plan
    assert set(plan.services) == SERVICES
    assert {(s.user, s.group, s.startup) for s in plan.services.values()} == {
        ("_daemon_", "_daemon_", "enabled")
    }
    assert set(plan.checks) == {"git-http-ready", "s3-ready", "s3-read-only-ready"}
    assert plan.checks["git-http-ready"].http == {"url": "http://127.0.0.1:8080/healthz"}


def test_the_s3_servers_serve_the_units_storage_on_loopback(ctx, deployed):
    services = deployed().get_container(charm.CONTAINER).plan.services
    write, read = services["s3"].command, services["s3-read-only"].command
    assert f"rclone serve s3 {STATE_DIR}/s3 --addr 127.0.0.1:9001" in write
    assert f"rclone serve s3 {STATE_DIR}/s3 --addr 127.0.0.1:9002" in read
    assert "--read-only" in read and "--read-only" not in write
    assert "front:" not in write + read


def test_no_password_or_key_appears_in_the_plan(ctx, deployed):
    consumer = consumer_relation("write")
    relation, keys = integrator_2()
    state = deployed(relations=[consumer, relation], secrets=[keys])
    plan_text = str(state.get_container(charm.CONTAINER).plan.to_dict())
    credentials = consumer_secret(state, consumer)
    secrets = [WRITER_PASSWORD, *WRITER_KEYS.values(), *S3_KEYS.values()]
    secrets += [credentials["password"], credentials["access-key"], credentials["secret-key"]]
    assert [s for s in secrets if s in plan_text] == []


def test_passwords_are_stored_as_bcrypt_hashes_and_keys_in_a_private_file(ctx, deployed, data_dir):
    deployed()
    conf = data_dir / "conf"
    htpasswd = (conf / "htpasswd").read_text()
    assert htpasswd.startswith("registry:$2y$08$")
    assert WRITER_PASSWORD not in htpasswd
    assert stat.S_IMODE((conf / "htpasswd").stat().st_mode) == 0o640
    assert WRITER_KEYS["secret-key"] in (conf / "s3.env").read_text()
    assert stat.S_IMODE((conf / "s3.env").stat().st_mode) == 0o600
    for name in ("httpd.conf", "htgroup", "bootstrap.sh", "hooks/post-receive"):
        text = (conf / name).read_text()
        assert WRITER_PASSWORD not in text and WRITER_KEYS["secret-key"] not in text, name


def test_the_git_hooks_tell_the_charm_of_tags_and_keep_them_immutable(ctx, deployed, data_dir):
    deployed()
    post_receive = (data_dir / "conf" / "hooks" / "post-receive").read_text()
    assert f"/charm/bin/pebble notify {registry.NOTICE_KEY}" in post_receive
    assert "PEBBLE_SOCKET=/charm/container/pebble.socket" in post_receive
    assert stat.S_IMODE((data_dir / "conf" / "hooks" / "post-receive").stat().st_mode) == 0o755
    assert "versions are immutable" in (data_dir / "conf" / "hooks" / "update").read_text()


def test_the_folders_the_services_write_exist(ctx, deployed, data_dir):
    deployed()
    for folder in ("conf/htdocs", "git", "run", "s3/dvc", "workspace", "jobs", "home"):
        assert (data_dir / folder).is_dir(), folder


# --- the bootstrap -------------------------------------------------------------------------------


def test_bootstrap_runs_the_pushed_script_as_the_service_user(ctx, make_state, data_dir):
    state = make_state()
    ctx.run(ctx.on.pebble_ready(state.get_container(charm.CONTAINER)), state)
    [run] = bootstrap_runs(ctx)
    assert tuple(run.command) == BOOTSTRAP_COMMAND
    assert (run.user, run.group, run.working_dir) == ("_daemon_", "_daemon_", STATE_DIR)
    assert run.environment["HOME"] == f"{STATE_DIR}/home"
    script = (data_dir / "conf" / "bootstrap.sh").read_text()
    assert f"repo={STATE_DIR}/git/registry.git" in script
    assert f"endpointurl http://{HOST}:9000" in script


def test_bootstrap_runs_until_it_succeeded_once_for_its_script(ctx, deployed, data_dir):
    state = deployed()
    done = (data_dir / "conf" / "bootstrap.done").read_text()
    ctx.run(ctx.on.update_status(), state)
    assert bootstrap_runs(ctx) == []
    assert (data_dir / "conf" / "bootstrap.done").read_text() == done


def test_bootstrap_runs_again_when_its_script_changes(ctx, deployed, data_dir):
    state = deployed()
    state = dataclasses.replace(state, config={"public-host": "registry.example.com"})
    ctx.run(ctx.on.config_changed(), state)
    assert len(bootstrap_runs(ctx)) == 1
    script = (data_dir / "conf" / "bootstrap.sh").read_text()
    assert "endpointurl http://registry.example.com:9000" in script


def test_failed_bootstrap_blocks_and_is_retried_by_the_next_hook(
    ctx, make_state, make_container, data_dir
):
    failing = make_container(bootstrap_exec(fail="fatal: cannot mkdir: No space left on device"))
    out = ctx.run(ctx.on.pebble_ready(failing), make_state(container=failing))
    # The servers still run (what the repository holds stays readable); the status says why.
    assert set(out.get_container(charm.CONTAINER).plan.services) == SERVICES
    assert out.unit_status == testing.BlockedStatus(
        "registry bootstrap failed: fatal: cannot mkdir: No space left on device"
    )
    assert not (data_dir / "conf" / "bootstrap.done").exists()
    assert (
        peer_data(out)[registry_server.BOOTSTRAP_ERROR_KEY]
        == "fatal: cannot mkdir: No space left on device"
    )

    fixed = with_container(out, execs={bootstrap_exec()})
    again = ctx.run(ctx.on.update_status(), fixed)
    assert len(bootstrap_runs(ctx)) == 2
    assert registry_server.BOOTSTRAP_ERROR_KEY not in peer_data(again)
    assert set(again.get_container(charm.CONTAINER).plan.services) == SERVICES
    assert again.unit_status == testing.ActiveStatus("no versions yet")


def test_a_non_leader_serves_but_leaves_the_bootstrap_to_the_leader(ctx, make_state):
    state = make_state(leader=False)
    out = ctx.run(ctx.on.pebble_ready(state.get_container(charm.CONTAINER)), state)
    assert set(out.get_container(charm.CONTAINER).plan.services) == SERVICES
    assert bootstrap_runs(ctx) == []


def test_a_non_leader_of_a_scaled_application_runs_nothing(ctx, make_state):
    state = make_state(leader=False, planned_units=2)
    out = ctx.run(ctx.on.pebble_ready(state.get_container(charm.CONTAINER)), state)
    assert out.get_container(charm.CONTAINER).plan.services == {}
    assert out.opened_ports == frozenset()


def test_nothing_happens_before_pebble_is_ready(ctx, make_state, make_container, data_dir):
    out = ctx.run(ctx.on.config_changed(), make_state(container=make_container(can_connect=False)))
    assert out.opened_ports == frozenset()
    assert list(data_dir.iterdir()) == []


# --- changes -------------------------------------------------------------------------------------


def test_new_ports_restart_every_service_and_reopen(ctx, deployed, data_dir, service_changes):
    state = deployed()
    service_changes.clear()
    state = dataclasses.replace(state, config={"git-port": 18080, "s3-port": 19000})
    out = ctx.run(ctx.on.config_changed(), state)
    assert {p.port for p in out.opened_ports} == {18080, 19000, 9102}
    plan = out.get_container(charm.CONTAINER).plan
    assert plan.checks["git-http-ready"].http == {"url": "http://127.0.0.1:18080/healthz"}
    assert "--addr 127.0.0.1:19001" in plan.services["s3"].command
    conf = (data_dir / "conf" / "httpd.conf").read_text()
    assert "Listen 18080" in conf and "Listen 19000" in conf
    # Apache's command is unchanged: only a restart makes it read its new configuration.
    assert service_changes == ["restart"]


def test_the_ports_opened_are_git_port_s3_port_and_metrics_port_only(ctx, deployed):
    # s3-port + 1 and + 2 are the S3 servers' loopback ports: never opened.
    assert deployed().opened_ports == {
        testing.TCPPort(8080),
        testing.TCPPort(9000),
        testing.TCPPort(9102),
    }


def test_a_new_consumer_restarts_the_services_to_load_its_keys(
    ctx, deployed, service_changes, bcrypt_runs
):
    state = deployed()
    service_changes.clear()
    bcrypt_runs.clear()
    consumer = consumer_relation()
    state = dataclasses.replace(state, relations={*state.relations, consumer})
    ctx.run(ctx.on.relation_changed(consumer), state)
    assert service_changes == ["restart"]
    assert bcrypt_runs == [2]  # the writer and the consumer


def test_bcrypt_runs_only_when_the_users_change(ctx, make_state, bcrypt_runs):
    state = make_state()
    state = ctx.run(ctx.on.pebble_ready(state.get_container(charm.CONTAINER)), state)
    state = ctx.run(ctx.on.config_changed(), state)
    assert bcrypt_runs == [1]


def test_bad_config_leaves_the_running_registry_as_it_was(ctx, deployed, service_changes):
    state = deployed()
    service_changes.clear()
    bad = dataclasses.replace(state, config={"git-port": 80})
    out = ctx.run(ctx.on.config_changed(), bad)
    assert service_changes == []
    assert out.get_container(charm.CONTAINER).plan == state.get_container(charm.CONTAINER).plan
    assert out.opened_ports == state.opened_ports


# --- the registry's own user ---------------------------------------------------------------------


def test_the_leader_creates_the_writer_with_its_own_s3_keys(ctx, make_container, data_dir):
    state = testing.State(
        leader=True,
        containers={make_container()},
        relations={testing.PeerRelation(registry_server.PEERS)},
        model=testing.Model(name="mlops"),
    )
    out = ctx.run(ctx.on.pebble_ready(state.get_container(charm.CONTAINER)), state)
    content = out.get_secret(label=registry_server.REGISTRY_SECRET).tracked_content
    assert content["username"] == "registry"
    assert len(content["password"]) == 32
    assert content["access-key"].startswith("mlops") and len(content["secret-key"]) == 40
    assert content["access-key"] != content["password"] != content["secret-key"]
    assert (
        f'"{content["access-key"]},{content["secret-key"]}"'
        in (data_dir / "conf" / "s3.env").read_text()
    )


def test_a_writer_secret_from_before_s3_keys_gains_keys_and_keeps_its_password(
    ctx, make_state, data_dir
):
    old = testing.Secret(
        {"username": "registry", "password": WRITER_PASSWORD},
        label=registry_server.REGISTRY_SECRET,
        owner="app",
    )
    state = dataclasses.replace(make_state(), secrets={old})
    out = ctx.run(ctx.on.upgrade_charm(), state)
    content = out.get_secret(label=registry_server.REGISTRY_SECRET).latest_content or {}
    assert content["password"] == WRITER_PASSWORD
    assert content["access-key"].startswith("mlops")
    assert content["secret-key"] not in (WRITER_PASSWORD, "")
    assert content["secret-key"] in (data_dir / "conf" / "s3.env").read_text()


def test_secret_remove_removes_the_revision_no_consumer_tracks(ctx, make_state):
    old = testing.Secret(
        {"username": "registry", "password": WRITER_PASSWORD},
        label=registry_server.REGISTRY_SECRET,
        owner="app",
    )
    state = dataclasses.replace(make_state(), secrets={old})
    upgraded = ctx.run(ctx.on.upgrade_charm(), state)  # its S3 keys: revision 2
    secret = upgraded.get_secret(label=registry_server.REGISTRY_SECRET)
    ctx.run(ctx.on.secret_remove(secret, revision=1), upgraded)
    assert ctx.removed_secret_revisions == [1]


def test_a_registry_without_its_peer_relation_yet_still_comes_up(ctx, make_container):
    state = testing.State(leader=True, containers={make_container()})
    out = ctx.run(ctx.on.pebble_ready(state.get_container(charm.CONTAINER)), state)
    assert set(out.get_container(charm.CONTAINER).plan.services) == SERVICES
    assert out.unit_status == testing.ActiveStatus("no versions yet")


def test_a_reconcile_reads_tags_from_files_not_by_running_git(ctx, deployed, data_dir):
    state = deployed(peer_data={registry_server.LATEST_KEY: "v2"})
    push_tags(data_dir, "v1", "v2")
    ctx.run(ctx.on.update_status(), state)
    assert ctx.exec_history.get(charm.CONTAINER, []) == []
