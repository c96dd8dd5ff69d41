"""The charm's own traces to Tempo: tests/charm_tracing_cases.py, on this charm."""

from __future__ import annotations

from tests.charm_tracing_cases import CharmTracingCases


class TestCharmTracing(CharmTracingCases):
    pass
