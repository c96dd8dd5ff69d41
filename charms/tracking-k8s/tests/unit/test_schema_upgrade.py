"""The leader's server migrates the tracking store before it starts; a failure blocks, saying why.

The migration itself runs against real MLflow stores in tests/workload/tracking.
"""

from __future__ import annotations

from ops import testing

from mlops_charms import mlflow_schema
from tests.tracking_testing import DATA_DIR, service_script, stored

MIGRATION = f"{DATA_DIR}/schema_upgrade.py"


def test_the_leaders_server_migrates_the_store_before_mlflow_starts(ctx, make_state, data_dir):
    state_out = ctx.run(ctx.on.config_changed(), make_state())
    script = service_script(state_out)
    assert f"python3 {MIGRATION} sqlite:///{DATA_DIR}/mlflow.db " in script
    assert script.index(MIGRATION) < script.index("exec mlflow server")
    assert stored(data_dir, MIGRATION).read_text() == mlflow_schema.SCHEMA_UPGRADE


def test_another_units_server_does_not_migrate(ctx, make_state):
    state_out = ctx.run(ctx.on.config_changed(), make_state(leader=False))
    assert MIGRATION not in service_script(state_out)


def test_a_failed_migration_blocks_with_its_reason(ctx, make_state, data_dir):
    failure = stored(data_dir, mlflow_schema.failure_path(DATA_DIR))
    failure.write_text("75868b020152 to dc11669786a5: OperationalError: table x already exists\n")
    status = ctx.run(ctx.on.update_status(), make_state()).unit_status
    assert status == testing.BlockedStatus(
        "tracking store migration failed (75868b020152 to dc11669786a5: OperationalError: "
        "table x already exists); the store is as the previous MLflow left it"
    )
