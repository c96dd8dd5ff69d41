"""rotate-credentials on labelling-k8s: the shared cases, a command in the container, no restart.

The command that sets the admin's credentials runs in the label-studio container through
Pebble exec (``testing.Exec`` answers it here); the shared cases read what it was given.
"""

from __future__ import annotations

import pytest
from ops import testing

from tests.labelling_testing import SECRETS_ENV
from tests.rotation_cases import LabellingRotationCases, rotate

PYTHON = "/opt/label-studio/bin/python"
CONTAINER = "label-studio"


@pytest.fixture
def exec_outcome() -> dict:
    return {"return_code": 0, "stderr": ""}


@pytest.fixture
def make_container(data_dir, exec_outcome):
    """The label-studio container, its Python answering the credentials command."""

    def make(*, can_connect: bool = True, **kwargs) -> testing.Container:
        return testing.Container(
            CONTAINER,
            can_connect=can_connect,
            mounts={"data": testing.Mount(location="/var/lib/label-studio", source=data_dir)},
            execs={testing.Exec([PYTHON], **exec_outcome)},
            **kwargs,
        )

    return make


@pytest.fixture
def admin_commands(ctx):
    return lambda: [
        args.environment
        for args in ctx.exec_history.get(CONTAINER, [])
        if args.command[0] == PYTHON
    ]


@pytest.fixture
def admin_command_fails(exec_outcome) -> None:
    exec_outcome.update(return_code=1, stderr="django.db.utils.OperationalError: locked\n")


@pytest.fixture
def secrets_env(data_dir):
    return lambda: (data_dir / SECRETS_ENV.removeprefix("/var/lib/label-studio/")).read_text()


class TestRotateCredentials(LabellingRotationCases):
    """The shared cases, on labelling-k8s."""


def test_the_command_runs_in_label_studios_project_with_its_database(ctx, make_state):
    rotate(ctx, make_state())
    (args,) = ctx.exec_history[CONTAINER]
    assert args.command[:2] == [PYTHON, "-c"]
    assert args.working_dir == "/opt/label-studio/lib/python3.12/site-packages/label_studio"
    assert args.environment["DJANGO_SETTINGS_MODULE"] == "core.settings.label_studio"
    assert args.environment["LABEL_STUDIO_BASE_DATA_DIR"] == "/var/lib/label-studio"


def test_rotation_restarts_nothing_now_or_at_the_next_hook(ctx, make_state, pebble_calls):
    planned = ctx.run(ctx.on.config_changed(), make_state())
    pebble_calls.clear()

    _, rotated = rotate(ctx, planned)
    assert pebble_calls == []

    ctx.run(ctx.on.update_status(), rotated)
    assert pebble_calls == []
