"""Label Studio from the labelling charm's layer phones no one, proven in a loopback-only netns.

The charm's layer runs under a real Pebble inside a network namespace with only loopback, every
``connect()`` traced (tests/workload/netns.py). In the same namespace, through ``pebble exec``:
the official SDK creates a project, imports tasks and annotates them (sdk_session.py); a browser's
requests log in and load the app's pages; ``mlops-workload labelling`` runs as the charm runs it
(its exec environment). Once Pebble and every process it ran have ended, the trace must hold no
``connect()`` beyond this host. The pages must not make a browser call out either: no tracker or
error reporter in them.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.workload.labelling import harness
from tests.workload.labelling.harness import RunningLabelStudio, label_studio, run_label_studio
from tests.workload.netns import (
    IsolatedPebble,
    exec_in,
    run_isolated_pebble,
)

pytestmark = pytest.mark.slow

SDK_SESSION = Path(__file__).with_name("sdk_session.py")
# What would make a browser call out from a page Label Studio serves.
TRACKERS = ("sentry-cdn.com", "ingest.sentry.io", "googletagmanager.com", "google-analytics.com")

# A browser's visit, as a script run in the namespace: log in, load the app, return the pages.
BROWSER = """
import http.cookiejar, json, os, re, sys, urllib.parse, urllib.request

url, email, password = sys.argv[1], os.environ["EMAIL"], os.environ["PASSWORD"]
browser = urllib.request.build_opener(
    urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
)
login = browser.open(url + "/user/login/", timeout=60).read().decode()
token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login).group(1)
form = urllib.parse.urlencode(
    {"csrfmiddlewaretoken": token, "email": email, "password": password}
).encode()
request = urllib.request.Request(url + "/user/login/", data=form, headers={"Referer": url})
browser.open(request, timeout=60).read()
projects = browser.open(url + "/projects/", timeout=60)
pages = {"login": login, "projects_url": projects.url, "projects": projects.read().decode()}
print(json.dumps(pages))
"""


@contextlib.contextmanager
def isolated_label_studio(base: Path) -> Iterator[RunningLabelStudio]:
    """The harness's Label Studio, with the isolated, traced Pebble in place of the plain one."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(harness, "run_pebble", run_isolated_pebble)
        with run_label_studio(base) as running:
            yield running


def visit_as_a_browser(server: RunningLabelStudio, python: str) -> dict[str, str]:
    """Log in and load the app's pages from inside the namespace; return the pages."""
    visit = exec_in(
        server.daemon,
        [python, "-c", BROWSER, server.url],
        {"EMAIL": label_studio.ADMIN_USERNAME, "PASSWORD": server.settings.admin_password},
        timeout=120,
    )
    assert visit.exit_code == 0, visit.stderr[-3000:]
    pages = json.loads(visit.stdout)
    assert pages["projects_url"] == f"{server.url}/projects/"  # logged in: not sent to log in
    return pages


def test_label_studio_serves_the_sdk_the_app_and_the_workload_without_reaching_outside(
    tmp_path: Path,
):
    python = str(Path(harness.binaries().label_studio).with_name("python"))
    with isolated_label_studio(tmp_path) as server:
        session = exec_in(
            server.daemon,
            [python, str(SDK_SESSION), server.url, "10"],
            {"LABEL_STUDIO_API_KEY": server.settings.admin_token},
            timeout=300,
        )
        assert session.exit_code == 0, session.stderr[-3000:]
        report = json.loads(session.stdout)
        pages = visit_as_a_browser(server, python)
        # As the charm runs it: its command line and exec environment (no registry needed).
        consistency = exec_in(
            server.daemon,
            label_studio.labelling_command(
                server.settings, "consistency-report", "--project", "SDK session"
            ),
            label_studio.workload_environment(server.settings, None),
            working_dir=server.settings.data_dir,
            timeout=300,
        )
        assert consistency.exit_code == 0, consistency.stderr[-3000:]
        daemon = server.daemon

    assert (report["errors"], report["annotations"]) == ([], 10)
    # Pebble and everything it ran have ended: from the server's init to what it sent on its
    # way out, every attempt is in the trace.
    assert isinstance(daemon, IsolatedPebble)
    daemon.assert_nothing_left()
    for page in ("login", "projects"):
        found = [tracker for tracker in TRACKERS if tracker in pages[page]]
        assert not found, f"the {page} page makes browsers call {found}"
