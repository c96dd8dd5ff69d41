"""The shared layer pieces: secrets reach the service through a real shell, not the plan."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

from mlops_charms import workload

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
