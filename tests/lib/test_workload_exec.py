"""Short commands through Pebble exec: every way they fail is one line, on a real Pebble."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import ops
import pytest
from ops import pebble

from mlops_charms.workload_exec import WorkloadError, last_line, run, run_json
from tests.lib.real_pebble import container_on


def test_run_returns_stdout_with_the_environment_and_working_dir(
    exec_container: ops.Container, tmp_path: Path
):
    stdout = run(
        exec_container,
        ["/bin/sh", "-c", 'echo "$GREETING from $(pwd)"'],
        what="greet",
        environment={"GREETING": "hello"},
        working_dir=str(tmp_path),
    )

    assert stdout == f"hello from {tmp_path}\n"


def test_a_failing_command_gives_its_last_stderr_line_without_error_prefix(
    exec_container: ops.Container,
):
    script = "echo 'step 1' >&2; echo 'error: bucket cats not found' >&2; echo >&2; exit 3"

    with pytest.raises(WorkloadError) as failure:
        run(exec_container, ["/bin/sh", "-c", script], what="bootstrap")

    assert str(failure.value) == "bootstrap failed: bucket cats not found"


def test_a_failing_command_without_stderr_gives_its_exit_code(exec_container: ops.Container):
    with pytest.raises(WorkloadError) as failure:
        run(exec_container, ["/bin/sh", "-c", "echo partial; exit 4"], what="bootstrap")

    assert str(failure.value) == "bootstrap failed: exit code 4"


def test_a_missing_binary_is_a_command_that_could_not_start(exec_container: ops.Container):
    with pytest.raises(WorkloadError) as failure:
        run(exec_container, ["no-such-tool", "--version"], what="version check")

    assert (
        str(failure.value)
        == 'version check could not start: cannot find executable "no-such-tool"'
    )


def test_pebble_unreachable_is_a_command_that_could_not_start(tmp_path: Path):
    container = container_on(pebble.Client(socket_path=str(tmp_path / "gone.socket")))

    with pytest.raises(WorkloadError) as failure:
        run(container, ["true"], what="listing")

    assert str(failure.value) == "listing could not start: Pebble is not reachable"


def test_a_command_past_its_timeout_fails_in_one_line(exec_container: ops.Container):
    with pytest.raises(WorkloadError) as failure:
        run(exec_container, ["sleep", "10"], what="listing", timeout=0.1)

    assert str(failure.value).startswith("listing ")
    assert "\n" not in str(failure.value)


def test_a_command_past_its_timeout_says_it_did_not_finish(exec_container: ops.Container):
    with pytest.raises(WorkloadError) as failure:
        run(exec_container, ["sleep", "10"], what="listing", timeout=0.1)

    assert str(failure.value).startswith("listing did not finish in")


class _Stalled:
    """A process whose wait gives up on the client side (ops' own wait timeout)."""

    def wait_output(self):
        raise pebble.TimeoutError("timed out waiting for change 7 (121 seconds)")


class _StalledContainer:
    def exec(self, command, **options: Any):
        return _Stalled()


def test_a_wait_that_times_out_says_the_command_did_not_finish():
    container = cast(ops.Container, _StalledContainer())

    with pytest.raises(WorkloadError) as failure:
        run(container, ["sleep", "600"], what="listing", timeout=120)

    assert str(failure.value) == "listing did not finish in 120 s"


def test_run_json_decodes_the_object_printed(exec_container: ops.Container):
    result = run_json(
        exec_container, ["/bin/sh", "-c", """echo '{"tags": ["v1", "v2"]}'"""], what="tags"
    )

    assert result == {"tags": ["v1", "v2"]}


@pytest.mark.parametrize(
    ("stdout", "reason"),
    [("not json", "tags gave no JSON result"), ("[1, 2]", "tags gave no JSON object")],
)
def test_run_json_refuses_output_that_is_not_a_json_object(
    exec_container: ops.Container, stdout: str, reason: str
):
    with pytest.raises(WorkloadError) as failure:
        run_json(exec_container, ["echo", stdout], what="tags")

    assert str(failure.value) == reason


def test_last_line_is_the_last_non_empty_line_without_error_prefix():
    assert last_line("first\nerror: second\n\n  \n") == "second"
    assert last_line("") == ""


def test_a_long_last_line_keeps_its_end_where_chained_errors_say_why():
    chained = "error: cannot copy: " + "request failed: " * 30 + "x509: unknown authority"

    reason = last_line(chained)

    assert len(reason) == 300
    assert reason.startswith("…")
    assert reason.endswith("request failed: x509: unknown authority")
