"""A pytest plugin that records what a charm asks of its workload containers.

Loaded into a run of a charm's own unit tests (``-p tests.packing.record_charm_runs``), it
wraps ``ops.testing.Context.run``: after every run it appends to the JSON-lines file named by
``MLOPS_RECORD_CHARM_RUNS`` the Pebble services and checks of every layer the charm added or
changed, every command the charm exec'd in a container (``Context.exec_history``), with
their users, groups, working directories and environments, and the shell scripts the charm
pushed into the container (files starting ``#!`` or named ``*.sh``), which the workload runs.
tests/packing/test_rocks.py checks each of them against what the container's rock holds; the
unit tests decide which states the charm is run in, so the record follows the charm as it
changes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath
from typing import Any

from ops import testing

RECORD_ENV = "MLOPS_RECORD_CHARM_RUNS"


def _new_layers(state_in: testing.State, state_out: testing.State) -> dict[str, list[dict]]:
    """Per container, the layers (as dicts) the run added or changed."""
    layers: dict[str, list[dict]] = {}
    before = {container.name: container.layers for container in state_in.containers}
    for container in state_out.containers:
        old = before.get(container.name, {})
        for label, layer in container.layers.items():
            if old.get(label) != layer:
                layers.setdefault(container.name, []).append(dict(layer.to_dict()))
    return layers


_SCRIPT_MAX_BYTES = 1_000_000


def _pushed_scripts(context: testing.Context, state_out: testing.State) -> dict[str, dict]:
    """Per container, the scripts the charm pushed: ``{container path: content}``."""
    scripts: dict[str, dict] = {}
    for container in state_out.containers:
        roots = [(PurePosixPath("/"), Path(container.get_filesystem(context)))]
        roots += [
            (PurePosixPath(mount.location), Path(mount.source))
            for mount in container.mounts.values()
            if Path(mount.source).is_dir()
        ]
        for location, root in roots:
            for file in root.rglob("*"):
                if not file.is_file() or file.stat().st_size > _SCRIPT_MAX_BYTES:
                    continue
                with file.open("rb") as opened:
                    is_script = opened.read(2) == b"#!" or file.suffix == ".sh"
                if is_script:
                    path = str(location / file.relative_to(root))
                    scripts.setdefault(container.name, {})[path] = file.read_text(errors="replace")
    return scripts


def _exec_record(args: Any) -> dict:
    return {
        "command": list(args.command),
        "environment": dict(args.environment or {}),
        "working_dir": args.working_dir,
        "user": args.user,
        "group": args.group,
    }


def _record(context: testing.Context, state_in: testing.State, state_out: Any) -> None:
    path = os.environ.get(RECORD_ENV)
    if not path:
        return
    ran = isinstance(state_out, testing.State)
    layers = _new_layers(state_in, state_out) if ran else {}
    scripts = _pushed_scripts(context, state_out) if ran else {}
    # exec_history accumulates over a Context's runs: record only what is new.
    seen: dict[str, int] = getattr(context, "_recorded_execs", {})
    execs = {
        name: [_exec_record(args) for args in history[seen.get(name, 0) :]]
        for name, history in context.exec_history.items()
    }
    context._recorded_execs = {  # type: ignore[attr-defined]
        name: len(history) for name, history in context.exec_history.items()
    }
    with open(path, "a") as record:
        for container in sorted({*layers, *execs, *scripts}):
            line = {
                "container": container,
                "layers": layers.get(container, []),
                "execs": execs.get(container, []),
                "scripts": scripts.get(container, {}),
            }
            record.write(json.dumps(line) + "\n")


def pytest_configure(config: Any) -> None:
    """Wrap ``Context.run`` for the whole session (the charm's tests call it)."""
    original = testing.Context.run

    def run(self: testing.Context, event: Any, state: testing.State) -> Any:
        state_out = None
        try:
            state_out = original(self, event, state)
            return state_out
        finally:
            _record(self, state, state_out)

    testing.Context.run = run  # type: ignore[method-assign]
