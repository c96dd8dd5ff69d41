"""apply_layer, push_if_changed and friends: the workload changes only when the goal differs.

What depends on Pebble itself (what a replan starts, a service left disabled, the changes
Pebble records) runs on a real daemon; which services a call names runs in ops.testing.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from pathlib import Path

import ops
import pytest
from ops import pebble, testing

from mlops_charms.pebble import (
    apply_layer,
    push_if_changed,
    stop_layer_services,
)
from mlops_charms.workload import http_ready_check, tcp_ready_check
from tests.lib.real_pebble import change_kinds, running
from tests.workload.processes import PebbleDaemon

SERVER = {"override": "replace", "command": "sleep 60", "startup": "enabled"}
JOB = {"override": "replace", "command": "sleep 60", "startup": "disabled"}


def layer(**services: dict) -> pebble.LayerDict:
    return {"summary": "demo", "services": services}  # type: ignore[typeddict-item]


SERVER_AND_JOB = layer(server=SERVER, job=JOB)


# --- on a real Pebble ------------------------------------------------------------------------


def test_apply_starts_the_enabled_services_once_and_then_changes_nothing(
    real_container: ops.Container, pebble_daemon: PebbleDaemon
):
    # The shared check shapes too: Pebble must give them back as the layer wrote them, or
    # every hook would replan.
    checks = {"health": http_ready_check("http://127.0.0.1:9/"), "port": tcp_ready_check(9)}
    goal: pebble.LayerDict = {**SERVER_AND_JOB, "checks": checks}  # type: ignore[typeddict-item]

    first = apply_layer(real_container, "demo", goal, restart=False)
    second = apply_layer(real_container, "demo", goal, restart=False)

    assert (first, second) == (True, False)
    assert running(pebble_daemon) == {"server"}
    assert set(real_container.get_plan().services) == {"server", "job"}
    assert change_kinds(pebble_daemon) == ["replan"]


def test_a_service_that_exits_at_once_is_left_to_pebble_without_a_traceback(
    real_container: ops.Container, pebble_daemon: PebbleDaemon
):
    # A start step that fails at once (a migration refused): Pebble's start change fails.
    failing = {"override": "replace", "command": "/bin/sh -c 'exit 1'", "startup": "enabled"}

    acted = apply_layer(real_container, "demo", layer(server=failing), restart=False)

    assert acted is True
    assert "server" in real_container.get_plan().services


def test_a_disabled_service_is_not_started_by_a_later_hook(
    real_container: ops.Container, pebble_daemon: PebbleDaemon
):
    # The bug this fixes: every hook started the stopped services of the layer, jobs included.
    apply_layer(real_container, "demo", layer(job=JOB), restart=False)

    acted = apply_layer(real_container, "demo", layer(job=JOB), restart=False)

    assert acted is False
    assert running(pebble_daemon) == set()
    assert "start" not in change_kinds(pebble_daemon)


def test_a_running_disabled_service_is_stopped(
    real_container: ops.Container, pebble_daemon: PebbleDaemon
):
    apply_layer(real_container, "demo", layer(job=JOB), restart=False)
    real_container.start("job")  # e.g. started by hand, or a job of an older charm revision

    acted = apply_layer(real_container, "demo", layer(job=JOB), restart=False)

    assert acted is True
    assert running(pebble_daemon) == set()


def test_restart_with_a_changed_layer_restarts_every_enabled_service(
    real_container: ops.Container, tmp_path: Path
):
    starts = tmp_path / "starts"
    server = {**SERVER, "command": f"/bin/sh -c 'echo >> {starts}; exec sleep 60'"}
    apply_layer(real_container, "demo", layer(server=server), restart=False)
    # Its config file changed (restart) and so did a check (e.g. a new health path).
    goal: pebble.LayerDict = {**layer(server=server), "checks": {"up": tcp_ready_check(9)}}

    acted = apply_layer(real_container, "demo", goal, restart=True)

    assert acted is True
    assert starts.read_text().count("\n") == 2


def test_push_writes_owner_group_and_mode(exec_container: ops.Container, tmp_path: Path):
    user, group = _another_user()
    path = tmp_path / "etc" / "app.conf"

    written = push_if_changed(
        exec_container, str(path), "a = 1\n", permissions=0o640, user=user, group=group
    )

    assert written is True
    assert path.read_text() == "a = 1\n"
    info = path.stat()
    assert stat.S_IMODE(info.st_mode) == 0o640
    assert (pwd.getpwuid(info.st_uid).pw_name, grp.getgrgid(info.st_gid).gr_name) == (user, group)


def test_push_leaves_unchanged_content_alone(exec_container: ops.Container, tmp_path: Path):
    path = tmp_path / "app.conf"
    push_if_changed(exec_container, str(path), "a = 1\n")
    before = path.stat()

    written = push_if_changed(exec_container, str(path), "a = 1\n")

    assert written is False
    after = path.stat()
    # Pebble writes a file anew (a new inode) on every push.
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_push_rewrites_changed_content(exec_container: ops.Container, tmp_path: Path):
    path = tmp_path / "app.conf"
    push_if_changed(exec_container, str(path), "a = 1\n")

    written = push_if_changed(exec_container, str(path), "a = 2\n")

    assert written is True
    assert path.read_text() == "a = 2\n"


def _another_user() -> tuple[str, str]:
    """A user and group other than root where the test may chown; else the current ones."""
    if os.geteuid() == 0:
        try:
            nobody = pwd.getpwnam("nobody")
        except KeyError:
            pass
        else:
            return nobody.pw_name, grp.getgrgid(nobody.pw_gid).gr_name
    me = pwd.getpwuid(os.geteuid())
    return me.pw_name, grp.getgrgid(os.getegid()).gr_name


# --- which services a call names, in ops.testing ---------------------------------------------

META = {"name": "demo", "containers": {"app": {}}}


class DemoCharm(ops.CharmBase):
    """A charm with one container; each test calls the helpers on it."""


@pytest.fixture
def ctx() -> testing.Context[DemoCharm]:
    return testing.Context(DemoCharm, meta=META)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[str, ...]]]:
    """Each service-changing ``ops.Container`` call, with the service names it was given."""
    recorded: list[tuple[str, tuple[str, ...]]] = []
    for name in ("replan", "restart", "start", "stop"):
        original = getattr(ops.Container, name)

        def spy(self, *names, _name=name, _original=original):
            recorded.append((_name, names))
            return _original(self, *names)

        monkeypatch.setattr(ops.Container, name, spy)
    return recorded


def app_container(planned: pebble.LayerDict, **statuses: pebble.ServiceStatus):
    return testing.Container(
        "app",
        can_connect=True,
        layers={"demo": pebble.Layer(planned)},
        service_statuses=statuses,
    )


def run_in(ctx, container: testing.Container, action):
    """Run ``action(container)`` in a hook; what it returned and the container after it."""
    with ctx(ctx.on.update_status(), testing.State(containers={container})) as manager:
        result = action(manager.charm.unit.get_container("app"))
        out = manager.run()
    return result, out.get_container("app")


ACTIVE, INACTIVE = pebble.ServiceStatus.ACTIVE, pebble.ServiceStatus.INACTIVE


def test_restart_restarts_the_enabled_services_only(ctx, calls):
    container = app_container(SERVER_AND_JOB, server=ACTIVE, job=INACTIVE)

    acted, out = run_in(
        ctx, container, lambda c: apply_layer(c, "demo", SERVER_AND_JOB, restart=True)
    )

    assert acted is True
    assert calls == [("restart", ("server",))]
    assert out.service_statuses["job"] == INACTIVE


def test_restart_of_a_layer_without_enabled_services_does_nothing(ctx, calls):
    container = app_container(layer(job=JOB), job=INACTIVE)

    acted, _ = run_in(
        ctx, container, lambda c: apply_layer(c, "demo", layer(job=JOB), restart=True)
    )

    assert acted is False
    assert calls == []


def test_a_stopped_enabled_service_is_started(ctx, calls):
    container = app_container(SERVER_AND_JOB, server=INACTIVE, job=INACTIVE)

    acted, out = run_in(
        ctx, container, lambda c: apply_layer(c, "demo", SERVER_AND_JOB, restart=False)
    )

    assert acted is True
    assert calls == [("start", ("server",))]
    assert out.service_statuses == {"server": ACTIVE, "job": INACTIVE}


def test_unchanged_layer_with_its_services_running_is_left_alone(ctx, calls):
    container = app_container(SERVER_AND_JOB, server=ACTIVE, job=INACTIVE)

    acted, _ = run_in(
        ctx, container, lambda c: apply_layer(c, "demo", SERVER_AND_JOB, restart=False)
    )

    assert acted is False
    assert calls == []


def test_changed_command_is_added_to_the_layer_and_replanned(ctx, calls):
    container = app_container(SERVER_AND_JOB, server=ACTIVE, job=INACTIVE)
    goal = layer(server={**SERVER, "command": "sleep 61"}, job=JOB)

    acted, out = run_in(ctx, container, lambda c: apply_layer(c, "demo", goal, restart=False))

    assert acted is True
    assert calls == [("replan", ())]
    assert out.plan.services["server"].command == "sleep 61"


def test_changed_check_alone_is_replanned(ctx, calls):
    planned: pebble.LayerDict = {**SERVER_AND_JOB, "checks": {"up": tcp_ready_check(80)}}
    goal: pebble.LayerDict = {**SERVER_AND_JOB, "checks": {"up": tcp_ready_check(81)}}
    container = app_container(planned, server=ACTIVE, job=INACTIVE)

    acted, out = run_in(ctx, container, lambda c: apply_layer(c, "demo", goal, restart=False))

    assert acted is True
    assert calls == [("replan", ())]
    assert out.plan.checks["up"].tcp == {"host": "127.0.0.1", "port": 81}


def test_changed_layer_also_stops_a_running_disabled_service(ctx, calls):
    container = app_container(SERVER_AND_JOB, server=ACTIVE, job=ACTIVE)
    goal = layer(server={**SERVER, "command": "sleep 61"}, job=JOB)

    acted, out = run_in(ctx, container, lambda c: apply_layer(c, "demo", goal, restart=False))

    assert acted is True
    assert calls == [("replan", ()), ("stop", ("job",))]
    assert out.service_statuses["job"] == INACTIVE


def test_stop_layer_services_stops_the_running_ones(ctx, calls):
    container = app_container(SERVER_AND_JOB, server=ACTIVE, job=INACTIVE)

    stopped, out = run_in(ctx, container, lambda c: stop_layer_services(c, SERVER_AND_JOB))

    assert stopped is True
    assert calls == [("stop", ("server",))]
    assert out.service_statuses == {"server": INACTIVE, "job": INACTIVE}


def test_stop_layer_services_with_nothing_running_does_nothing(ctx, calls):
    container = app_container(SERVER_AND_JOB, server=INACTIVE, job=INACTIVE)

    stopped, _ = run_in(ctx, container, lambda c: stop_layer_services(c, SERVER_AND_JOB))

    assert stopped is False
    assert calls == []
