"""One S3 bucket over the `s3` interface, handed to a charm as a plain value.

`S3Requirer` wraps `object_storage.S3Requirer` (object-storage-charmlib), which makes the request
(`requested-secrets`, `version`, `bucket`, `path`) and reads the answer of either provider schema:

- s3-integrator 2/ (object-storage-charmlib provider): `version: "1"`, `bucket`, `path`,
  `endpoint`, `region`, ... in the databag; `access-key` and `secret-key` in the Juju secret
  named by `secret-extra`.
- s3-integrator 1/ (the v0 `s3` library): the same fields, keys included, in clear in the
  databag; it answers only once the requirer has written `bucket`.

The provider may ignore the requested bucket (s3-integrator's own `bucket` option wins): the
connection carries the bucket the provider names. Bad provider data never raises: the library's
own observers are guarded, and `status()` explains.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import NamedTuple
from urllib.parse import urlsplit

import ops
from object_storage import S3Requirer as _LibraryS3Requirer
from object_storage.exceptions import DataInterfacesError

logger = logging.getLogger(__name__)

WAITING_CREDENTIALS = "waiting for S3 credentials"
WAITING_BUCKET = "waiting for S3 bucket"

# What bad provider data raises inside the library (a missing or unreadable secret is a
# ModelError; a bad `version` or JSON field a ValueError).
_REMOTE_DATA_ERRORS = (ops.ModelError, DataInterfacesError, ValueError)
_WHITESPACE = re.compile(r"\s")


@dataclass(frozen=True)
class S3Connection:
    """Where the objects go and the keys to reach them; keys stay out of reprs and logs."""

    endpoint: str | None
    bucket: str
    path: str
    region: str | None
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    # PEM certificates to trust for the endpoint (a private CA), and how to address buckets.
    ca_chain: str | None = None
    path_style: bool | None = None

    def url(self, *parts: str) -> str:
        """``s3://bucket/path/parts...``, each segment stripped of surrounding slashes."""
        key = "/".join(s.strip("/") for s in (self.path, *parts) if s.strip("/"))
        return f"s3://{self.bucket}/{key}" if key else f"s3://{self.bucket}"


class _Answer(NamedTuple):
    connection: S3Connection | None
    reason: str | None
    waiting: bool = True


class _GuardedLibraryRequirer(_LibraryS3Requirer):
    """The library's requirer, whose observers log bad provider data instead of raising."""

    def _on_relation_changed_event(self, event: ops.RelationChangedEvent) -> None:
        try:
            super()._on_relation_changed_event(event)
        except _REMOTE_DATA_ERRORS as error:
            logger.warning("s3: ignoring bad provider data on relation-changed: %s", error)

    def _on_secret_changed_event(self, event: ops.SecretChangedEvent) -> None:
        try:
            super()._on_secret_changed_event(event)
        except _REMOTE_DATA_ERRORS as error:
            logger.warning("s3: ignoring bad provider data on secret-changed: %s", error)


