"""Hook sequences on a real Pebble: ops.testing runs of a charm whose container is a real daemon.

``ops.testing`` runs one hook of the real charm (its charmcraft.yaml; only the storage mount
locations move to folders of the test). Its fake Pebble is replaced by a client of a real
``pebble run`` on this machine, so every file the charm pushes, every layer it adds, every
service it starts and every command it execs is real, and carries over to the next hook as on
a unit. The output State of one hook (relations, secrets, peer data, status) is the input of
the next, as Juju would keep it. What this machine cannot have is substituted, and nothing
else: the rock's program paths (each workload module's ``ROCK``), Juju's Pebble client and
socket in the container (``mlops_charms.workload.JUJU_PEBBLE``).

A container restart (the pod rescheduled: workload filesystem and Pebble's state gone, the
storage kept) stops the daemon and starts a fresh one on the same socket.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import ops
import pytest
import yaml
from ops import pebble, testing
from scenario import mocking

from mlops_charms import workload
from tests.workload.processes import PebbleDaemon, run_pebble

# Pebble changes that a hook which changes nothing may still cause: the checks' own runs.
CHECK_CHANGES = frozenset({"perform-check", "recover-check"})


@dataclasses.dataclass
class WorkloadContainer:
    """One workload container: a real Pebble daemon, its socket and its storage folders."""

    name: str
    base: Path
    daemon: PebbleDaemon | None = None
    stack: contextlib.ExitStack | None = None

    @property
    def socket_path(self) -> Path:
        return self.base / "pebble" / ".pebble.socket"

    @property
    def client(self) -> pebble.Client:
        assert self.daemon is not None, f"{self.name}: Pebble is not running"
        return self.daemon.client

    def start(self) -> None:
        self.stack = contextlib.ExitStack()
        self.daemon = self.stack.enter_context(run_pebble(self.base))
        # The services may run as an unprivileged user, who must reach the socket.
        (self.base / "pebble").chmod(0o755)
        self.socket_path.chmod(0o666)

    def stop(self) -> None:
        if self.stack is not None:
            self.stack.close()
        self.daemon = self.stack = None
        shutil.rmtree(self.base / "pebble", ignore_errors=True)
        (self.base / "pebble.log").unlink(missing_ok=True)

    def changes_since(self, change_id: int) -> list[pebble.Change]:
        """Pebble's changes after ``change_id``, check runs left out."""
        changes = self.client.get_changes(select=pebble.ChangeState.ALL)
        return [
            change
            for change in changes
            if int(change.id) > change_id and change.kind not in CHECK_CHANGES
        ]

    def last_change_id(self) -> int:
        changes = self.client.get_changes(select=pebble.ChangeState.ALL)
        return max((int(change.id) for change in changes), default=0)

    def running(self) -> set[str]:
        """The names of the services running now."""
        return {s.name for s in self.client.get_services() if s.is_running()}

    def wait_for_checks(self, timeout: float = 120.0) -> None:
        """Wait until every enabled check of the plan has succeeded at least once and is up."""
        assert self.daemon is not None
        for check in self.client.get_checks():
            if check.startup != pebble.CheckStartup.DISABLED:
                self.daemon.wait_for_check(check.name, timeout=timeout)

    def custom_notices(self, key: str) -> list[pebble.Notice]:
        return self.client.get_notices(
            types=[pebble.NoticeType.CUSTOM], keys=[key], users=pebble.NoticesUsers.ALL
        )


