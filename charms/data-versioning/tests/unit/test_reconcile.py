"""The machine adapter: install, the servers' systemd units, the tags watch, jobs' ends."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ops import testing
from scenario.state import _Event

import charm
import registry_units
from mlops_charms import registry_server
from tests.registry_relations import push_tags

SERVER_UNITS = [
    registry_units.server_unit(name) for name in ("git-http", "s3", "s3-read-only", "metrics")
]
TAGS_PATH = f"{registry_units.TAGS_UNIT}.path"
TAGS_SERVICE = f"{registry_units.TAGS_UNIT}.service"


def dispatched(name: str) -> _Event:
    """The charm's own event that ``juju-exec`` runs (``JUJU_DISPATCH_PATH=hooks/<name>``).

    ops.testing's ``on.custom`` emits only a library's events; these are the charm's ``on``.
    """
    return _Event(name)


def unit_text(name: str) -> str:
    return Path(registry_units.PATHS.unit_file(name)).read_text()


def test_install_asks_for_the_workload_with_the_rocks_pins(ctx, make_state, installs):
    ctx.run(ctx.on.install(), make_state())
    (install,) = installs
    assert install["source"].endswith("/workload")
    assert install["also"] == registry_units.REQUIREMENTS
    assert install["index_url"] == ""


def test_a_fresh_apt_install_stops_debians_apache(ctx, make_state, machine):
    (machine.root / "var/lib/mlops-registry-charm/apt").unlink()
    ctx.run(ctx.on.install(), make_state())
    assert ["install", "apache2", "git", "python3-venv"] in machine.calls("apt-get")
    assert ["stop", "apache2"] in machine.calls("systemctl")
    assert ["disable", "apache2"] in machine.calls("systemctl")


def test_install_puts_the_jobs_end_script_in_place(ctx, make_state):
    ctx.run(ctx.on.install(), make_state())
    assert Path(registry_units.PATHS.job_scripts_dir, "job_ended.py").is_file()


def test_start_runs_every_server_and_the_tags_watch(ctx, make_state, machine):
    out = ctx.run(ctx.on.start(), make_state())
    assert out.unit_status == testing.ActiveStatus("no versions yet")
    assert machine.running_units() == {*SERVER_UNITS, TAGS_PATH}
    assert ["daemon-reload"] in machine.calls("systemctl")
    assert out.opened_ports == {
        testing.TCPPort(8080),
        testing.TCPPort(9000),
        testing.TCPPort(9102),
    }


def test_the_units_run_the_core_servers_as_the_service_user(ctx, make_state, data_dir):
    ctx.run(ctx.on.start(), make_state())
    apache = unit_text(registry_units.GIT_UNIT)
    assert "User=root\n" in apache  # the tests' service user
    assert f"WorkingDirectory={data_dir}\n" in apache
    assert f'"-f" "{data_dir}/conf/httpd.conf" "-DFOREGROUND"' in apache
    assert f". {data_dir}/conf/s3.env" in unit_text(registry_units.server_unit("s3"))


def test_no_unit_holds_a_secret(ctx, make_state, writer_secret):
    ctx.run(ctx.on.start(), make_state())
    content = writer_secret.tracked_content
    for name in [*SERVER_UNITS, TAGS_PATH, TAGS_SERVICE]:
        text = unit_text(name)
        assert content["password"] not in text
        assert content["secret-key"] not in text


def test_the_tags_watch_dispatches_tags_pushed_to_this_unit(ctx, make_state, data_dir):
    ctx.run(ctx.on.start(), make_state())
    assert f"PathChanged={data_dir}/git/registry.git/refs/tags\n" in unit_text(TAGS_PATH)
    assert (
        f'ExecStart="{registry_units.PATHS.juju_exec}" "data-versioning/0" '
        '"JUJU_DISPATCH_PATH=hooks/tags-pushed ./dispatch"'
    ) in unit_text(TAGS_SERVICE)


def test_the_bootstrap_runs_once_as_the_service_user(ctx, make_state, commands, data_dir):
    state = ctx.run(ctx.on.start(), make_state())
    ctx.run(ctx.on.update_status(), state)
    assert commands.calls.count(["/bin/sh", f"{data_dir}/conf/bootstrap.sh"]) == 1


def test_an_unchanged_reconcile_restarts_nothing(ctx, make_state, machine):
    state = ctx.run(ctx.on.start(), make_state())
    before = len(machine.calls("systemctl"))
    ctx.run(ctx.on.update_status(), state)
    changes = [
        call
        for call in machine.calls("systemctl")[before:]
        if call[0] in ("daemon-reload", "restart", "start", "stop")
    ]
    assert changes == []


def test_a_new_port_restarts_the_servers(ctx, make_state, machine, data_dir):
    state = ctx.run(ctx.on.start(), make_state())
    before = len(machine.calls("systemctl"))
    ctx.run(ctx.on.config_changed(), dataclasses.replace(state, config={"git-port": 8081}))
    restarted = {call[-1] for call in machine.calls("systemctl")[before:] if call[0] == "restart"}
    assert restarted == set(SERVER_UNITS)
    assert "Listen 8081\n" in (data_dir / "conf" / "httpd.conf").read_text()


def test_pushed_tags_start_their_validation_as_a_transient_unit(ctx, make_state, data_dir):
    state = ctx.run(ctx.on.start(), make_state())
    push_tags(data_dir, "v1")
    ctx.run(dispatched("tags_pushed"), state)
    (job,) = (data_dir / "jobs").glob("*/job.json")
    record = json.loads(job.read_text())
    assert record["kind"] == "validate-version"
    unit = Path(
        registry_units.PATHS.job_units_dir, f"mlops-registry-job-{job.parent.name}.service"
    )
    assert f"EnvironmentFile={job.parent}/env\n" in unit.read_text()
    assert (job.parent / "env").stat().st_mode & 0o777 == 0o600


def test_a_job_end_publishes_the_version_and_removes_its_unit(ctx, make_state, data_dir, machine):
    state = ctx.run(ctx.on.start(), make_state())
    push_tags(data_dir, "v1")
    state = ctx.run(dispatched("tags_pushed"), state)
    (job,) = [p.parent for p in (data_dir / "jobs").glob("*/job.json")]
    unit = f"mlops-registry-job-{job.name}.service"
    # What the job's ExecStopPost leaves: its unit stopped, its end recorded.
    (machine.state / "units" / unit).unlink()
    charm_records = charm.SystemdJobRunner(
        charm.JobPaths(jobs_dir=str(data_dir / "jobs"), unit_prefix="mlops-registry-job-")
    )
    charm_records.record_end(job.name, 0, stdout=json.dumps({"version": "v1", "valid": True}))
    out = ctx.run(dispatched("job_ended"), state)
    peers = out.get_relations(registry_server.PEERS)[0].local_app_data
    assert peers[registry_server.LATEST_KEY] == "v1"
    assert not Path(registry_units.PATHS.job_units_dir, unit).exists()
    assert out.unit_status == testing.ActiveStatus("latest v1")
