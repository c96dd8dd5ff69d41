"""The goal state one reconcile produces: the Pebble plan, the files, the admin secret.

And that reconciling again changes nothing: no replan, no restart, unless something changed.
"""

from __future__ import annotations

import dataclasses
import shlex
import stat
import subprocess

import ops
import pytest
from ops import pebble, testing

from mlops_charms import mlflow as mlflow_core
from tests.provider_data import approach_relation
from tests.tracking_testing import (
    ADMIN_PASSWORD,
    AUTH_CONFIG,
    FLASK_SECRET_KEY,
    READY_NOTICE,
    SECRETS_ENV,
    allowed_hosts,
    consumer_relation,
    database_relation,
    database_secret,
    environment,
    ingress_relation,
    option,
    s3_relation,
    s3_secret,
    secret_by_label,
    server_args,
    service_script,
    stored,
)

# --- every observed event reconciles -----------------------------------------------------

# What an earlier charm revision planned: every reconcile replaces it with the current layer.
OUTDATED_LAYER = pebble.Layer(
    {
        "services": {
            "mlflow": {
                "override": "replace",
                "command": f"/bin/sh -c '. {SECRETS_ENV} && exec mlflow server --port 5000'",
                "startup": "enabled",
            }
        },
        "checks": {
            "mlflow-ready": {
                "override": "replace",
                "level": "ready",
                "http": {"url": "http://localhost:5000/health"},
            }
        },
    }
)


def _simple(name):
    def build(ctx, make_state, container):
        return getattr(ctx.on, name)(), make_state(containers={container})

    return build


def _pebble_ready(ctx, make_state, container):
    return ctx.on.pebble_ready(container), make_state(containers={container})


def _check_event(name, status):
    def build(ctx, make_state, container):
        info = testing.CheckInfo("mlflow-ready", level=pebble.CheckLevel.READY, status=status)
        container = dataclasses.replace(container, check_infos={info})
        return getattr(ctx.on, name)(container, info), make_state(containers={container})

    return build


def _storage_attached(ctx, make_state, container):
    storage = testing.Storage("mlflow-data")
    return ctx.on.storage_attached(storage), make_state(containers={container}, storages={storage})


def _relation_event(kind, build_relation, *build_secrets):
    def build(ctx, make_state, container):
        secrets = [make() for make in build_secrets]
        relation = build_relation(*secrets)
        event = getattr(ctx.on, f"relation_{kind}")(relation)
        return event, make_state(containers={container}, relations={relation}, secrets=secrets)

    return build


def _custom_notice(ctx, make_state, container):
    notice = testing.Notice(READY_NOTICE)
    container = dataclasses.replace(container, notices=[notice])
    return ctx.on.pebble_custom_notice(container, notice), make_state(containers={container})


def _secret_changed(ctx, make_state, container):
    secret = database_secret()
    relation = database_relation(secret)
    state = make_state(containers={container}, relations={relation}, secrets={secret})
    return ctx.on.secret_changed(secret), state


OBSERVED_EVENTS = {
    "config-changed": _simple("config_changed"),
    "upgrade-charm": _simple("upgrade_charm"),
    "leader-elected": _simple("leader_elected"),
    "update-status": _simple("update_status"),
    "mlflow-pebble-ready": _pebble_ready,
    "mlflow-pebble-check-failed": _check_event("pebble_check_failed", pebble.CheckStatus.DOWN),
    "mlflow-pebble-check-recovered": _check_event("pebble_check_recovered", pebble.CheckStatus.UP),
    "mlflow-pebble-custom-notice": _custom_notice,
    "mlflow-data-storage-attached": _storage_attached,
    "mlops-tracking-relation-joined": _relation_event("joined", consumer_relation),
    "mlops-tracking-relation-changed": _relation_event("changed", consumer_relation),
    "mlops-tracking-relation-broken": _relation_event("broken", consumer_relation),
    "ingress-relation-joined": _relation_event("joined", ingress_relation),
    "ingress-relation-changed": _relation_event("changed", ingress_relation),
    "ingress-relation-broken": _relation_event("broken", ingress_relation),
    "database-relation-changed": _relation_event("changed", database_relation, database_secret),
    "database-relation-broken": _relation_event("broken", database_relation, database_secret),
    "s3-credentials-relation-changed": _relation_event("changed", s3_relation, s3_secret),
    "s3-credentials-relation-broken": _relation_event("broken", s3_relation, s3_secret),
    "mlops-approach-relation-created": _relation_event("created", approach_relation),
    "mlops-approach-relation-changed": _relation_event("changed", approach_relation),
    "mlops-approach-relation-broken": _relation_event("broken", approach_relation),
    "secret-changed": _secret_changed,
}


