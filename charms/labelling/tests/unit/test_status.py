"""Every status the machine unit can reach: the cases shared with labelling-k8s, and its own."""

from __future__ import annotations

import subprocess
from pathlib import Path

from ops import testing

import charm
from mlops_charms.machine import InstallError
from tests.labelling_status_cases import StatusCases, status_after


class TestStatus(StatusCases):
    """The shared status cases, on the machine charm."""


def test_a_pip_index_that_is_not_a_url_blocks(ctx, make_state):
    state = make_state(config={"pip-index-url": "pypi.internal"})
    assert status_after(ctx, state, ctx.on.config_changed()) == testing.BlockedStatus(
        "invalid config: pip-index-url: must be an http:// or https:// URL"
    )


def test_unit_waits_for_its_storage(ctx, make_state):
    assert status_after(ctx, make_state(storages=set())) == testing.WaitingStatus(
        "waiting for the labelling-data storage"
    )


def test_failed_install_blocks_with_its_last_line(ctx, make_state, monkeypatch):
    def refuse(*_args, **_kwargs):
        raise InstallError("pip failed: No matching distribution found for uwsgi==2.0.31")

    monkeypatch.setattr(charm.machine.Venv, "ensure", refuse)
    assert status_after(ctx, make_state(), ctx.on.install()) == testing.BlockedStatus(
        "install failed: pip failed: No matching distribution found for uwsgi==2.0.31"
    )


def test_unit_is_installing_until_label_studio_is_there(ctx, make_state):
    Path(charm.PATHS.binaries.uwsgi).unlink()
    # A hook the charm does not reconcile on: Label Studio is not installed yet.
    assert status_after(ctx, make_state(), ctx.on.stop()) == testing.MaintenanceStatus(
        "installing Label Studio"
    )


def test_a_service_systemd_cannot_start_blocks_naming_the_journal(ctx, make_state, machine):
    (machine.state / "systemctl-fails").write_text("restart\nstart\n")
    assert status_after(ctx, make_state(), ctx.on.install()) == testing.BlockedStatus(
        "systemd did not start label-studio: see journalctl -u label-studio"
    )


def test_a_failing_apt_blocks_instead_of_failing_the_hook(ctx, make_state, machine, monkeypatch):
    def apt_fails(packages, fatal=False):
        raise subprocess.CalledProcessError(100, ["apt-get", "install", *packages])

    (machine.root / "var/lib/labelling-charm/apt").unlink()
    monkeypatch.setattr(charm.machine, "apt_install", apt_fails)
    status = status_after(ctx, make_state(), ctx.on.install())
    assert isinstance(status, testing.BlockedStatus)
    assert status.message.startswith("install failed: apt-get install python3-venv ")
