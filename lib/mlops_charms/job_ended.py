#!/usr/bin/env python3
"""A job's ``ExecStopPost=``: record how it ended in its folder, then tell the charm.

systemd runs this (as root, standard library only: the machine's ``/usr/bin/python3``) when
the job's service has stopped, however it stopped, with ``$SERVICE_RESULT``, ``$EXIT_CODE`` and
``$EXIT_STATUS`` set. It writes what ``mlops_charms.jobs.JobRecords`` reads, in its order:

    stdout   the job's result: the last line of its output that is a JSON object
    stderr   the journal's tail of the unit, and the reason systemd stopped it, last
    unreported/<id>, then exit (``<code> <time>``, renamed into place: the end is recorded)

then removes the job's scratch folder (``work/``: the dataset it pulled) and dispatches the
charm's ``job-ended`` event: ``juju-exec <unit> JUJU_DISPATCH_PATH=hooks/job-ended ./dispatch``
(ops emits the charm's custom ``job_ended`` event for that path). Should Juju not answer (the
agent is down, a hook holds the lock for long), ``update-status`` finds the unreported job.
An end recorded already (cancel-job records it first) is left as it is.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

DISPATCH = "JUJU_DISPATCH_PATH=hooks/job-ended ./dispatch"
DISPATCH_TIMEOUT = 90  # below the unit's TimeoutStopSec (120), which bounds ExecStopPost
JOURNAL_LINES = 50
_REASONS = {
    "oom-kill": "killed: out of memory (the job-memory-max limit)",
    "timeout": "stopped: it ran past job-deadline (RuntimeMaxSec)",
    "exit-code": "",
    "signal": "",
    "core-dump": "it crashed (core dump)",
    "resources": "systemd could not set it up (user, folder or environment file)",
}


def result_line(output: str) -> str:
    """The last line of ``output`` that is a JSON object ("" when there is none)."""
    for line in reversed(output.splitlines()):
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return line.strip()
    return ""


def exit_code(environment: dict[str, str]) -> int:
    """The job's exit code from systemd's ``$EXIT_CODE``/``$EXIT_STATUS`` (128+N if killed)."""
    how, status = environment.get("EXIT_CODE", ""), environment.get("EXIT_STATUS", "")
    if how == "exited" and status.lstrip("-").isdigit():
        return int(status)
    if how in ("killed", "dumped"):
        try:
            return 128 + signal.Signals[f"SIG{status}"].value
        except KeyError:
            return 137
    # No main process status (it never started): a failure unless systemd says success.
    return 0 if environment.get("SERVICE_RESULT") == "success" else 1


def reason(environment: dict[str, str], code: int) -> str:
    """One line on why the job failed, or ""."""
    result = environment.get("SERVICE_RESULT", "")
    if code == 0 and result in ("", "success"):
        return ""
    why = _REASONS.get(result, f"systemd says {result}" if result else "")
    if not why and environment.get("EXIT_CODE") in ("killed", "dumped"):
        why = f"stopped by signal {environment.get('EXIT_STATUS', '?')} (cancel-job, or shutdown)"
    return why


def journal_tail(unit: str, lines: int = JOURNAL_LINES) -> str:
    """The last lines the journal has of the job's unit ("" when it cannot say)."""
    try:
        completed = subprocess.run(
            [
                "journalctl",
                "--unit",
                unit,
                "--lines",
                str(lines),
                "--output",
                "cat",
                "--no-pager",
                "-q",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return completed.stdout if completed.returncode == 0 else ""


def record(job_dir: Path, environment: dict[str, str], journal: str) -> bool:
    """Write the job's end into its folder; False if it was recorded already."""
    if (job_dir / "exit").exists():
        return False
    code = exit_code(environment)
    try:
        output = (job_dir / "output").read_text(errors="replace")
    except OSError:
        output = ""
    why = reason(environment, code)
    stderr = journal + (why + "\n" if why else "")
    if code == 0 and not result_line(output):
        stderr += "the job printed no JSON result\n"
    _write(job_dir / "stdout", result_line(output) + "\n")
    _write(job_dir / "stderr", stderr)
    unreported = job_dir.parent / "unreported"
    unreported.mkdir(exist_ok=True)
    (unreported / job_dir.name).touch()
    _write(job_dir / "exit", f"{code} {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n")
    return True


def _write(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    partial.replace(path)


def dispatch(juju_exec: str, unit: str) -> str:
    """Run the charm's ``job-ended`` hook through juju-exec; "" or why it did not."""
    try:
        completed = subprocess.run(
            [juju_exec, unit, DISPATCH],
            capture_output=True,
            text=True,
            timeout=DISPATCH_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"cannot dispatch job-ended: {error}"
    if completed.returncode != 0:
        return f"juju-exec failed ({completed.returncode}): {completed.stderr.strip()[-300:]}"
    return ""


def main(argv: list[str] | None = None) -> int:
    """Record the end, clean the scratch folder, dispatch job-ended; always exit 0."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--job-dir", type=Path, required=True)
    parser.add_argument("--unit", required=True, help="the Juju unit, such as training/0")
    parser.add_argument("--juju-exec", default="/usr/bin/juju-exec")
    parser.add_argument("--journal-unit", required=True, help="the job's systemd unit")
    args = parser.parse_args(argv)
    environment = dict(os.environ)
    if record(args.job_dir, environment, journal_tail(args.journal_unit)):
        shutil.rmtree(args.job_dir / "work", ignore_errors=True)
        problem = dispatch(args.juju_exec, args.unit)
        if problem:
            # The journal keeps it; update-status reports the job instead.
            print(problem, file=sys.stderr)
    return 0  # the job's own result is recorded; this step never fails the unit further


if __name__ == "__main__":
    sys.exit(main())
