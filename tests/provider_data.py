"""Relation data exactly as the real providers write it, for tests that play their part.

Captured from the providers' own libraries (see tests/lib/test_postgresql.py and test_s3.py).
"""

from __future__ import annotations

import json

from ops import testing


def postgresql_k8s_relation(
    *, host: str, port: int, database: str, username: str, password: str
) -> tuple[testing.Relation, testing.Secret]:
    """The ``database`` relation and user secret postgresql-k8s 16 writes for a ready database."""
    secret = testing.Secret(
        tracked_content={
            "username": username,
            "password": password,
            "uris": f"postgresql://{username}:{password}@{host}:{port}/{database}",
        }
    )
    relation = testing.Relation(
        "database",
        remote_app_name="postgresql-k8s",
        remote_app_data={
            "data": json.dumps({"database": database, "version": "v1"}),
            "database": database,
            "endpoints": f"{host}:{port}",
            "secret-user": secret.id,
            "version": "16.9",
        },
    )
    return relation, secret
