"""rotate-credentials on labelling-k8s against the real Label Studio, run by a real Pebble.

The charm deploys on a real Pebble (its hooks in Juju's order, Label Studio from its venv,
started on a migrated database); the action runs the credentials command through Pebble exec
as the charm does. What must hold: the official SDK and the REST API refuse the old token
(401) and take the new one, the web login refuses the old password and takes the new one,
``get-admin-credentials`` shows the new ones, and nothing restarted, in the action or in the
next hook.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from ops import testing

from mlops_charms import labelling_server
from tests.charm_testing import load_charm_module
from tests.workload.labelling.harness import (
    CHARM_ROOT,
    CHARM_SRC,
    binaries,
    label_studio,
    migrated_database,
    rest_call,
)
from tests.workload.pebble_backed import PebbleBackedCharm, shared_folder, wait_until
from tests.workload.processes import answers_200, free_port

pytestmark = pytest.mark.slow

charm = load_charm_module(CHARM_SRC, "labelling_k8s_charm")

SDK_CALL = """
import sys
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError
try:
    LabelStudio(base_url=sys.argv[1], api_key=sys.argv[2]).projects.list()
except ApiError as error:
    print(error.status_code)
else:
    print(200)
"""


class Unit:
    """labelling-k8s on a real Pebble, deployed, Label Studio answering."""

    def __init__(self, unit: PebbleBackedCharm):
        self.unit = unit
        self.container = unit.containers[charm.CONTAINER]
        self.port = free_port()
        self.state = testing.State(
            leader=True,
            config={"port": self.port, "metrics-port": free_port()},
            containers={unit.container_state(charm.CONTAINER)},
            storages=unit.storages(),
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def deploy(self) -> None:
        ctx = self.unit.context
        container = self.state.get_container(charm.CONTAINER)
        for event in (
            ctx.on.install(),
            ctx.on.storage_attached(next(iter(self.state.storages))),
            ctx.on.leader_elected(),
            ctx.on.config_changed(),
            ctx.on.start(),
            ctx.on.pebble_ready(container),
        ):
            self.state = self.unit.run(event, self.state)
        wait_until(self.healthy, 240, "Label Studio to answer")

    def healthy(self) -> bool:
        return answers_200(f"{self.url}/health", timeout=3)

    def credentials(self) -> dict[str, str]:
        results, _ = self.unit.run_action("get-admin-credentials", self.state)
        return dict(results)  # the context reuses its results' dict


def api_status(url: str, token: str) -> int:
    try:
        rest_call(url, token, "GET", "/api/projects/")
    except urllib.error.HTTPError as error:
        return error.code
    return 200


def sdk_status(url: str, token: str) -> int:
    """What the official SDK (in Label Studio's venv) gets for one call with ``token``."""
    python = str(Path(binaries().label_studio).with_name("python"))
    out = subprocess.run(
        [python, "-c", SDK_CALL, url, token],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={"PATH": os.environ["PATH"]},
    )
    return int(out.stdout.strip().splitlines()[-1])


def logs_in(url: str, email: str, password: str) -> bool:
    """Whether the web login (its form, with CSRF) accepts ``password``."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with opener.open(f"{url}/user/login/", timeout=30) as page:
        html = page.read().decode()
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert csrf, "no CSRF token in the login form"
    form = urllib.parse.urlencode(
        {"csrfmiddlewaretoken": csrf.group(1), "email": email, "password": password}
    ).encode()
    request = urllib.request.Request(
        f"{url}/user/login/", data=form, headers={"Referer": f"{url}/user/login/"}
    )
    with opener.open(request, timeout=30) as response:
        # A refused login renders the form again; an accepted one redirects away from it.
        return "/user/login" not in response.url


@pytest.fixture(scope="module")
def unit() -> Iterator[Unit]:
    # The container's Pebble passes its environment on: the charm's folders on PYTHONPATH
    # would come before Label Studio's own packages. A rock sets no PYTHONPATH.
    with pytest.MonkeyPatch.context() as patch, shared_folder("labelling-rotate-") as base:
        patch.delenv("PYTHONPATH", raising=False)
        backed = PebbleBackedCharm(
            charm.LabellingCharm, CHARM_ROOT, base, rock_paths={label_studio: binaries()}
        )
        storage = backed.storage[labelling_server.STORAGE]
        shutil.copyfile(migrated_database(), storage / "label_studio.sqlite3")
        backed.start()
        try:
            deployed = Unit(backed)
            deployed.deploy()
            yield deployed
        finally:
            backed.stop()


def test_rotation_refuses_the_old_token_and_password_and_takes_the_new(unit: Unit):
    old = unit.credentials()
    assert api_status(unit.url, old["api-token"]) == 200
    assert logs_in(unit.url, old["username"], old["password"])
    before = unit.container.last_change_id()

    results, unit.state = unit.unit.run_action("rotate-credentials", unit.state)

    assert not isinstance(results, testing.ActionFailed), results.message
    shown = json.dumps(results)
    assert results["admin"]["revision"] == "2" and results["restarted"] == "nothing"
    new = unit.credentials()
    for value in (old["password"], old["api-token"], new["password"], new["api-token"]):
        assert value not in shown
    # One Pebble change: the credentials command's exec; no restart, no replan.
    kinds = [change.kind for change in unit.container.changes_since(before)]
    assert kinds == ["exec"], kinds
    assert api_status(unit.url, old["api-token"]) == 401
    assert sdk_status(unit.url, old["api-token"]) == 401
    assert sdk_status(unit.url, new["api-token"]) == 200
    assert not logs_in(unit.url, old["username"], old["password"])
    assert logs_in(unit.url, new["username"], new["password"])

    # The next hook finds secrets.env as the action wrote it: no restart.
    marker = unit.container.last_change_id()
    unit.state = unit.unit.run(unit.unit.context.on.update_status(), unit.state)
    assert not unit.container.changes_since(marker)
    assert api_status(unit.url, new["api-token"]) == 200
