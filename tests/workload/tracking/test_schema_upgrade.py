"""The tracking store migrated by the real MLflow before it serves: ``mlops_charms.mlflow_schema``.

The stores are real: made by this MLflow with a run in them, then taken one schema revision
back with MLflow's own alembic migration (its ``downgrade``), as the previous MLflow release
left them. The charm's migration script must bring such a store to this MLflow's schema with
the run intact; on a store it cannot migrate, it must put the store back byte for byte and
say why; on a current store it must do nothing.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from mlflow.store.db.utils import _get_alembic_config
from mlflow.tracking import MlflowClient

from mlops_charms import mlflow_schema

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def made_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A SQLite store at this MLflow's schema with one run (made once); its file, the run's id."""
    folder = tmp_path_factory.mktemp("store")
    client = MlflowClient(tracking_uri=f"sqlite:///{folder}/mlflow.db")
    experiment = client.create_experiment("reviews")
    run = client.create_run(experiment)
    client.log_metric(run.info.run_id, "accuracy", 0.91)
    client.log_param(run.info.run_id, "dataset-version", "v2")
    client.set_terminated(run.info.run_id)
    return folder / "mlflow.db", run.info.run_id


def _store_with_a_run(made: tuple[Path, str], folder: Path) -> tuple[str, str]:
    """A copy of the made store in ``folder``; its URI and the run's id."""
    shutil.copy2(made[0], folder / "mlflow.db")
    return f"sqlite:///{folder}/mlflow.db", made[1]


def _revision(uri: str) -> str:
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from alembic.migration import MigrationContext; "
            "import sqlalchemy; e = sqlalchemy.create_engine(sys.argv[1]); c = e.connect(); "
            "print(MigrationContext.configure(c).get_current_revision())",
            uri,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return completed.stdout.strip()


def _migrate(uri: str, folder: Path) -> subprocess.CompletedProcess[str]:
    script = folder / "schema_upgrade.py"
    script.write_text(mlflow_schema.SCHEMA_UPGRADE)
    return subprocess.run(
        [sys.executable, str(script), uri, str(folder / "failed")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_a_store_of_the_previous_schema_is_migrated_with_its_runs(made_store, tmp_path):
    uri, run_id = _store_with_a_run(made_store, tmp_path)
    head = _revision(uri)
    command.downgrade(_get_alembic_config(uri), "-1")  # the previous release's schema
    previous = _revision(uri)
    assert previous != head

    migrated = _migrate(uri, tmp_path)

    assert migrated.returncode == 0, migrated.stderr
    assert f"from {previous} to {head}" in migrated.stderr
    assert _revision(uri) == head
    assert not (tmp_path / "failed").exists()
    assert not list(tmp_path.glob("*.pre-upgrade")), "the copy is removed once migrated"
    run = MlflowClient(tracking_uri=uri).get_run(run_id)  # verifies the schema, then reads
    assert run.data.metrics == {"accuracy": 0.91}
    assert run.data.params == {"dataset-version": "v2"}


def test_a_migration_that_fails_leaves_the_store_as_it_was_and_says_why(made_store, tmp_path):
    uri, _run_id = _store_with_a_run(made_store, tmp_path)
    # Stamped a revision back without its downgrade: the migration re-creates what exists.
    config = _get_alembic_config(uri)
    head = ScriptDirectory.from_config(config).get_revision(_revision(uri))
    assert head is not None and isinstance(head.down_revision, str)
    command.stamp(config, head.down_revision)
    store = tmp_path / "mlflow.db"
    before = store.read_bytes()

    migrated = _migrate(uri, tmp_path)

    assert migrated.returncode == 1
    assert store.read_bytes() == before
    reason = (tmp_path / "failed").read_text()
    assert "already exists" in reason, reason
    assert mlflow_schema.failure(reason) is not None
    assert not list(tmp_path.glob("*.pre-upgrade"))


def test_a_current_store_is_left_alone(made_store, tmp_path):
    uri, _run_id = _store_with_a_run(made_store, tmp_path)
    store = tmp_path / "mlflow.db"
    before = store.read_bytes(), store.stat().st_mtime_ns
    (tmp_path / "failed").write_text("an earlier failure\n")

    migrated = _migrate(uri, tmp_path)

    assert migrated.returncode == 0, migrated.stderr
    assert (store.read_bytes(), store.stat().st_mtime_ns) == before
    assert not (tmp_path / "failed").exists(), "a start that needs nothing clears the failure"


def test_a_new_store_is_left_to_mlflow(tmp_path):
    migrated = _migrate(f"sqlite:///{tmp_path}/mlflow.db", tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_a_store_it_cannot_read_is_not_a_failed_migration(tmp_path):
    (tmp_path / "mlflow.db").write_bytes(b"not a database")

    migrated = _migrate(f"sqlite:///{tmp_path}/mlflow.db", tmp_path)

    assert migrated.returncode == 1
    assert "cannot read the tracking store: DatabaseError" in migrated.stderr
    assert not (tmp_path / "failed").exists(), "MLflow's own start says why, in its log"
