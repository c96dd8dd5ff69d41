"""Shared setup of the integration tests: skip without Juju, build charms, talk to units.

These tests need a Juju controller on a Kubernetes cloud (the project's reference setup is
``concierge prepare -p microk8s``) and ``charmcraft``. Where either is missing every test here
is still collected, then skipped with the reason, so ``tox -e integration`` passes and says why.
Set ``MLOPS_INTEGRATION_REQUIRED=1`` (in a CI job that has a controller) to turn that skip into
an error instead.

pytest-operator 0.43.2 drives the tests: its module-scoped ``ops_test`` fixture makes one model
per test module (destroyed afterwards unless ``--keep-models``), gives every module one event
loop, and marks each ``async def`` test with ``pytest.mark.asyncio`` itself, so pytest-asyncio
(< 0.23, pinned by pytest-operator) stays in its default strict mode.

Environment overrides, for any charm of the repository:

- ``MLOPS_CHARM_<NAME>`` (``<NAME>`` is the charm's name upper-cased, ``-`` as ``_``, for
  example ``MLOPS_CHARM_TRACKING_K8S``): a ``.charm`` file to deploy instead of building one.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from juju.client import client as juju_client
from pytest_operator.plugin import OpsTest

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
STAGE_TOOL = REPO_ROOT / "tools" / "stage.py"
BUILD_DIR = REPO_ROOT / "build"
REQUIRED_ENV = "MLOPS_INTEGRATION_REQUIRED"
CONTROLLER_TIMEOUT_S = 60

_skip_reason: str | None = None
_skip_checked = False


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else "no output"


def juju_unavailable_reason(config: pytest.Config) -> str | None:
    """Why these tests cannot run here, or None when Juju, charmcraft and a controller exist."""
    if shutil.which("juju") is None:
        return (
            "no `juju` binary on PATH: these tests need Juju and a controller on MicroK8s "
            "(`concierge prepare -p microk8s`)"
        )
    if shutil.which("charmcraft") is None:
        return "no `charmcraft` binary on PATH: pytest-operator needs it to build charms"
    controller = config.getoption("--controller", default=None)
    command = ["juju", "models", "--format", "json"]
    if controller:
        command += ["--controller", controller]
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=CONTROLLER_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        return f"no Juju controller reachable: `{' '.join(command)}` timed out"
    except OSError as error:
        return f"cannot run juju: {error}"
    if result.returncode != 0:
        return f"no Juju controller reachable: {_first_line(result.stderr or result.stdout)}"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip this directory's tests, each still collected, when no controller is reachable.

    The skip is a marker, applied before any fixture runs: ``ops_test`` itself would fail (not
    skip) without ``juju`` and ``charmcraft`` on PATH.
    """
    global _skip_reason, _skip_checked
    ours = [item for item in items if HERE in Path(str(item.path)).resolve().parents]
    if not ours:
        return
    if not _skip_checked:
        _skip_reason = juju_unavailable_reason(config)
        _skip_checked = True
    if _skip_reason is None:
        return
    if os.environ.get(REQUIRED_ENV, "").strip() not in ("", "0"):
        raise pytest.UsageError(f"{REQUIRED_ENV} is set but {_skip_reason}")
    marker = pytest.mark.skip(reason=_skip_reason)
    for item in ours:
        item.add_marker(marker)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say once, next to the summary line, why the integration tests were skipped."""
    if _skip_reason is not None:
        terminalreporter.write_line(f"integration tests skipped: {_skip_reason}", yellow=True)


# --- shared fixtures ----------------------------------------------------------------------


CharmBuilder = Callable[[str], Awaitable[Path]]


@pytest.fixture(scope="module")
def charm_builder(ops_test: OpsTest) -> CharmBuilder:
    """Build a charm of this repository by its name; the fixture is an async callable.

    ``await charm_builder("tracking-k8s")`` returns the ``.charm`` file. The charm is staged
    by ``tools/stage.py charm`` (``charms/<name>`` plus the shared modules it imports into
    ``build/<name>/``, the packing recipe), then packed by pytest-operator's ``build_charm``
    (``charmcraft pack``; pass ``--destructive-mode`` to pack on the host).
    """

    async def build(name: str) -> Path:
        prebuilt = os.environ.get(f"MLOPS_CHARM_{name.upper().replace('-', '_')}")
        if prebuilt:
            path = Path(prebuilt).resolve()
            assert path.is_file(), f"prebuilt charm {path} does not exist"
            return path
        await ops_test.run(
            sys.executable,
            str(STAGE_TOOL),
            "charm",
            name,
            "--out",
            str(BUILD_DIR),
            cwd=REPO_ROOT,
            check=True,
            fail_msg=f"staging {name} with {STAGE_TOOL.name} failed",
        )
        staged = BUILD_DIR / name
        assert (staged / "charmcraft.yaml").is_file(), f"{staged} was not staged"
        return await ops_test.build_charm(staged)

    return build


@dataclass(frozen=True)
class ActionOutcome:
    """A finished Juju action: its status, its failure message and its results."""

    status: str
    message: str
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        return self.status == "completed"


ActionRunner = Callable[..., Awaitable[ActionOutcome]]


@pytest.fixture(scope="module")
def run_action(ops_test: OpsTest) -> ActionRunner:
    """Run an action on a unit to its end; the fixture is an async callable.

    ``await run_action("app/0", "action-name", param=value)`` returns an ``ActionOutcome``.
    It fails the test when the action fails, unless called with ``expect_failure=True``,
    which in turn fails the test when the action succeeds.
    """

    async def run(
        unit_name: str, action_name: str, *, expect_failure: bool = False, **params: Any
    ) -> ActionOutcome:
        assert ops_test.model is not None
        unit = ops_test.model.units[unit_name]
        action = await unit.run_action(action_name, **params)
        await action.wait()
        facade = juju_client.ActionFacade.from_connection(ops_test.model.connection())
        found = await facade.Actions(entities=[{"tag": f"action-{action.entity_id}"}])
        result = found.results[0]
        outcome = ActionOutcome(
            status=result.status or action.status,
            message=result.message or "",
            results=dict(result.output or action.results or {}),
        )
        if expect_failure:
            assert outcome.status == "failed", (
                f"{action_name} on {unit_name} should have failed: {outcome}"
            )
        else:
            assert outcome.succeeded, (
                f"{action_name} on {unit_name} ended {outcome.status}: {outcome.message}"
            )
        return outcome

    return run


AddressGetter = Callable[[str], Awaitable[str]]


@pytest.fixture(scope="module")
def unit_address(ops_test: OpsTest) -> AddressGetter:
    """Find a unit's address as ``juju status`` shows it; the fixture is an async callable.

    ``await unit_address("app/0")`` returns the address. On Kubernetes that is the pod's IP,
    which the host of a MicroK8s cloud can reach directly.
    """

    async def address(unit_name: str) -> str:
        _, stdout, _ = await ops_test.juju(
            "status", "--format", "json", check=True, fail_msg="juju status failed"
        )
        app = unit_name.split("/")[0]
        units = json.loads(stdout)["applications"][app].get("units") or {}
        found = units.get(unit_name, {}).get("address")
        assert found, f"juju status shows no address for {unit_name}"
        return found

    return address


PlanReader = Callable[[str, str], Awaitable[dict[str, Any]]]


@pytest.fixture(scope="module")
def pebble_plan(ops_test: OpsTest) -> PlanReader:
    """Read a container's Pebble plan, parsed; the fixture is an async callable.

    ``await pebble_plan("app/0", "container")`` returns the plan as a dict.
    """
    import yaml

    async def plan(unit_name: str, container: str) -> dict[str, Any]:
        _, stdout, _ = await ops_test.juju(
            "ssh",
            "--container",
            container,
            unit_name,
            "/charm/bin/pebble",
            "plan",
            check=True,
            fail_msg=f"reading the Pebble plan of {unit_name}'s {container} container failed",
        )
        return yaml.safe_load(stdout) or {}

    return plan


FileWriter = Callable[[str, str, dict[str, str]], Awaitable[None]]


@pytest.fixture(scope="module")
def registry_files(ops_test: OpsTest) -> FileWriter:
    """Write files into a registry unit's container; the fixture is an async callable.

    ``await registry_files("data-versioning-k8s/0", folder, {"texts/a.txt": "…"})`` replaces
    ``folder`` (under the registry's storage) with those files, owned by the service user, as
    a create-version ``source`` must be (and so is the folder above it).
    """

    async def write(unit_name: str, folder: str, files: dict[str, str]) -> None:
        folders = sorted({str(Path(folder, name).parent) for name in files} | {folder})
        script = [f"rm -rf {shlex.quote(folder)}", f"mkdir -p {shlex.join(folders)}"]
        script += [
            f"printf %s {shlex.quote(text)} > {shlex.quote(f'{folder}/{name}')}"
            for name, text in files.items()
        ]
        # The folder above too: create-version's job runs as the service user.
        script.append(f"chown -R _daemon_:_daemon_ {shlex.quote(str(Path(folder).parent))}")
        await ops_test.juju(
            "ssh",
            "--container",
            "registry",
            unit_name,
            "sh",
            "-c",
            shlex.quote(" && ".join(script)),
            check=True,
            fail_msg=f"writing files into {unit_name}'s {folder} failed",
        )

    return write
