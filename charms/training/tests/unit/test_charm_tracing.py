"""The charm's own traces to Tempo: tests/charm_tracing_cases.py, on this charm."""

from __future__ import annotations

import pytest
from ops import testing

from tests.charm_tracing_cases import CharmTracingCases


class TestCharmTracing(CharmTracingCases):
    @pytest.fixture
    def tracing_state(self, machine):
        del machine  # the fake machine the charm runs on

        def make(*relations: testing.RelationBase) -> testing.State:
            return testing.State(leader=True, relations=set(relations))

        return make
