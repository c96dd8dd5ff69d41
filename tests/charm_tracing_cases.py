"""The charm tracing cases every charm shares (``mlops_charms.charm_tracing``, ops[tracing]).

Each charm's ``test_charm_tracing.py`` subclasses ``CharmTracingCases``; ``tracing_state`` is a
function of the extra relations, returning the leader's State. What is
checked is what Tempo sees: the requirer's ask on ``charm-tracing`` (the ``tracing`` interface's
``receivers``) and the spans of a hook.
"""

from __future__ import annotations

import json

import pytest
from ops import testing

from mlops_charms import charm_tracing


class CharmTracingCases:
    """The charm tracing tests; a ``Test...`` subclass runs them on a charm.

    ``tracing_state`` is the charm's conftest's ``make_state`` by default; a charm without one
    overrides it.
    """

    @pytest.fixture
    def tracing_state(self, make_state):
        def make(*relations: testing.RelationBase) -> testing.State:
            return make_state(relations=set(relations))

        return make

    def test_the_leader_asks_tempo_for_otlp_over_http(self, ctx, tracing_state):
        relation = testing.Relation(charm_tracing.TRACING_ENDPOINT, remote_app_name="tempo")
        state_out = ctx.run(ctx.on.relation_created(relation), tracing_state(relation))
        databag = state_out.get_relation(relation.id).local_app_data
        assert json.loads(databag["receivers"]) == ["otlp_http"]

    def test_a_hook_is_traced_from_its_dispatch_with_tracing_set_up(self, ctx, tracing_state):
        ctx.run(ctx.on.update_status(), tracing_state())
        names = {span.name for span in ctx.trace_data}
        assert {"ops.main", "ops.tracing.Tracing"} <= names, names
