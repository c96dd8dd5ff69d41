"""The statuses of every machine charm's own part: its config, storage, install and units.

A ``Test...`` subclass in a machine charm's tests runs them; its class attributes name what
differs (the storage, where the install's stamps are, the first apt package and unit). The
fixtures are the machine charms' (``ctx``, ``make_state``, ``machine``: tests/fake_machine.py).
"""

from __future__ import annotations

import subprocess

from ops import testing

from mlops_charms import machine as machine_install
from mlops_charms.machine import InstallError


class MachineStatusCases:
    """The cases; a subclass sets the four names below."""

    storage: str  # the storage the unit waits for
    state_dir: str  # the install's stamps, under the machine's root
    first_apt_package: str
    first_unit: str  # the unit systemd starts first

    def test_a_pip_index_that_is_not_a_url_blocks(self, ctx, make_state):
        state = make_state(config={"pip-index-url": "pypi.internal"})
        out = ctx.run(ctx.on.config_changed(), state)
        assert out.unit_status == testing.BlockedStatus(
            "invalid config: pip-index-url: must be an http:// or https:// URL"
        )

    def test_unit_waits_for_its_storage(self, ctx, make_state):
        out = ctx.run(ctx.on.install(), make_state(storages=set()))
        assert out.unit_status == testing.WaitingStatus(f"waiting for the {self.storage} storage")

    def test_a_failed_install_blocks_with_its_last_line(self, ctx, make_state, monkeypatch):
        def refuse(*_args, **_kwargs):
            raise InstallError("pip failed: No matching distribution found for pkg==1.0")

        # The charm's venv or the workload package, whichever it installs first.
        monkeypatch.setattr(machine_install.Venv, "ensure", refuse)
        monkeypatch.setattr(machine_install, "ensure_workload", refuse)
        out = ctx.run(ctx.on.install(), make_state())
        assert out.unit_status == testing.BlockedStatus(
            "install failed: pip failed: No matching distribution found for pkg==1.0"
        )

    def test_a_failing_apt_blocks_instead_of_failing_the_hook(
        self, ctx, make_state, machine, monkeypatch
    ):
        def apt_fails(packages, fatal=False):
            raise subprocess.CalledProcessError(100, ["apt-get", "install", *packages])

        (machine.root / self.state_dir / "apt").unlink()
        monkeypatch.setattr(machine_install, "apt_install", apt_fails)
        out = ctx.run(ctx.on.install(), make_state())
        assert isinstance(out.unit_status, testing.BlockedStatus)
        assert out.unit_status.message.startswith(
            f"install failed: apt-get install {self.first_apt_package} "
        )

    def test_a_unit_systemd_cannot_start_blocks_naming_the_journal(self, ctx, make_state, machine):
        (machine.state / "systemctl-fails").write_text("restart\nstart\n")
        out = ctx.run(ctx.on.start(), make_state())
        assert out.unit_status == testing.BlockedStatus(
            f"systemd did not start {self.first_unit}: see journalctl -u {self.first_unit}"
        )