class PebbleBackedCharm:
    """Runs hooks of ``charm_class`` with its containers on real Pebble daemons.

    Args:
        charm_class: the charm.
        charm_root: the charm's folder (its charmcraft.yaml).
        base: a folder of the test, readable by the workload's service user.
        rock_paths: for each workload module, the ``Binaries`` of this machine (its
            module-level ``ROCK`` is replaced while hooks run).

    """

    def __init__(
        self,
        charm_class: type[ops.CharmBase],
        charm_root: Path,
        base: Path,
        *,
        rock_paths: Mapping[Any, Any] = (),  # type: ignore[assignment]
    ):
        self.base = base
        raw = yaml.safe_load((charm_root / "charmcraft.yaml").read_text())
        self.storage: dict[str, Path] = {}
        self.containers: dict[str, WorkloadContainer] = {}
        for name, container in raw.get("containers", {}).items():
            self.containers[name] = WorkloadContainer(name, base / "containers" / name)
            for mount in container.get("mounts", []):
                folder = base / "storage" / mount["storage"]
                folder.mkdir(parents=True, exist_ok=True)
                folder.chmod(0o755)  # root:root 0755, as most storage classes make it
                mount["location"] = str(folder)
                self.storage[mount["storage"]] = folder
        meta = {k: v for k, v in raw.items() if k not in ("config", "actions")}
        self.context = testing.Context(
            charm_class, meta=meta, config=raw.get("config"), actions=raw.get("actions")
        )
        self._rock_paths = dict(rock_paths)
        self.hooks_run = 0

    # --- the daemons ------------------------------------------------------------------------

    def start(self) -> None:
        for container in self.containers.values():
            container.base.mkdir(parents=True, exist_ok=True)
            container.base.chmod(0o755)
            container.start()

    def stop(self) -> None:
        for container in self.containers.values():
            container.stop()

    def restart_container(self, name: str) -> None:
        """The pod was rescheduled: processes and Pebble's plan gone, the storage kept."""
        container = self.containers[name]
        container.stop()
        container.start()

    def refreshed(
        self, charm_class: type[ops.CharmBase], charm_root: Path, **kwargs: Any
    ) -> PebbleBackedCharm:
        """The unit after ``juju refresh`` to ``charm_class``: the same storage and daemons."""
        unit = PebbleBackedCharm(charm_class, charm_root, self.base, **kwargs)
        unit.containers.update(
            {name: c for name, c in self.containers.items() if name in unit.containers}
        )
        unit.hooks_run = self.hooks_run
        return unit

    # --- the charm --------------------------------------------------------------------------

    def container_state(self, name: str, **kwargs: Any) -> testing.Container:
        """The ``testing.Container`` to put in a State (its Pebble is the real one)."""
        return testing.Container(name, can_connect=True, **kwargs)

    def storages(self) -> set[testing.Storage]:
        return {testing.Storage(name) for name in self.storage}

    def run(self, event: Any, state: testing.State) -> testing.State:
        """Run one hook; the real Pebble daemons keep what it did."""
        with self._patched():
            out = self.context.run(event, state)
        self.hooks_run += 1
        return out

    def run_action(
        self, name: str, state: testing.State, **params: Any
    ) -> tuple[Any, testing.State]:
        """Run an action; its results (or the failure) and the State after it."""
        with self._patched():
            try:
                out = self.context.run(self.context.on.action(name, params=params), state)
            except testing.ActionFailed as failure:
                self.hooks_run += 1
                return failure, cast("testing.State", failure.state)
        self.hooks_run += 1
        return self.context.action_results, out

    @contextlib.contextmanager
    def charm(self, state: testing.State) -> Iterator[Any]:
        """The live charm on ``state``, to read what it derives (start reconciles nothing)."""
        with self._patched(), self.context(self.context.on.start(), state) as manager:
            yield manager.charm

    def notice_event(self, state: testing.State, container: str, key: str) -> Any:
        """A pebble-custom-notice event for the newest real notice ``key``, and the State."""
        notices = self.containers[container].custom_notices(key)
        assert notices, f"no {key} notice in {container}"
        real = max(notices, key=lambda n: n.last_repeated)
        notice = testing.Notice(
            key=real.key,
            id=real.id,
            user_id=real.user_id,
            type=pebble.NoticeType.CUSTOM,
            first_occurred=real.first_occurred,
            last_occurred=real.last_occurred,
            last_repeated=real.last_repeated,
            occurrences=real.occurrences,
            last_data=real.last_data,
        )
        old = state.get_container(container)
        new = dataclasses.replace(old, notices=[*old.notices, notice])
        state = dataclasses.replace(state, containers={*(state.containers - {old}), new})
        return self.context.on.pebble_custom_notice(new, notice), state

    @contextlib.contextmanager
    def _patched(self) -> Iterator[None]:
        real = {
            f"/charm/containers/{name}/pebble.socket": str(c.socket_path)
            for name, c in self.containers.items()
        }
        original = mocking._MockModelBackend.get_pebble

        def get_pebble(backend, socket_path: str):
            if socket_path in real:
                return pebble.Client(socket_path=real[socket_path])
            return original(backend, socket_path)

        # The charm's own workload module: a previous release's while it runs (see
        # tests/previous_release.py).
        charm_workload = sys.modules.get(workload.__name__, workload)
        local_pebble = charm_workload.PebbleInContainer(
            binary=shutil.which("pebble") or "pebble",
            socket=str(next(iter(self.containers.values())).socket_path),
        )
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(mocking._MockModelBackend, "get_pebble", get_pebble)
            patch.setattr(charm_workload, "JUJU_PEBBLE", local_pebble)
            for module, binaries in self._rock_paths.items():
                patch.setattr(module, "ROCK", binaries)
            yield


@contextlib.contextmanager
def shared_folder(prefix: str) -> Iterator[Path]:
    """A temporary folder the workloads' service users can read (pytest's tmp_path is 0700).

    Short, under /tmp: a Pebble socket's path inside it must fit a Unix socket address.
    """
    base = Path(tempfile.mkdtemp(prefix=prefix))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``predicate`` until it returns something true; fail saying ``what`` after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
