"""Helpers shared by the charms' ops.testing unit tests."""

from __future__ import annotations

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
