"""What both labelling charms' unit tests share: secrets and relations as their owners send."""

from __future__ import annotations

import json

from ops import testing

from tests import provider_data

MODEL = "mlops"
DATA_DIR = "/var/lib/label-studio"
SECRETS_ENV = f"{DATA_DIR}/secrets/secrets.env"
WORKLOAD = "/opt/mlops/bin/mlops-workload"

ADMIN_PASSWORD = "admin-Pa55word-from-the-secret"
ADMIN_TOKEN = "token-from-the-secret-0123456789abcdef0123"
SECRET_KEY = "django-secret-key-from-the-secret-0123456789abcdef"
REGISTRY_URL = "http://data-versioning-k8s.mlops.svc.cluster.local:8080/registry.git"
S3_ENDPOINT = "http://data-versioning-k8s.mlops.svc.cluster.local:9000"
REGISTRY_USER = "relation-4-labelling-k8s"
REGISTRY_PASSWORD = "registry-Pa55word"
DB_HOST = "postgresql-k8s-primary.mlops.svc.cluster.local"
DB_PASSWORD = "db-Pa55word-from-postgresql"
DB_CA = "-----BEGIN CERTIFICATE-----\nMIIB-the-database-CA\n-----END CERTIFICATE-----\n"
# What data-versioning publishes as ``ca`` when it serves HTTPS (checked for its PEM shape only).
REGISTRY_CA = "-----BEGIN CERTIFICATE-----\nUmVnaXN0cnkgQ0E=\n-----END CERTIFICATE-----\n"


def server_secret() -> testing.Secret:
    """The admin secret the leader created in an earlier hook."""
    return testing.Secret(
        {"admin-password": ADMIN_PASSWORD, "admin-token": ADMIN_TOKEN, "secret-key": SECRET_KEY},
        label="label-studio-server",
        owner="app",
    )


def registry_secret(**content: str) -> testing.Secret:
    """The credentials secret the data-versioning charm grants to labelling."""
    return testing.Secret(
        {
            "username": REGISTRY_USER,
            "password": REGISTRY_PASSWORD,
            "access-key": REGISTRY_USER,
            "secret-key": REGISTRY_PASSWORD,
            **content,
        }
    )


def dataset_relation(secret: testing.Secret | None = None, **fields) -> testing.Relation:
    """``mlops-dataset`` as data-versioning-k8s answers it (JSON-encoded fields)."""
    data: dict = {}
    if secret is not None:
        data = {
            "registry_url": REGISTRY_URL,
            "remote_url": "s3://dvc",
            "remote_endpoint": S3_ENDPOINT,
            "access": "write",
            "credentials_secret_id": secret.id,
            "latest_version": "v1",
        }
    data.update(fields)
    return testing.Relation(
        "mlops-dataset",
        interface="mlops_dataset",
        remote_app_name="data-versioning-k8s",
        remote_app_data={k: json.dumps(v) for k, v in data.items() if v is not None},
    )


def relabel_relation(*batches: dict, raw: dict[str, str] | None = None, **kwargs):
    """``mlops-relabel`` with the training charm's batches."""
    remote = raw if raw is not None else {"batches": json.dumps(list(batches))}
    return testing.Relation(
        "mlops-relabel",
        interface="mlops_relabel",
        remote_app_name="training-k8s",
        remote_app_data=remote,
        **kwargs,
    )


def database_secret() -> testing.Secret:
    return testing.Secret({"username": "relation_id_9", "password": DB_PASSWORD})


def database_relation(secret: testing.Secret, **fields: str) -> testing.Relation:
    """``database`` as postgresql-k8s 16 answers it (v0 contract)."""
    return testing.Relation(
        "database",
        interface="postgresql_client",
        remote_app_name="postgresql-k8s",
        remote_app_data={
            "database": "label_studio",
            "endpoints": f"{DB_HOST}:5432",
            "secret-user": secret.id,
            "version": "16.9",
            **fields,
        },
    )


def database_tls_secret(ca: str = DB_CA) -> testing.Secret:
    """The TLS secret postgresql-k8s shares once its server has a certificate."""
    return testing.Secret({"tls": "True", "tls-ca": ca})


DATA_CENTRIC = {"annotator_overlap": 3, "agreement_threshold": 0.8, "relabel_top_k": 50}
MODEL_CENTRIC = {"sweep": [{"C": 1.0}], "selection_metric": "accuracy"}


def approach_relation(
    mode: str = "data-centric",
    revision: int = 4,
    policy: dict | None = None,
    *,
    raw: dict[str, str] | None = None,
) -> testing.Relation:
    """``mlops-approach`` as the approach charm publishes it (``raw``: this databag exactly)."""
    if policy is None:
        policy = DATA_CENTRIC if mode == "data-centric" else MODEL_CENTRIC
    return provider_data.approach_relation(mode, revision, databag=raw, **policy)


def migrated_peers(mark: str | None = None, **data: str) -> testing.PeerRelation:
    """The peers' relation after the leader migrated ``database_relation``'s database.

    ``mark``: what it recorded (default: this release on that database); ``data``: more keys.
    """
    from mlops_charms import label_studio

    recorded = mark or f"{label_studio.VERSION} {DB_HOST}:5432/label_studio"
    return testing.PeerRelation("labelling-peers", local_app_data={"migrated": recorded, **data})
