"""A rendered job unit, checked by systemd and run for real, up to the charm's job-ended dispatch.

This machine has no running systemd: ``systemd-analyze verify`` checks the unit file, then the
test does what systemd would do with it: runs its ``ExecStart`` (a stub ``mlops-workload`` that
prints a JSON result) with its environment, folder and output file, then its ``ExecStopPost``
(``job_ended.py``) with ``$EXIT_CODE``, ``$EXIT_STATUS`` and ``$SERVICE_RESULT`` set and a stub
``juju-exec`` on the path the unit names.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import UNIT, Machine

import machine_paths
from mlops_charms import systemd, systemd_jobs, training
from mlops_charms.systemd_jobs import JobLimits, JobUnit, SystemdJobRunner
from tests.systemd_units import environment_file, systemd_words, unit_settings

SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
TRICKY_SPEC = 'text "tfidf" 100% $HOME\\n'  # quotes, a specifier, a variable, a backslash

# Prints its arguments and the environment systemd gave it as the job's JSON result, after a
# log line on stderr and a line of plain output (the result is the last JSON line).
STUB_WORKLOAD = """#!{python}
import json, os, sys
print("fetching the dataset", file=sys.stderr)
print("epoch 1/1 done")
names = ("CUDA_VISIBLE_DEVICES", "MLOPS_REGISTRY_URL", "MLOPS_REGISTRY_PASSWORD")
print(json.dumps({{"argv": sys.argv[1:], "env": {{n: os.environ.get(n) for n in names}},
                  "cwd": os.getcwd(), "metrics": {{"accuracy": 0.93}}}}))
