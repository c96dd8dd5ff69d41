"""The shared layer pieces: secrets reach the service through a real shell, not the plan."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import ops

from mlops_charms import workload
from tests.lib.real_pebble import custom_notices, pebble_binary, poll
from tests.workload.processes import PebbleDaemon, free_port

AWKWARD_VALUES = {
    "PLAIN": "abc123",
    "QUOTES": 'it\'s "quoted"',
    "SHELL": "$HOME `id` $(id) ; rm -rf /tmp/nothing &&",
    "SPACES_AND_NEWLINE": "  two\nlines  ",
}


def test_sourced_secrets_reach_the_command_verbatim(tmp_path: Path):
    secrets = tmp_path / "secrets.env"
    secrets.write_text(workload.secrets_env(AWKWARD_VALUES))
    names = list(AWKWARD_VALUES)
    script = tmp_path / "dump.py"
    script.write_text(
        f"import json, os, sys\njson.dump({{n: os.environ[n] for n in {names!r}}}, sys.stdout)\n"
    )
    service = workload.service_sourcing_secrets(
        summary="dump",
        secrets_env_path=str(secrets),
        command=["python3", str(script)],
        environment={},
        before=[["true"]],
    )

    output = subprocess.run(
        shlex.split(service.get("command", "")), capture_output=True, text=True, check=True
    ).stdout

    assert json.loads(output) == AWKWARD_VALUES
    assert all(value not in service.get("command", "") for value in AWKWARD_VALUES.values())


def test_a_failing_step_before_the_server_stops_the_service_from_starting(tmp_path: Path):
    secrets = tmp_path / "secrets.env"
    secrets.write_text("")
    marker = tmp_path / "started"
    service = workload.service_sourcing_secrets(
        summary="s",
        secrets_env_path=str(secrets),
        command=["touch", str(marker)],
        environment={},
        before=[["false"]],
    )

    result = subprocess.run(shlex.split(service.get("command", "")), check=False)

    assert result.returncode != 0
    assert not marker.exists()


def test_ready_check_probes_the_given_url():
    check = workload.http_ready_check("http://localhost:5000/health")
    assert check.get("level") == "ready"
    assert check.get("http") == {"url": "http://localhost:5000/health"}


def test_ready_checks_share_one_cadence_and_probe_what_they_are_given():
    cadence = {
        "override": "replace",
        "level": "ready",
        "period": "10s",
        "timeout": "3s",
        "threshold": 3,
    }

    assert workload.http_ready_check("http://localhost:5000/health") == {
        **cadence,
        "http": {"url": "http://localhost:5000/health"},
    }
    assert workload.tcp_ready_check(9000) == {
        **cadence,
        "tcp": {"host": "127.0.0.1", "port": 9000},
    }
    assert workload.tcp_ready_check(9000, host="10.1.2.3")["tcp"] == {  # type: ignore[typeddict-item]
        "host": "10.1.2.3",
        "port": 9000,
    }


def test_notify_command_uses_the_pebble_juju_mounts_in_the_container():
    command = workload.PebbleInContainer().notify_command("mlops-stack.dev/x", "job=1", "a=b")

    assert command == [
        "env",
        "PEBBLE_SOCKET=/charm/container/pebble.socket",
        "/charm/bin/pebble",
        "notify",
        "mlops-stack.dev/x",
        "job=1",
        "a=b",
    ]


def test_notify_command_records_the_notice_with_its_data(shared_pebble: PebbleDaemon):
    key = "mlops-stack.dev/test/notify-command"
    local = workload.PebbleInContainer(pebble_binary(), shared_pebble.client.socket_path)

    subprocess.run(local.notify_command(key, "job=42"), check=True)

    [notice] = custom_notices(shared_pebble, key)
    assert notice.last_data == {"job": "42"}


READY_KEY = "mlops-stack.dev/test/ready"


def test_ready_notice_is_recorded_once_the_server_answers_and_not_before(
    real_container: ops.Container,
    pebble_daemon: PebbleDaemon,
    local_pebble: workload.PebbleInContainer,
    tmp_path: Path,
):
    secrets = tmp_path / "secrets.env"
    secrets.write_text(workload.secrets_env({"TOKEN": "t"}))
    port = free_port()
    # The server starts once the test lets it: until then the watcher finds nothing.
    gate = tmp_path / "serve"
    wait_then_serve = (
        f"until [ -e {shlex.quote(str(gate))} ]; do sleep 0.05; done; "
        f"exec {shlex.quote(sys.executable)} -m http.server {port} --bind 127.0.0.1 "
        f"--directory {shlex.quote(str(tmp_path))}"
    )
    service = workload.service_sourcing_secrets(
        summary="server",
        secrets_env_path=str(secrets),
        command=["/bin/sh", "-c", wait_then_serve],
        environment={},
        ready_notice=workload.ReadyNotice(
            url=f"http://127.0.0.1:{port}/", key=READY_KEY, python=sys.executable
        ),
    )
    real_container.add_layer("server", {"services": {"server": service}}, combine=True)
    real_container.replan()  # returns after Pebble's 1 s: the watcher has polled by then

    assert custom_notices(pebble_daemon, READY_KEY) == []
    gate.touch()

    [notice] = poll(lambda: custom_notices(pebble_daemon, READY_KEY), 10, "the ready notice")
    assert notice.occurrences == 1
    assert real_container.get_service("server").is_running()
