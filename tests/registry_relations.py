"""Helpers both data-versioning charms' unit tests share: the repository on the storage, relations.

- git keeps tags as loose refs (``refs/tags/vN``) until ``git pack-refs`` moves them to
  ``packed-refs``;
- s3-integrator's databags are those tests/lib/test_s3.py captured from its libraries.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ops import testing

from mlops_charms import registry, registry_server

COMMIT = "3f2a9c1e0b7d4a5f8e6c2b1a0d9f8e7c6b5a4d3e"
ENDPOINT = "http://rgw.ceph.svc.cluster.local:7480"
S3_KEYS = {"access-key": "AKIAIOSFODNN7EXAMPLE", "secret-key": "wJalrXUtnFEMI/K7MDENG"}
CA_CERT = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----"


def repository(data_dir: Path) -> Path:
    return data_dir / "git" / registry.REPOSITORY_NAME


def push_tags(data_dir: Path, *names: str) -> None:
    """Tags as ``git push`` leaves them in the bare repository: one loose ref each."""
    tags = repository(data_dir) / "refs" / "tags"
    tags.mkdir(parents=True, exist_ok=True)
    for name in names:
        (tags / name).write_text(f"{COMMIT}\n")


def consumer_relation(
    access: str | None = None, *, app: str = "training", databag: dict[str, str] | None = None
) -> testing.Relation:
    """A consumer of ``mlops_dataset`` asking for ``access`` (JSON-encoded, as it writes it).

    ``databag``: the consumer's raw databag instead.
    """
    data = {"access": json.dumps(access)} if access else {}
    return testing.Relation(
        registry_server.DATASET_ENDPOINT,
        interface="mlops_dataset",
        remote_app_name=app,
        remote_app_data=data if databag is None else databag,
    )


def integrator_2(**changes: str) -> tuple[testing.Relation, testing.Secret]:
    """s3-integrator 2/'s answer: ``version: "1"``, the keys in the ``secret-extra`` secret."""
    keys = testing.Secret(
        tracked_content={
            "access-key": changes.pop("access_key", S3_KEYS["access-key"]),
            "secret-key": changes.pop("secret_key", S3_KEYS["secret-key"]),
        }
    )
    databag = {
        "version": "1",
        "secret-extra": keys.id,
        "bucket": "datasets",
        "path": "/registry/",
        "endpoint": ENDPOINT,
        "s3-uri-style": "path",
        **changes,
    }
    return s3_relation({k: v for k, v in databag.items() if v}), keys


def integrator_1(**changes: str) -> testing.Relation:
    """s3-integrator 1/'s answer: keys in clear in the databag, no version, a CA chain."""
    databag = {
        "data": json.dumps({"bucket": "datasets"}),
        "access-key": S3_KEYS["access-key"],
        "secret-key": S3_KEYS["secret-key"],
        "bucket": "datasets",
        "endpoint": "https://s3.eu-west-1.amazonaws.com",
        "region": "eu-west-1",
        "tls-ca-chain": json.dumps([CA_CERT]),
        **changes,
    }
    return s3_relation({k: v for k, v in databag.items() if v})


def s3_relation(databag: dict[str, str]) -> testing.Relation:
    return testing.Relation(
        "s3-credentials",
        interface="s3",
        remote_app_name="s3-integrator",
        remote_app_data=databag,
        remote_units_data={0: {}},
    )


def provided(state: testing.State, relation: testing.RelationBase) -> dict[str, Any]:
    """The data this application published on ``relation``, decoded."""
    return {k: json.loads(v) for k, v in state.get_relation(relation.id).local_app_data.items()}


def peer_data(state: testing.State) -> dict[str, str]:
    return dict(state.get_relations(registry_server.PEERS)[0].local_app_data)