sys.exit(int(os.environ.get("STUB_EXIT", "0")))
"""

STUB_JUJU_EXEC = """#!{python}
import json, sys
with open({log!r}, "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
sys.exit({code})
"""


@pytest.fixture
def job_unit(machine: Machine) -> JobUnit:
    """A train job's unit, rendered as the charm renders it, and the stubs it runs."""
    paths = machine_paths.PATHS
    workload = Path(paths.mlops_workload)
    workload.write_text(STUB_WORKLOAD.format(python=sys.executable))
    workload.chmod(0o755)
    Path(paths.scripts_dir).mkdir(parents=True)
    shutil.copy(systemd_jobs.JOB_ENDED_SCRIPT, paths.jobs.job_ended)
    records = SystemdJobRunner(paths.jobs)
    job = records.create("train", {"spec": TRICKY_SPEC, "gpus": "1"})
    registry = training.RegistryAccess(
        git_url="http://registry:8080/git/data.git",
        username="reader",
        password='it\'s a "secret" $PASSWORD',
    )
    folder = Path(paths.jobs_dir) / job.id
    settings, credentials = training.environment(registry, None, workdir=f"{folder}/work")
    (folder / "env").write_text(systemd.env_file(credentials))
    (folder / "work").mkdir()
    unit = JobUnit(
        paths=paths.jobs,
        job_id=job.id,
        kind="train",
        juju_unit=UNIT,
        command=training.command(paths.mlops_workload, "train", ["--spec", TRICKY_SPEC]),
        settings=settings,
        limits=JobLimits(gpus=[1], memory_max="8G"),
    )
    unit.write()
    return unit


def records() -> SystemdJobRunner:
    return SystemdJobRunner(machine_paths.PATHS.jobs)


def run_exec_start(unit: JobUnit, *, exit_code: int = 0) -> None:
    """Run the unit's ExecStart as systemd would: its environment, folder and output file."""
    settings = unit_settings((Path(machine_paths.PATHS.units_dir) / unit.name).read_text())
    environment = {"PATH": os.environ["PATH"], "STUB_EXIT": str(exit_code)}
    environment |= environment_file(Path(settings["EnvironmentFile"][0]).read_text())
    for assignment in settings["Environment"]:
        name, _, value = systemd_words(assignment)[0].partition("=")
        environment[name] = value
    output_file = settings["StandardOutput"][0].removeprefix("file:")
    with open(output_file, "w") as output:
        subprocess.run(
            systemd_words(settings["ExecStart"][0]),
            env=environment,
            cwd=settings["WorkingDirectory"][0],
            stdout=output,
            check=False,
            timeout=60,
        )


def run_exec_stop_post(
    unit: JobUnit, machine: Machine, juju_exec_code: int = 0, **systemd_env: str
) -> subprocess.CompletedProcess[str]:
    """Run the unit's ExecStopPost with systemd's variables and a stub juju-exec."""
    juju_exec = Path(machine_paths.PATHS.juju_exec)
    log = machine.state / "juju-exec.jsonl"
    juju_exec.write_text(
        STUB_JUJU_EXEC.format(python=sys.executable, log=str(log), code=juju_exec_code)
    )
    juju_exec.chmod(0o755)
    line = unit_settings((Path(machine_paths.PATHS.units_dir) / unit.name).read_text())[
        "ExecStopPost"
    ][0]
    assert line.startswith("+"), "ExecStopPost runs as root, whatever User= says"
    return subprocess.run(
        systemd_words(line.removeprefix("+")),
        env={"PATH": os.environ["PATH"], **systemd_env},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def dispatched(machine: Machine) -> list[list[str]]:
    log = machine.state / "juju-exec.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_rendered_unit_passes_systemd_analyze_verify(job_unit: JobUnit):
    unit_file = Path(machine_paths.PATHS.units_dir) / job_unit.name
    verified = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", str(unit_file)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert verified.returncode == 0, verified.stderr
    assert job_unit.name not in verified.stderr, verified.stderr  # no warning about the unit


def test_a_broken_unit_fails_systemd_analyze_verify(job_unit: JobUnit):
    """The check is not vacuous: an ExecStart that is not a command fails it."""
    unit_file = Path(machine_paths.PATHS.units_dir) / job_unit.name
    text = re.sub(r"(?m)^ExecStart=.*$", "ExecStart=relative/program", unit_file.read_text())
    unit_file.write_text(text)
    verified = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", str(unit_file)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert verified.returncode != 0
    assert "Neither a valid executable name nor an absolute path" in verified.stderr


def test_exec_start_runs_the_command_with_its_gpus_and_credentials(job_unit: JobUnit):
    run_exec_start(job_unit)
    output = (Path(job_unit.folder) / "output").read_text()
    result = json.loads(output.splitlines()[-1])
    assert result["argv"] == ["training", "train", "--spec", TRICKY_SPEC]
    assert result["env"] == {
        "CUDA_VISIBLE_DEVICES": "1",
        "MLOPS_REGISTRY_URL": "http://registry:8080/git/data.git",
        "MLOPS_REGISTRY_PASSWORD": 'it\'s a "secret" $PASSWORD',
    }
    assert result["cwd"] == f"{job_unit.folder}/work"


def test_a_succeeded_job_records_its_result_and_dispatches_job_ended(
    job_unit: JobUnit, machine: Machine
):
    run_exec_start(job_unit)
    stopped = run_exec_stop_post(
        job_unit, machine, EXIT_CODE="exited", EXIT_STATUS="0", SERVICE_RESULT="success"
    )
    assert stopped.returncode == 0, stopped.stderr
    ended_jobs = records()
    job = ended_jobs.get(job_unit.job_id)
    assert job is not None and job.state == "succeeded" and job.exit_code == 0
    assert job.result is not None and job.result["metrics"] == {"accuracy": 0.93}
    assert [ended.id for ended in ended_jobs.unreported()] == [job_unit.job_id]
    assert not (Path(job_unit.folder) / "work").exists(), "the pulled dataset is removed"
    assert dispatched(machine) == [[UNIT, "JUJU_DISPATCH_PATH=hooks/job-ended ./dispatch"]]


def test_an_out_of_memory_kill_is_a_failure_that_says_so(job_unit: JobUnit, machine: Machine):
    run_exec_start(job_unit, exit_code=137)
    run_exec_stop_post(
        job_unit, machine, EXIT_CODE="killed", EXIT_STATUS="KILL", SERVICE_RESULT="oom-kill"
    )
    job = records().get(job_unit.job_id)
    assert job is not None and job.state == "failed" and job.exit_code == 137
    assert job.error == "killed: out of memory (the job-memory-max limit)"
    assert len(dispatched(machine)) == 1


def test_a_job_that_ran_past_its_deadline_fails_with_the_reason(
    job_unit: JobUnit, machine: Machine
):
    run_exec_start(job_unit)
    run_exec_stop_post(
        job_unit, machine, EXIT_CODE="killed", EXIT_STATUS="TERM", SERVICE_RESULT="timeout"
    )
    job = records().get(job_unit.job_id)
    assert job is not None and job.state == "failed" and job.exit_code == 128 + 15
    assert job.error == "stopped: it ran past job-deadline (RuntimeMaxSec)"


def test_an_end_recorded_by_cancel_job_is_kept_and_not_dispatched_again(
    job_unit: JobUnit, machine: Machine
):
    records().record_end(job_unit.job_id, 1, stderr="cancelled by cancel-job\n")
    run_exec_stop_post(
        job_unit, machine, EXIT_CODE="killed", EXIT_STATUS="TERM", SERVICE_RESULT="signal"
    )
    job = records().get(job_unit.job_id)
    assert job is not None and job.error == "cancelled by cancel-job"
    assert dispatched(machine) == []


def test_a_lost_dispatch_leaves_the_end_for_update_status(job_unit: JobUnit, machine: Machine):
    run_exec_start(job_unit)
    stopped = run_exec_stop_post(
        job_unit,
        machine,
        juju_exec_code=1,
        EXIT_CODE="exited",
        EXIT_STATUS="0",
        SERVICE_RESULT="success",
    )
    assert stopped.returncode == 0, "ExecStopPost never fails the unit further"
    assert "juju-exec failed (1)" in stopped.stderr
    assert [job.id for job in records().unreported()] == [job_unit.job_id]