@pytest.mark.parametrize("build", OBSERVED_EVENTS.values(), ids=OBSERVED_EVENTS.keys())
def test_every_observed_event_brings_the_plan_up_to_date(ctx, make_state, container, build):
    outdated = dataclasses.replace(container, layers={"mlflow": OUTDATED_LAYER})
    event, state_in = build(ctx, make_state, outdated)

    state_out = ctx.run(event, state_in)

    assert "--backend-store-uri" in server_args(state_out)


# --- the plan ----------------------------------------------------------------------------


@pytest.fixture
def planned(ctx, make_state) -> testing.State:
    """The state after one reconcile with the default config and no relations."""
    return ctx.run(ctx.on.config_changed(), make_state())


def test_mlflow_exposes_prometheus_metrics_from_an_emptied_folder(planned):
    metrics_dir = option(server_args(planned), "--expose-prometheus")
    assert metrics_dir == "/var/lib/mlflow/prometheus"
    # The previous run's multiprocess files go before MLflow starts.
    assert f"rm -rf -- {metrics_dir} && " in service_script(planned)


def test_metrics_exporter_service_serves_that_folder_on_the_metrics_port(ctx, make_state):
    state_out = ctx.run(ctx.on.config_changed(), make_state(config={"metrics-port": 9300}))
    service = state_out.get_container("mlflow").plan.services["mlflow-metrics"]
    assert shlex.split(service.command) == [
        "python3",
        "/var/lib/mlflow/metrics_exporter.py",
        "/var/lib/mlflow/prometheus",
        "9300",
        "http://localhost:5000/health",
        "/var/lib/mlflow",
    ]
    assert service.startup == "enabled"
    assert not service.environment  # nothing secret, nothing from secrets.env


def test_metrics_exporter_script_is_pushed_to_the_storage(planned, data_dir):
    script = stored(data_dir, "/var/lib/mlflow/metrics_exporter.py").read_text()
    assert script == mlflow_core.METRICS_EXPORTER


def test_backend_store_defaults_to_sqlite_on_the_storage(planned):
    assert (
        option(server_args(planned), "--backend-store-uri")
        == "sqlite:////var/lib/mlflow/mlflow.db"
    )


def test_artifacts_default_to_the_storage_served_by_the_server(planned):
    args = server_args(planned)
    assert "--serve-artifacts" in args
    assert option(args, "--artifacts-destination") == "/var/lib/mlflow/artifacts"


def test_server_runs_the_basic_auth_app_with_the_charms_auth_config(planned):
    assert option(server_args(planned), "--app-name") == "basic-auth"
    assert environment(planned)["MLFLOW_AUTH_CONFIG_PATH"] == AUTH_CONFIG


def test_server_listens_on_every_interface_on_port_5000_by_default(planned):
    args = server_args(planned)
    assert (option(args, "--host"), option(args, "--port")) == ("0.0.0.0", "5000")  # noqa: S104


def test_server_runs_one_worker_by_default(planned):
    assert option(server_args(planned), "--workers") == "1"


def test_workers_option_sets_the_server_workers(ctx, make_state):
    state_out = ctx.run(ctx.on.config_changed(), make_state(config={"workers": 4}))
    assert option(server_args(state_out), "--workers") == "4"