class S3Requirer(ops.Object):
    """Requests `bucket_name` (and `path`) on `relation_name` and reads the provider's answer."""

    def __init__(self, charm: ops.CharmBase, relation_name: str, bucket_name: str, path: str = ""):
        # Not `relation_name` alone: the library's object may take that handle.
        super().__init__(charm, f"{relation_name}-mlops")
        self._charm = charm
        self._relation_name = relation_name
        self._library = _GuardedLibraryRequirer(
            charm, relation_name, bucket=bucket_name, path=path
        )

    @property
    def events(self) -> tuple[ops.BoundEvent, ...]:
        """Events after which `connection()` may have changed.

        The library's storage-connection-info-changed/-gone events are left out: they are
        emitted inside these same hooks, so observing them too would reconcile twice.
        """
        endpoint = self._charm.on[self._relation_name]
        return (endpoint.relation_changed, endpoint.relation_broken, self._charm.on.secret_changed)

    def connection(self) -> S3Connection | None:
        """The bucket to use, or None (no relation, not ready, or bad provider data)."""
        return self._answer().connection

    def status(self) -> str | None:
        """None when there is no relation or the bucket is ready; else why it is not."""
        return self._answer().reason

    def unit_status(self) -> ops.StatusBase | None:
        """`status()` as Waiting (still coming) or Blocked (the provider sent bad data)."""
        answer = self._answer()
        if answer.reason is None:
            return None
        if answer.waiting:
            return ops.WaitingStatus(answer.reason)
        return ops.BlockedStatus(answer.reason)

    def _answer(self) -> _Answer:
        relations = self.model.relations[self._relation_name]
        if not relations:
            return _Answer(None, None)
        relation = min(relations, key=lambda r: r.id)
        if relation.app is None:
            return _Answer(None, WAITING_CREDENTIALS)
        try:
            # Raw strings, with the secret's keys merged in (or read from the v0 databag).
            info = self._library.fetch_relation_data([relation.id])[relation.id]
        except ops.SecretNotFoundError:
            return _Answer(None, "S3 credentials secret not found", waiting=False)
        except ops.ModelError:
            return _Answer(None, "S3 credentials secret is not readable", waiting=False)
        except (DataInterfacesError, ValueError) as error:
            logger.warning("s3: malformed provider data: %s", error)
            return _Answer(None, "S3 provider sent malformed data", waiting=False)
        return _assemble(info, secret_expected="secret-extra" in relation.data[relation.app])


def _assemble(info: dict[str, str], secret_expected: bool) -> _Answer:
    access_key, secret_key = info.get("access-key"), info.get("secret-key")
    if not access_key or not secret_key:
        if secret_expected:
            reason = "S3 credentials secret lacks access-key or secret-key"
            return _Answer(None, reason, waiting=False)
        return _Answer(None, WAITING_CREDENTIALS)
    if _WHITESPACE.search(access_key + secret_key):
        return _Answer(None, "S3 credentials contain whitespace", waiting=False)
    bucket = info.get("bucket")
    if not bucket:
        return _Answer(None, WAITING_BUCKET)
    if "/" in bucket or _WHITESPACE.search(bucket):
        return _Answer(None, f"S3 provider sent a bad bucket name {bucket[:63]!r}", waiting=False)
    endpoint = info.get("endpoint") or None
    if endpoint is not None and not _is_http_url(endpoint):
        reason = f"S3 provider sent a bad endpoint {endpoint[:60]!r}"
        return _Answer(None, reason, waiting=False)
    ca_chain, problem = _ca_chain(info.get("tls-ca-chain"))
    if problem:
        return _Answer(None, problem, waiting=False)
    uri_style = info.get("s3-uri-style") or None
    if uri_style not in (None, "path", "host", "virtual"):
        return _Answer(None, f"S3 provider sent a bad s3-uri-style {uri_style[:20]!r}", False)
    connection = S3Connection(
        endpoint=endpoint,
        bucket=bucket,
        path=info.get("path", "").strip("/"),
        region=info.get("region") or None,
        access_key=access_key,
        secret_key=secret_key,
        ca_chain=ca_chain,
        path_style=None if uri_style is None else uri_style == "path",
    )
    return _Answer(connection, None)


def _ca_chain(raw: str | None) -> tuple[str | None, str | None]:
    """The provider's ``tls-ca-chain`` (a JSON list of PEM certificates) as one PEM text."""
    if not raw:
        return None, None
    try:
        chain = json.loads(raw)
    except json.JSONDecodeError:
        chain = None
    if not isinstance(chain, list) or not all(
        isinstance(cert, str) and "BEGIN CERTIFICATE" in cert for cert in chain
    ):
        return None, "S3 provider sent a bad tls-ca-chain"
    if not chain:
        return None, None
    return "\n".join(cert.strip() for cert in chain) + "\n", None


def _is_http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return (
        parts.scheme in ("http", "https") and bool(parts.netloc) and not _WHITESPACE.search(value)
    )
