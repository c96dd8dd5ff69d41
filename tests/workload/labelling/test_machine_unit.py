"""The labelling machine charm's systemd unit, checked by systemd and run for real.

This machine has no running systemd. The unit is rendered by the charm's own module
(``charms/labelling/src/label_studio_unit.py``, the text the charm writes to
``/etc/systemd/system/label-studio.service``) from the shared core's settings, with the server's
files (``secrets.env`` in the ``EnvironmentFile`` syntax) written as the charm writes them.
``systemd-analyze verify`` checks the unit; then the test does what systemd would: runs the
unit's ``ExecStartPre`` steps and its ``ExecStart`` with its ``Environment=`` lines, its
``EnvironmentFile`` and its ``User`` in its ``WorkingDirectory``. The official SDK and the REST
API then check it as they check the Kubernetes charm's Label Studio (test_sdk_client.py).
"""

from __future__ import annotations

import os
import pwd
import shutil
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlops_charms import label_studio, systemd
from tests.systemd_units import environment_file, unit_settings
from tests.workload.labelling.harness import binaries, migrated_database, rest_call
from tests.workload.labelling.test_sdk_client import (
    TASKS,
    assert_keep_alive_is_safe,
    assert_session_kept_everything,
    run_sdk_session,
)
from tests.workload.processes import assert_systemd_verifies, free_port, run_unit

pytestmark = pytest.mark.slow

CHARM_SRC = Path(__file__).resolve().parents[3] / "charms" / "labelling" / "src"
if str(CHARM_SRC) not in sys.path:
    sys.path.insert(0, str(CHARM_SRC))

import label_studio_unit  # noqa: E402

ADMIN_PASSWORD = "admin-Pa55word-with-a-'quote'-and-$dollar"
ADMIN_TOKEN = "machine-unit-token-0123456789abcdef0123456"


@dataclass
class RenderedUnit:
    path: Path
    settings: dict[str, list[str]]
    server: label_studio.ServerSettings


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RenderedUnit]:
    """label-studio.service and the server's files, as the charm writes them.

    Label Studio from its venv here (``LABEL_STUDIO_VENV``), run as this user, on a migrated
    database (the first start's migrations are the hook sequences' and the benchmark's).
    """
    local = binaries()
    base = tmp_path_factory.mktemp("machine-unit")
    user = pwd.getpwuid(os.getuid()).pw_name
    paths = label_studio_unit.MachinePaths(
        venv=str(Path(local.uwsgi).parent.parent), python=sys.executable, user=user
    )
    data_dir = base / "labelling-data"
    (data_dir / "secrets").mkdir(parents=True)
    shutil.copyfile(migrated_database(), data_dir / "label_studio.sqlite3")
    settings = label_studio.ServerSettings(
        data_dir=str(data_dir),
        port=free_port(),
        admin_password=ADMIN_PASSWORD,
        admin_token=ADMIN_TOKEN,
        secret_key="django-secret-key-0123456789abcdef0123456789abcdef",
        binaries=local,
    )
    for path, content in label_studio.files(settings, systemd.env_file).items():
        Path(path).write_text(content)
        Path(path).chmod(0o600)
    unit = base / "label-studio.service"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(label_studio_unit, "PATHS", paths)
        unit.write_text(label_studio_unit.unit_file(settings, "labelling/0"))
    yield RenderedUnit(unit, unit_settings(unit.read_text()), settings)


def test_rendered_unit_passes_systemd_analyze_verify(rendered: RenderedUnit):
    assert_systemd_verifies(rendered.path)


def test_the_units_secrets_are_only_in_its_0600_environment_file(rendered: RenderedUnit):
    (env_path,) = rendered.settings["EnvironmentFile"]
    assert oct(Path(env_path).stat().st_mode & 0o777) == "0o600"
    assert environment_file(Path(env_path).read_text())["LABEL_STUDIO_PASSWORD"] == (
        ADMIN_PASSWORD
    )
    assert ADMIN_PASSWORD not in rendered.path.read_text()
    assert ADMIN_TOKEN not in rendered.path.read_text()


@pytest.fixture(scope="module")
def server(rendered: RenderedUnit) -> Iterator[RenderedUnit]:
    """Label Studio run as systemd would run the unit: its steps, command, environment, user."""
    with run_unit(
        rendered.settings, rendered.server.health_url, rendered.path.with_suffix(".log")
    ):
        yield rendered


def test_the_units_label_studio_serves_the_admin_over_rest(server: RenderedUnit):
    url = server.server.local_url
    whoami = rest_call(url, ADMIN_TOKEN, "GET", "/api/current-user/whoami")
    assert whoami["email"] == label_studio.ADMIN_USERNAME
    with pytest.raises(urllib.error.HTTPError) as refused:
        rest_call(url, "not-the-token", "GET", "/api/projects")
    assert refused.value.code == 401


def test_the_official_sdk_works_against_the_units_label_studio(server: RenderedUnit):
    report = run_sdk_session(server.server.local_url, ADMIN_TOKEN, TASKS)
    assert_session_kept_everything(report)
    assert_keep_alive_is_safe(server.server.port, ADMIN_TOKEN)