def test_job_execution_is_off_by_default(planned):
    assert environment(planned)["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"


def test_enable_job_execution_turns_background_jobs_on(ctx, make_state):
    state_out = ctx.run(ctx.on.config_changed(), make_state(config={"enable-job-execution": True}))
    assert environment(state_out)["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "true"


def test_port_option_moves_the_server_its_ready_check_and_the_opened_port(ctx, make_state):
    state_out = ctx.run(ctx.on.config_changed(), make_state(config={"port": 8080}))

    check = state_out.get_container("mlflow").plan.checks["mlflow-ready"]
    assert option(server_args(state_out), "--port") == "8080"
    assert check.http == {"url": "http://localhost:8080/health"}
    assert state_out.opened_ports == {testing.TCPPort(8080), testing.TCPPort(9101)}


def test_ready_check_probes_health_at_ready_level(planned):
    check = planned.get_container("mlflow").plan.checks["mlflow-ready"]
    assert check.level == pebble.CheckLevel.READY
    assert check.http == {"url": "http://localhost:5000/health"}


def test_service_starts_with_the_container(planned):
    assert planned.get_container("mlflow").plan.services["mlflow"].startup == "enabled"
    assert (
        planned.get_container("mlflow").service_statuses["mlflow"] == pebble.ServiceStatus.ACTIVE
    )


@pytest.mark.parametrize(
    "host",
    [
        "tracking-k8s",
        "tracking-k8s:*",
        "tracking-k8s.mlops",
        "tracking-k8s.mlops.svc",
        "tracking-k8s.mlops.svc.cluster.local",
        "tracking-k8s.mlops.svc.cluster.local:*",
        "localhost:*",
    ],
)
def test_allowed_hosts_contain_the_in_cluster_service_names(planned, host):
    assert host in allowed_hosts(planned)


def test_allowed_hosts_option_adds_its_hosts(ctx, make_state):
    config = {"allowed-hosts": "mlflow.example.org, *.elb.example.net"}
    state_out = ctx.run(ctx.on.config_changed(), make_state(config=config))
    assert {"mlflow.example.org", "*.elb.example.net"} <= set(allowed_hosts(state_out))


# --- files and secrets -------------------------------------------------------------------


def test_service_sources_the_secrets_file_before_starting_mlflow(planned):
    script = service_script(planned)
    assert script.startswith(f". {SECRETS_ENV} && ")
    assert script.index(SECRETS_ENV) < script.index(" && exec mlflow server ")


def test_service_command_is_valid_shell(planned):
    checked = subprocess.run(
        ["/bin/sh", "-n", "-c", service_script(planned)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr


def test_service_records_the_ready_notice_once_health_answers(planned):
    script = service_script(planned)
    watcher = script[: script.index(" && exec mlflow server ")]
    assert f"/charm/bin/pebble notify {READY_NOTICE}" in watcher
    assert watcher.index("http://localhost:5000/health") < watcher.index("pebble notify")


def test_ready_watcher_runs_in_the_background_so_mlflow_starts_at_once(planned):
    script = service_script(planned)
    watcher_end = script.index(" && exec mlflow server ")
    assert script[:watcher_end].endswith(" & }")


def test_ready_watcher_follows_the_port_option(ctx, make_state):
    state_out = ctx.run(ctx.on.config_changed(), make_state(config={"port": 8080}))
    assert "http://localhost:8080/health" in service_script(state_out)
    assert "http://localhost:5000/health" not in service_script(state_out)


def test_server_sends_no_usage_telemetry(planned):
    env = environment(planned)
    assert (env["MLFLOW_DISABLE_TELEMETRY"], env["DO_NOT_TRACK"]) == ("true", "1")


def test_secrets_env_holds_the_admin_password_and_flask_key(planned, data_dir):
    secrets_env = stored(data_dir, SECRETS_ENV).read_text()
    assert f"export MLFLOW_AUTH_ADMIN_PASSWORD={ADMIN_PASSWORD}\n" in secrets_env
    assert f"export MLFLOW_FLASK_SERVER_SECRET_KEY={FLASK_SECRET_KEY}\n" in secrets_env


@pytest.mark.parametrize("path", [SECRETS_ENV, AUTH_CONFIG])
def test_files_the_server_reads_are_pushed_with_mode_0600(planned, data_dir, path):
    assert stat.S_IMODE(stored(data_dir, path).stat().st_mode) == 0o600


def test_plan_holds_no_secret(planned):
    plan = planned.get_container("mlflow").plan.to_yaml()
    assert ADMIN_PASSWORD not in plan
    assert FLASK_SECRET_KEY not in plan


def test_auth_config_keeps_users_in_sqlite_on_the_storage(planned, data_dir):
    auth_config = stored(data_dir, AUTH_CONFIG).read_text()
    assert "database_uri = sqlite:////var/lib/mlflow/basic_auth.db\n" in auth_config
    assert "admin_username = admin\n" in auth_config
    # Verified passwords are cached: MLflow's default re-hashes the password on every request.
    assert "auth_cache_ttl_seconds = 60\n" in auth_config


def test_default_permission_option_reaches_the_auth_config(ctx, make_state, data_dir):
    ctx.run(ctx.on.config_changed(), make_state(config={"default-permission": "NO_PERMISSIONS"}))
    assert "default_permission = NO_PERMISSIONS\n" in stored(data_dir, AUTH_CONFIG).read_text()


def test_leader_creates_the_admin_secret_on_first_reconcile(ctx, make_state, data_dir):
    state_out = ctx.run(ctx.on.config_changed(), make_state(admin_secret_exists=False))

    secret = secret_by_label(state_out, "mlflow-server")
    password = secret.latest_content["admin-password"]
    assert secret.owner == "app"
    assert len(password) >= 32 and len(secret.latest_content["flask-secret-key"]) >= 32
    assert f"MLFLOW_AUTH_ADMIN_PASSWORD={password}\n" in stored(data_dir, SECRETS_ENV).read_text()


def test_leader_keeps_the_existing_admin_secret(ctx, make_state, admin_secret):
    state_out = ctx.run(ctx.on.config_changed(), make_state())
    assert (
        secret_by_label(state_out, "mlflow-server").latest_content == admin_secret.latest_content
    )


def test_non_leader_runs_the_server_with_the_leaders_admin_secret(ctx, make_state, data_dir):
    state_out = ctx.run(ctx.on.config_changed(), make_state(leader=False))
    assert "mlflow" in state_out.get_container("mlflow").plan.services
    assert (
        f"MLFLOW_AUTH_ADMIN_PASSWORD={ADMIN_PASSWORD}\n"
        in stored(data_dir, SECRETS_ENV).read_text()
    )


def test_unreadable_admin_secret_fails_the_hook_and_mints_no_new_one(ctx, make_state, monkeypatch):
    # A new admin password would lock the charm out: MLflow keeps the first one it read.
    def unreadable(self, *, id=None, label=None):
        raise ops.ModelError("ERROR cannot read secret: connection reset by peer")

    added = []
    monkeypatch.setattr(ops.Model, "get_secret", unreadable)
    monkeypatch.setattr(ops.Application, "add_secret", lambda self, content, **_: added.append(1))

    with pytest.raises(testing.errors.UncaughtCharmError) as failed:
        ctx.run(ctx.on.config_changed(), make_state())

    assert type(failed.value.__cause__) is ops.ModelError
    assert added == []


def test_secret_remove_removes_the_revision_juju_names(ctx, make_state, admin_secret):
    ctx.run(ctx.on.secret_remove(admin_secret, revision=2), make_state())
    assert ctx.removed_secret_revisions == [2]


def test_non_leader_without_the_admin_secret_creates_nothing_and_plans_nothing(ctx, make_state):
    state_out = ctx.run(
        ctx.on.config_changed(), make_state(leader=False, admin_secret_exists=False)
    )
    assert not state_out.secrets
    assert not state_out.get_container("mlflow").plan.services


def test_bad_config_plans_nothing_and_opens_no_port(ctx, make_state):
    state_out = ctx.run(ctx.on.config_changed(), make_state(config={"workers": 0}))
    assert not state_out.get_container("mlflow").plan.services
    assert not state_out.opened_ports


def test_without_pebble_nothing_is_planned(ctx, make_state, container):
    offline = dataclasses.replace(container, can_connect=False)
    state_out = ctx.run(ctx.on.config_changed(), make_state(containers={offline}))
    assert not state_out.get_container("mlflow").layers


# --- idempotency -------------------------------------------------------------------------


def test_first_reconcile_starts_the_server_with_a_single_change(ctx, make_state, pebble_calls):
    state_out = ctx.run(ctx.on.config_changed(), make_state())
    assert len(pebble_calls) == 1, pebble_calls  # a replan or a (re)start, never both
    assert (
        state_out.get_container("mlflow").service_statuses["mlflow"] == pebble.ServiceStatus.ACTIVE
    )


def test_second_identical_reconcile_neither_replans_nor_restarts(ctx, planned, pebble_calls):
    ctx.run(ctx.on.update_status(), planned)
    assert pebble_calls == []


def test_changed_secrets_file_restarts_the_server_without_replanning(
    ctx, planned, data_dir, pebble_calls
):
    stored(data_dir, SECRETS_ENV).write_text("export MLFLOW_AUTH_ADMIN_PASSWORD=stale\n")

    ctx.run(ctx.on.update_status(), planned)

    assert pebble_calls == ["restart"]
    assert ADMIN_PASSWORD in stored(data_dir, SECRETS_ENV).read_text()


def test_changed_config_replans_without_a_separate_restart(ctx, planned, pebble_calls):
    ctx.run(ctx.on.config_changed(), dataclasses.replace(planned, config={"workers": 2}))
    assert pebble_calls == ["replan"]


def test_stopped_service_is_started_without_replanning(ctx, planned, pebble_calls):
    container = planned.get_container("mlflow")
    stopped = dataclasses.replace(
        container, service_statuses={"mlflow": pebble.ServiceStatus.INACTIVE}
    )

    state_out = ctx.run(ctx.on.update_status(), dataclasses.replace(planned, containers={stopped}))

    assert pebble_calls == ["start"]
    assert (
        state_out.get_container("mlflow").service_statuses["mlflow"] == pebble.ServiceStatus.ACTIVE
    )
