"""Label Studio on PostgreSQL: the charm's database relation, run for real.

The charm is given the ``database`` relation as postgresql-k8s 16 writes it, pointing at a real
PostgreSQL; the layer it plans is run by a real Pebble, and Label Studio's data must land in
that database (not in SQLite on the storage).
"""

from __future__ import annotations

import secrets
import tempfile
from pathlib import Path

import pytest

from tests.provider_data import postgresql_k8s_relation
from tests.workload.labelling.harness import run_label_studio
from tests.workload.processes import PostgreSQLServer

pytestmark = pytest.mark.slow


def test_the_database_relation_puts_label_studio_on_postgresql(
    postgresql_server: PostgreSQLServer,
):
    password = secrets.token_urlsafe(24)
    postgresql_server.psql(f"CREATE ROLE label_studio_app LOGIN PASSWORD '{password}'")
    postgresql_server.psql("CREATE DATABASE label_studio OWNER label_studio_app")
    relation, user_secret = postgresql_k8s_relation(
        host=postgresql_server.host,
        port=postgresql_server.port,
        database="label_studio",
        username="label_studio_app",
        password=password,
    )
    with tempfile.TemporaryDirectory(prefix="labelling-pg-") as base:
        with run_label_studio(Path(base), relations={relation}, secrets={user_secret}) as running:
            created = running.api("POST", "/api/projects", {"title": "on-postgresql"})
            assert created["title"] == "on-postgresql"
            data_dir = Path(running.settings.data_dir)
            plan = running.daemon.client.get_plan().to_yaml()
            assert password not in plan
            print(
                f"\nLabel Studio on PostgreSQL, first start: {running.first_start_seconds:.1f} s"
            )
        assert not (data_dir / "label_studio.sqlite3").exists()
    titles = postgresql_server.psql("SELECT title FROM project", "label_studio")
    assert titles == "on-postgresql"
