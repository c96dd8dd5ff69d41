"""Short commands run in a workload container through Pebble exec, failing in one line.

For commands whose time does not grow with the data (a repository bootstrap, a listing).
Long work runs as a job instead (``mlops_charms.jobs``). Every way the exec can fail — the
command's own failure, a missing binary, Pebble unreachable, a timeout — becomes a
``WorkloadError`` whose message is one line, so a hook or action never ends in a traceback.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

import ops

_MAX_REASON = 300


class WorkloadError(Exception):
    """A command in the workload container failed; the message is one line."""


def last_line(text: str) -> str:
    """The last non-empty line of a command's output, without an ``error:`` prefix.

    A long line keeps its end: chained errors (``cannot copy: request failed: x509: …``)
    say why at the end.
    """
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    line = lines[-1].removeprefix("error: ") if lines else ""
    return line if len(line) <= _MAX_REASON else "…" + line[-(_MAX_REASON - 1) :]


def run(
    container: ops.Container,
    command: Sequence[str],
    *,
    what: str,
    environment: Mapping[str, str] | None = None,
    user: str | None = None,
    group: str | None = None,
    working_dir: str | None = None,
    timeout: float = 120.0,
) -> str:
    """Run ``command`` to its end and return its stdout; raise ``WorkloadError`` on failure."""
    try:
        process = container.exec(
            list(command),
            environment=dict(environment or {}),
            user=user,
            group=group,
            working_dir=working_dir,
            timeout=timeout,
        )
        stdout, _stderr = process.wait_output()
    except ops.pebble.ExecError as error:
        reason = last_line(str(error.stderr or "")) or f"exit code {error.exit_code}"
        raise WorkloadError(f"{what} failed: {reason}") from None
    except ops.pebble.TimeoutError:
        raise WorkloadError(f"{what} did not finish in {timeout:g} s") from None
    except ops.pebble.ChangeError as error:
        if "timed out" in str(error.err):  # Pebble itself ended the command at the timeout
            raise WorkloadError(f"{what} did not finish in {timeout:g} s") from None
        raise WorkloadError(f"{what} failed: {last_line(str(error.err))}") from None
    except ops.pebble.APIError as error:
        raise WorkloadError(f"{what} could not start: {error.message}") from None
    except ops.pebble.ConnectionError:
        raise WorkloadError(f"{what} could not start: Pebble is not reachable") from None
    return stdout


# A machine's command runs with this PATH and the environment it is given, nothing of the hook's.
MACHINE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def run_as(
    user: str,
    command: Sequence[str],
    *,
    what: str,
    environment: Mapping[str, str],
    working_dir: str,
    timeout: float,
) -> str:
    """On a machine: run a short command as ``user`` to its end; stdout, or ``WorkloadError``."""
    try:
        completed = subprocess.run(
            list(command),
            user=user,
            group=user,
            extra_groups=[],
            env={"PATH": MACHINE_PATH, **environment},
            cwd=working_dir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise WorkloadError(f"{what} did not finish in {timeout:g} s") from None
    except (OSError, KeyError) as error:  # KeyError: no such user
        raise WorkloadError(f"{what} could not start: {error}") from None
    if completed.returncode != 0:
        reason = last_line(completed.stderr) or f"exit code {completed.returncode}"
        raise WorkloadError(f"{what} failed: {reason}")
    return completed.stdout


def run_json(container: ops.Container, command: Sequence[str], **options: Any) -> dict[str, Any]:
    """Run ``command`` (see ``run``) and decode the JSON object it prints."""
    return decode_json(run(container, command, **options), what=options["what"])


def decode_json(stdout: str, *, what: str) -> dict[str, Any]:
    """The JSON object a command printed; ``WorkloadError`` if it printed none."""
    try:
        result = json.loads(stdout)
    except json.JSONDecodeError:
        raise WorkloadError(f"{what} gave no JSON result") from None
    if not isinstance(result, dict):
        raise WorkloadError(f"{what} gave no JSON object")
    return result
