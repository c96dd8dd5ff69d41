"""What the workload does on the network: keeps clients' connections open, phones no one."""

from __future__ import annotations

from ops import testing

SERVICE = "label-studio"
CONSISTENCY_REPORT = {
    "project": "reviews",
    "tasks": 0,
    "krippendorff_alpha": 1.0,
    "mean_observed_agreement": 1.0,
    "threshold": 0.5,
    "inconsistent": [],
    "ambiguous": [],
}


def _service(state: testing.State):
    return state.get_container(SERVICE).plan.services[SERVICE]


def test_uwsgi_keeps_connections_open_for_clients_that_pool_them(ctx, make_state):
    # Without keep-alive uWSGI's router closes every connection unannounced, and a pooling
    # client's (the official SDK's) next request on it fails.
    state = ctx.run(ctx.on.config_changed(), make_state())
    assert "--http-keepalive=75" in _service(state).command


def test_the_server_reports_nothing_to_its_vendor(ctx, make_state):
    env = _service(ctx.run(ctx.on.config_changed(), make_state())).environment
    assert (env["SENTRY_DSN"], env["FRONTEND_SENTRY_DSN"]) == ("", "")
    assert env["COLLECT_ANALYTICS"] == "false"
    assert env["DO_NOT_TRACK"] == "1"


def test_workload_commands_run_with_analytics_off(ctx, make_state, workload_jobs):
    workload_jobs.succeeds("consistency-report", CONSISTENCY_REPORT)
    ctx.run(ctx.on.action("consistency-report", params={"project": "reviews"}), make_state())
    env = workload_jobs.last.environment
    assert (env["DVC_NO_ANALYTICS"], env["DO_NOT_TRACK"]) == ("1", "1")
