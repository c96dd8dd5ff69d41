"""The status cases both tracking charms share: one behaviour, one test, run on each charm.

Config, the stores, the consumers and MLflow's readiness give the same statuses on Kubernetes
and on a machine (``mlops_charms.tracking_server``): each charm's ``test_status.py`` subclasses
``StatusCases``. The fixtures they use (``ctx``, ``make_state``, ``mlflow``) are each charm's
conftest's.
"""

from __future__ import annotations

import ops
import pytest
from ops import testing

from tests.tracking_testing import (
    BAD_CONFIG,
    consumer_relation,
    database_relation,
    s3_relation,
)


def status_after(ctx, state: testing.State, event=None) -> ops.StatusBase:
    return ctx.run(event or ctx.on.update_status(), state).unit_status


class StatusCases:
    """The substrate-neutral status tests; a ``Test...`` subclass runs them on a charm."""

    @pytest.mark.parametrize(("option", "value"), BAD_CONFIG.values(), ids=BAD_CONFIG.keys())
    def test_bad_config_blocks_naming_the_option(self, ctx, make_state, option, value):
        status = status_after(ctx, make_state(config={option: value}), ctx.on.config_changed())
        assert isinstance(status, testing.BlockedStatus)
        assert status.message.startswith(f"invalid config: {option}: ")

    def test_non_leader_waits_for_the_leaders_admin_secret(self, ctx, make_state):
        state = make_state(leader=False, admin_secret_exists=False)
        assert status_after(ctx, state) == testing.WaitingStatus(
            "waiting for the leader to create the admin secret"
        )

    def test_unit_waits_for_database_credentials(self, ctx, make_state):
        relation = database_relation()
        state = make_state(relations={relation})
        assert status_after(
            ctx, state, ctx.on.relation_changed(relation)
        ) == testing.WaitingStatus("waiting for database credentials")

    def test_unit_waits_for_s3_credentials(self, ctx, make_state):
        relation = s3_relation()
        state = make_state(relations={relation})
        assert status_after(
            ctx, state, ctx.on.relation_changed(relation)
        ) == testing.WaitingStatus("waiting for S3 credentials")

    def test_malformed_consumer_data_blocks_naming_the_consumer(self, ctx, make_state):
        relation = consumer_relation("trainer", databag={"experiment": '"  "'})
        status = status_after(
            ctx, make_state(relations={relation}), ctx.on.relation_changed(relation)
        )
        assert isinstance(status, testing.BlockedStatus)
        assert status.message.startswith("mlops-tracking: invalid data from trainer: experiment")

    def test_unit_waits_for_mlflow_to_become_ready(self, ctx, make_state, mlflow):
        mlflow.healthy = False
        assert status_after(ctx, make_state()) == testing.WaitingStatus(
            "waiting for MLflow to become ready"
        )
