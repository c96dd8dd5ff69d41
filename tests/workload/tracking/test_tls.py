"""MLflow verifies PostgreSQL's certificate when postgresql-k8s gives a CA (review M10).

A real PostgreSQL speaks TLS with a certificate from a CA the test makes. The charm runs on a
real Pebble (tests/workload/pebble_backed.py) with the ``database`` relation as postgresql-k8s
writes it, TLS included (``secret-tls``: ``tls``, ``tls-ca``): MLflow must connect with
``sslmode=verify-full`` against that CA, and must refuse a server its CA did not sign.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from ops import testing

import charm
from tests.provider_data import postgresql_k8s_relation
from tests.workload.pebble_backed import PebbleBackedCharm, shared_folder, wait_until
from tests.workload.processes import PostgreSQLServer, free_port, run_postgresql
from tests.workload.tls import ServerCertificate, server_certificate

pytestmark = pytest.mark.slow

CHARM_ROOT = Path(__file__).parents[3] / "charms" / "tracking-k8s"


@pytest.fixture(scope="module")
def certificate() -> Iterator[ServerCertificate]:
    with tempfile.TemporaryDirectory(prefix="tracking-tls-") as folder:
        yield server_certificate(Path(folder))


@pytest.fixture(scope="module")
def tls_postgresql(certificate: ServerCertificate) -> Iterator[PostgreSQLServer]:
    with run_postgresql(tls=certificate) as server:
        yield server


def _database(server: PostgreSQLServer, ca_pem: str) -> tuple[testing.Relation, set]:
    name = f"mlflow_{free_port()}"
    password = "tls-test-password"
    server.psql(f"CREATE USER {name} PASSWORD '{password}'")
    server.psql(f"CREATE DATABASE {name} OWNER {name}")
    relation, user = postgresql_k8s_relation(
        host="localhost", port=server.port, database=name, username=name, password=password
    )
    tls = testing.Secret(tracked_content={"tls": "True", "tls-ca": ca_pem})
    relation = dataclasses.replace(
        relation, remote_app_data={**relation.remote_app_data, "secret-tls": tls.id}
    )
    return relation, {user, tls}


def _deploy(unit: PebbleBackedCharm, relation: testing.Relation, secrets: set) -> testing.State:
    state = testing.State(
        leader=True,
        config={"port": free_port()},
        containers={unit.container_state("mlflow")},
        storages=unit.storages(),
        relations={relation},
        secrets=secrets,
    )
    for event in (
        unit.context.on.install(),
        unit.context.on.leader_elected(),
        unit.context.on.config_changed(),
        unit.context.on.pebble_ready(state.get_container("mlflow")),
    ):
        state = unit.run(event, state)
    current = state.get_relation(relation.id)
    return unit.run(unit.context.on.relation_changed(current, remote_unit=0), state)


@pytest.fixture
def unit() -> Iterator[PebbleBackedCharm]:
    with shared_folder("tracking-tls-unit-") as base:
        running = PebbleBackedCharm(charm.TrackingCharm, CHARM_ROOT, base)
        running.start()
        try:
            yield running
        finally:
            running.stop()


def _service_log(unit: PebbleBackedCharm) -> str:
    container = unit.containers["mlflow"]
    env = {**os.environ, "PEBBLE": str(container.socket_path.parent)}
    binary = shutil.which("pebble") or "pebble"
    logs = subprocess.run(
        [binary, "logs", "mlflow", "-n", "200"], env=env, capture_output=True, text=True
    )
    return logs.stdout + logs.stderr


def test_mlflow_verifies_postgresql_against_the_given_ca(unit, tls_postgresql, certificate):
    relation, secrets = _database(tls_postgresql, certificate.ca_pem)
    state = _deploy(unit, relation, secrets)
    environment = unit.containers["mlflow"].client.get_plan().services["mlflow"].environment
    assert environment["PGSSLMODE"] == "verify-full"
    assert Path(environment["PGSSLROOTCERT"]).read_text() == certificate.ca_pem
    unit.containers["mlflow"].wait_for_checks(timeout=180)
    # MLflow's tables are in the database it reached over verified TLS.
    database = relation.remote_app_data["database"]
    tables = tls_postgresql.psql(
        "SELECT count(*) FROM pg_tables WHERE tablename = 'runs'", database
    )
    assert tables == "1"
    state = unit.run(unit.context.on.update_status(), state)
    assert isinstance(state.unit_status, testing.ActiveStatus), state.unit_status


def test_mlflow_refuses_a_server_the_ca_did_not_sign(unit, tls_postgresql, tmp_path):
    stranger = server_certificate(tmp_path / "another-ca")
    relation, secrets = _database(tls_postgresql, stranger.ca_pem)
    _deploy(unit, relation, secrets)
    log = wait_until(
        lambda: (text := _service_log(unit)) and "certificate verify failed" in text and text,
        timeout=120,
        what="MLflow to refuse the server's certificate",
    )
    assert "certificate verify failed" in log
    checks = unit.containers["mlflow"].client.get_checks()
    assert all(check.successes == 0 for check in checks)
