"""Helpers shared by the tests that run the charms through ops.testing."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

import ops
import pytest


def record_service_changes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record, in order, each ``ops.Container`` call that changes running services.

    The calls still happen (ops.testing's Pebble handles them); the list lets a test assert
    that nothing was replanned or restarted when nothing changed.
    """
    calls: list[str] = []
    for name in ("replan", "restart", "start", "stop"):
        original = getattr(ops.Container, name)

        def spy(self, *args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(ops.Container, name, spy)
    return calls


def deployed(ctx: Any, state: Any, relations: Iterable[Any] = ()) -> Any:
    """``state`` after a leader's first hooks in Juju's order, then each relation's.

    install, leader-elected, config-changed, start; for each relation (with its remote
    application's data already), relation-created then relation-changed.
    """
    for event in (ctx.on.install(), ctx.on.leader_elected(), ctx.on.config_changed()):
        state = ctx.run(event, state)
    state = ctx.run(ctx.on.start(), state)
    for relation in relations:
        state = ctx.run(ctx.on.relation_created(state.get_relation(relation.id)), state)
        changed = ctx.on.relation_changed(state.get_relation(relation.id), remote_unit=0)
        state = ctx.run(changed, state)
    return state


def load_charm_module(charm_src: Path, module_name: str) -> ModuleType:
    """A charm's ``src/charm.py`` under ``module_name``: every charm's module is ``charm``."""
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, charm_src / "charm.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]
