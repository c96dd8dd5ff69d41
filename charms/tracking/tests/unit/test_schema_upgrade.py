"""The leader's mlflow.service migrates the tracking store first; a failure blocks, saying why.

The migration itself runs against real MLflow stores in tests/workload/tracking.
"""

from __future__ import annotations

from pathlib import Path

from ops import testing

import mlflow_unit
from mlops_charms import mlflow_schema
from tests.systemd_units import systemd_words, unit_settings


def _unit(ctx, state: testing.State) -> dict[str, list[str]]:
    ctx.run(ctx.on.config_changed(), state)
    return unit_settings(Path(mlflow_unit.PATHS.unit_file).read_text())


def test_the_leaders_unit_migrates_the_store_before_mlflow_starts(ctx, make_state):
    unit = _unit(ctx, make_state())
    data_dir = unit["WorkingDirectory"][0]
    steps = [systemd_words(step) for step in unit["ExecStartPre"]]
    assert steps[-1] == [
        f"{mlflow_unit.PATHS.venv}/bin/python",
        mlflow_schema.script_path(data_dir),
        f"sqlite:///{data_dir}/mlflow.db",
        mlflow_schema.failure_path(data_dir),
    ]
    script = Path(mlflow_schema.script_path(data_dir)).read_text()
    assert script == mlflow_schema.SCHEMA_UPGRADE


def test_another_units_service_does_not_migrate(ctx, make_state):
    unit = _unit(ctx, make_state(leader=False))
    assert not any("schema_upgrade" in step for step in unit["ExecStartPre"])


def test_a_failed_migration_blocks_with_its_reason(ctx, make_state):
    state = make_state()
    storage = next(iter(state.storages))
    failure = Path(mlflow_schema.failure_path(str(storage.get_filesystem(ctx))))
    failure.parent.mkdir(parents=True, exist_ok=True)
    failure.write_text("a to b: OperationalError: table x already exists\n")
    status = ctx.run(ctx.on.update_status(), state).unit_status
    assert isinstance(status, testing.BlockedStatus)
    assert status.message.startswith("tracking store migration failed (a to b: OperationalError")
