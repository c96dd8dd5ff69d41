"""Relation data exactly as the real providers write it, for tests that play their part.

Captured from the providers' own libraries (see tests/lib/test_postgresql.py and test_s3.py).
"""

from __future__ import annotations

import json
from typing import Any

from ops import testing

from mlops_charms import databags
from mlops_charms.approach import APPROACH_ENDPOINT, ApproachProviderData


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


def approach_databag(mode: str, revision: int, **policy: Any) -> dict[str, str]:
    """What mlops-approach publishes: ``mode`` at ``revision`` and that mode's ``policy``.

    Written with the interface's own model and writer (lib/mlops_charms/approach.py).
    """
    databag: dict[str, str] = {}
    published = {"mode": mode, "revision": revision, "policy": policy}
    databags.write_databag(databag, ApproachProviderData.model_validate(published))
    return databag


def approach_relation(
    mode: str | None = None,
    revision: int = 1,
    *,
    databag: dict[str, str] | None = None,
    **policy: Any,
) -> testing.Relation:
    """The ``mlops-approach`` relation as a service sees it.

    ``mode`` None: related, nothing published yet; ``databag``: exactly this remote data.
    """
    if databag is None:
        databag = approach_databag(mode, revision, **policy) if mode else {}
    return testing.Relation(
        APPROACH_ENDPOINT,
        interface="mlops_approach",
        remote_app_name="mlops-approach",
        remote_app_data=databag,
    )
