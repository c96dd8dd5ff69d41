"""The official Label Studio SDK against the server the labelling charm plans, for real.

Label Studio runs from the charm's layer under a real Pebble (see harness.py). One SDK client
(label-studio-sdk 2.1.2, from Label Studio's venv as in the rock) runs a labelling session of
a few hundred calls over its pooled connection, POSTs read back at once (sdk_session.py). Every
call must work and the server must hold exactly what was sent: no call lost, none doubled.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.workload.labelling import harness
from tests.workload.labelling.harness import RunningLabelStudio, run_label_studio

pytestmark = pytest.mark.slow

SDK_SESSION = Path(__file__).with_name("sdk_session.py")
# Three calls per task (annotate, read the annotations, read the task) and six more: 306.
TASKS = 100


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLabelStudio]:
    with run_label_studio(tmp_path_factory.mktemp("sdk-client")) as running:
        yield running


def run_sdk_session(url: str, api_key: str, tasks: int) -> dict:
    """Run sdk_session.py with Label Studio's venv (where the SDK is) and return its report."""
    python = Path(harness.binaries().label_studio).with_name("python")
    result = subprocess.run(
        [str(python), str(SDK_SESSION), url, str(tasks)],
        env={"PATH": os.environ["PATH"], "LABEL_STUDIO_API_KEY": api_key},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"the SDK session crashed:\n{result.stderr[-3000:]}"
    return json.loads(result.stdout)


def test_the_official_sdk_makes_hundreds_of_calls_over_one_pooled_session_without_errors(
    server: RunningLabelStudio,
):
    assert_session_kept_everything(run_sdk_session(server.url, server.settings.admin_token, TASKS))


def test_a_kept_connection_survives_head_and_says_when_it_closes(server: RunningLabelStudio):
    assert_keep_alive_is_safe(server.settings.port, server.settings.admin_token)


def assert_session_kept_everything(report: dict) -> None:
    """Every SDK call of a ``TASKS``-task session worked; the server holds what was sent."""
    failed = Counter(f"{e['call']}: {e['error']}: {e['message']}" for e in report["errors"])
    assert not failed, (
        f"{len(report['errors'])} of {report['requests']} SDK requests failed:\n"
        + "\n".join(f"{count} x {what}" for what, count in failed.most_common())
    )
    assert report["requests"] >= 300
    # The session really reused its connections (else it would not test keep-alive).
    assert report["connections"] * 10 < report["requests"], report
    # Nothing lost, nothing doubled: every task imported or created, one annotation each.
    assert (report["imported"], report["tasks"], report["annotations"]) == (
        TASKS,
        TASKS + 1,
        TASKS,
    )


def assert_keep_alive_is_safe(port: int, api_key: str) -> None:
    """Keep-alive is safe only if the server frames every response or says it closes.

    A HEAD leaves no body behind to corrupt the next response on the connection; a response
    without a length (a static file, streamed) carries ``Connection: close``.
    """
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Token {api_key}"}
    seen = []
    try:
        for method, path in (
            ("HEAD", "/health"),
            ("GET", "/health"),
            ("GET", "/api/projects"),
            ("GET", "/static/images/favicon.ico"),
        ):
            connection.request(method, path, headers=headers)
            response = connection.getresponse()
            body = response.read()
            framed = response.getheader("Content-Length") or response.getheader(
                "Transfer-Encoding"
            )
            seen.append((method, path, response.status, bool(body), response.will_close))
            assert framed or response.will_close, f"{method} {path}: unframed, kept open"
    finally:
        connection.close()

    assert [entry[:4] for entry in seen] == [
        ("HEAD", "/health", 200, False),
        ("GET", "/health", 200, True),
        ("GET", "/api/projects", 200, True),
        ("GET", "/static/images/favicon.ico", 200, True),
    ]
    # The first three came over one connection that stayed open.
    assert [entry[4] for entry in seen[:3]] == [False, False, False]
