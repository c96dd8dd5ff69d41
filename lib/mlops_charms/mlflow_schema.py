"""MLflow's tracking store migrated to the running MLflow's schema, once, before it serves.

A newer MLflow refuses a tracking store of an older schema ("out-of-date database schema")
until ``mlflow db upgrade`` runs. The leader's server runs :data:`SCHEMA_UPGRADE` before each
start (the other units' servers refuse to serve the old schema until it has run, and Pebble or
systemd starts them again): nothing to do on a new or current store. On an older one:

- a SQLite store is copied first; if the migration fails the copy is put back, so the store
  is as the previous MLflow left it;
- PostgreSQL runs MLflow's migrations in one transaction: a failure rolls them all back;

and the reason is written to :func:`failure_path`, which the charm shows in its status until
a start migrates (or finds nothing to migrate). A store it cannot reach or read fails the
start with the reason in the service's log, as MLflow would. MLflow's auth app migrates
its own tables.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # mlflow.py imports this module: its files include the script
    from mlops_charms.mlflow import ServerSettings


def script_path(data_dir: str) -> str:
    """Where the migration script is written, on the unit's storage."""
    return f"{data_dir}/schema_upgrade.py"


def failure_path(data_dir: str) -> str:
    """Where the last failed migration says why; absent once a start migrated or needed none."""
    return f"{data_dir}/schema-upgrade-failed"


def command(settings: ServerSettings, python: str = "python3") -> list[str]:
    """The migration's command (no secrets: PostgreSQL's password is in the environment)."""
    return [
        python,
        script_path(settings.data_dir),
        settings.backend_store_uri,
        failure_path(settings.data_dir),
    ]


def failure(text: str | None) -> str | None:
    """The status line for a failure file's ``text`` (None: no failure)."""
    if not text or not text.strip():
        return None
    return (
        f"tracking store migration failed ({text.strip().splitlines()[0]});"
        " the store is as the previous MLflow left it"
    )


SCHEMA_UPGRADE = '''"""Migrate the tracking store to this MLflow's schema: mlflow_schema.py."""

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import sqlalchemy
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory


def head_revision():
    """The newest revision of the installed MLflow's migrations (without importing MLflow)."""
    package = Path(importlib.util.find_spec("mlflow").origin).parent
    alembic = Config()
    alembic.set_main_option("script_location", str(package / "store" / "db_migrations"))
    return ScriptDirectory.from_config(alembic).get_current_head()


def migrate(uri):
    """None when the store is new, current or migrated; else why it could not be migrated."""
    engine = sqlalchemy.create_engine(uri)
    sqlite = engine.url.get_backend_name() == "sqlite"
    store = Path(engine.url.database or "") if sqlite else None
    if sqlite and not store.exists():
        return None  # a new store: MLflow creates it at its own schema
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    engine.dispose()
    head = head_revision()
    if current is None or current == head:
        return None
    print(f"migrating the tracking store from {current} to {head}", file=sys.stderr)
    copy = store.with_name(store.name + ".pre-upgrade") if sqlite else None
    if sqlite:
        shutil.copy2(store, copy)
    migration = subprocess.run(
        [sys.executable, "-m", "mlflow", "db", "upgrade", uri],
        capture_output=True,
        text=True,
        check=False,
    )
    if migration.returncode != 0:
        if sqlite:
            shutil.copy2(copy, store)
            copy.unlink()
        lines = [line.strip() for line in migration.stderr.splitlines() if line.strip()]
        # The exception's own line: SQLAlchemy adds a "[SQL: ...]" and a link after it.
        errors = [line for line in lines if re.match(r"^[\\w.]+(Error|Exception): ", line)]
        reason = (errors or lines or [f"exit code {migration.returncode}"])[-1]
        return f"{current} to {head}: {reason[:300]}"
    if sqlite:
        copy.unlink()
    print(f"migrated the tracking store to {head}", file=sys.stderr)
    return None


uri, failure_file = sys.argv[1], Path(sys.argv[2])
try:
    reason = migrate(uri)
except Exception as error:  # the store unreachable or unreadable: not a migration's failure
    first_line = (str(error).splitlines() or [""])[0]
    print(f"cannot read the tracking store: {type(error).__name__}: {first_line}", file=sys.stderr)
    sys.exit(1)
if reason is None:
    failure_file.unlink(missing_ok=True)
    sys.exit(0)
failure_file.write_text(reason + "\\n")
print(f"the migration failed, the store is as it was: {reason}", file=sys.stderr)
sys.exit(1)
'''
