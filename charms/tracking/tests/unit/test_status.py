"""Every status the machine unit can reach: the cases shared with tracking-k8s, and its own."""

from __future__ import annotations

import subprocess

from conftest import INTERNAL_URL
from ops import testing

import charm
from mlops_charms.machine import InstallError
from tests.tracking_status_cases import StatusCases, status_after
from tests.tracking_testing import database_relation, database_secret


class TestStatus(StatusCases):
    """The shared status cases, on the machine charm."""


def test_a_pip_index_that_is_not_a_url_blocks(ctx, make_state):
    state = make_state(config={"pip-index-url": "pypi.internal"})
    assert status_after(ctx, state, ctx.on.config_changed()) == testing.BlockedStatus(
        "invalid config: pip-index-url: must be an http:// or https:// URL"
    )


def test_unit_waits_for_its_storage(ctx, make_state):
    assert status_after(ctx, make_state(storages=set())) == testing.WaitingStatus(
        "waiting for the mlflow-data storage"
    )


def test_failed_install_blocks_with_its_last_line(ctx, make_state, monkeypatch):
    def refuse(*_args, **_kwargs):
        raise InstallError("pip failed: No matching distribution found for mlflow[auth]==3.17.2")

    monkeypatch.setattr(charm.machine.Venv, "ensure", refuse)
    assert status_after(ctx, make_state(), ctx.on.install()) == testing.BlockedStatus(
        "install failed: pip failed: No matching distribution found for mlflow[auth]==3.17.2"
    )


def test_ready_server_is_active_with_its_machine_url(ctx, make_state):
    assert status_after(ctx, make_state()) == testing.ActiveStatus(f"serving at {INTERNAL_URL}")


def test_unit_on_postgresql_is_active(ctx, make_state):
    secret = database_secret()
    state = make_state(relations={database_relation(secret)}, secrets={secret})
    assert status_after(ctx, state) == testing.ActiveStatus(f"serving at {INTERNAL_URL}")


def test_a_service_systemd_cannot_start_blocks_naming_the_journal(ctx, make_state, machine):
    (machine.state / "systemctl-fails").write_text("restart\nstart\n")
    assert status_after(ctx, make_state(), ctx.on.install()) == testing.BlockedStatus(
        "systemd did not start mlflow: see journalctl -u mlflow"
    )


def test_a_failing_apt_blocks_instead_of_failing_the_hook(ctx, make_state, machine, monkeypatch):
    def apt_fails(packages, fatal=False):
        raise subprocess.CalledProcessError(100, ["apt-get", "install", *packages])

    (machine.root / "var/lib/mlflow-charm/apt").unlink()
    monkeypatch.setattr(charm.machine, "apt_install", apt_fails)
    status = status_after(ctx, make_state(), ctx.on.install())
    assert isinstance(status, testing.BlockedStatus)
    assert status.message.startswith("install failed: apt-get install python3-venv failed: ")
