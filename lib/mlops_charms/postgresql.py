"""One PostgreSQL database over `postgresql_client`, handed to a charm as a plain value.

`PostgreSQLRequirer` asks the related provider for a database and turns its answer into a
`PostgreSQLConnection`, or into a one-line reason why there is none yet. Bad provider data never
raises: it becomes that reason.

The wire: postgresql-k8s 16 (canonical/postgresql-k8s-operator, 16/edge) serves this endpoint
with `charms.data_platform_libs.v0.data_interfaces`, the v0 contract. It acts when `database`
appears in the requirer's application databag and answers, flat, in its own application databag:
`database`, `endpoints` (``host:port``), `secret-user` (a Juju secret holding `username`,
`password`, `uris`), `version` (its PostgreSQL version), ... Fields named in the requirer's
`requested-secrets` go into secrets; any other it writes in clear (`uris` carries the password).
`dpcharmlibs.interfaces` speaks the v1 contract (`version: v1`, `requests: [...]`), which
postgresql-k8s 16 ignores. So the request carries both, the v1 part written with the library, and
the answer is read in whichever contract the provider used: v1 through the library's models, v0
here. `ResourceRequirerEventHandler` is not instantiated: its relation-changed observer validates
every provider databag as v1 and raises (`version` is "16.x", not "v1") in every hook against
postgresql-k8s 16.

The library is imported only to write a request or to read a v1 answer: importing it costs about
0.1 s per hook (pydantic models, cryptography) and prints pydantic warnings.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import warnings
from dataclasses import dataclass, field
from typing import NamedTuple
from urllib.parse import quote

import ops

logger = logging.getLogger(__name__)

# v0: the fields the provider must keep in Juju secrets. `uris` embeds the password.
REQUESTED_SECRETS = ("username", "password", "tls", "tls-ca", "uris", "read-only-uris")

WAITING_CREDENTIALS = "waiting for database credentials"
WAITING_ENDPOINTS = "waiting for database endpoints"

# host:port, the host a DNS name or an IPv4 address or a bracketed IPv6 address.
_ENDPOINT = re.compile(r"(?P<host>[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\]):(?P<port>[0-9]{1,5})")


@dataclass(frozen=True)
class PostgreSQLConnection:
    """Where and as whom to connect. The password stays out of URLs, reprs and logs."""

    host: str
    port: int
    database: str
    username: str
    password: str = field(repr=False)
    tls: bool = False
    ca: str | None = None  # PEM: verify the server against it (sslmode=verify-full)

    @property
    def sslmode(self) -> str | None:
        """The libpq ``sslmode`` for this database: verified with a CA, required with TLS."""
        if self.ca:
            return "verify-full"
        return "require" if self.tls else None

    def sqlalchemy_url(self) -> str:
        """SQLAlchemy URL without the password, which the workload gets separately (PGPASSWORD)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = quote(self.username, safe="")
        return f"postgresql+psycopg2://{user}@{host}:{self.port}/{quote(self.database, safe='')}"


class _Answer(NamedTuple):
    connection: PostgreSQLConnection | None
    reason: str | None
    waiting: bool = True


_NO_RELATION = _Answer(None, None)


class PostgreSQLRequirer(ops.Object):
    """Requests `database_name` on `relation_name` and reads the provider's answer."""

    def __init__(self, charm: ops.CharmBase, relation_name: str, database_name: str):
        super().__init__(charm, relation_name)
        self._charm = charm
        self._relation_name = relation_name
        self._database_name = database_name
        endpoint = charm.on[relation_name]
        for event in (
            endpoint.relation_created,
            endpoint.relation_changed,
            charm.on.leader_elected,
        ):
            self.framework.observe(event, self._publish_request)

    @property
    def events(self) -> tuple[ops.BoundEvent, ...]:
        """Events after which `connection()` may have changed."""
        endpoint = self._charm.on[self._relation_name]
        # Credentials live in a secret: a new revision arrives as secret-changed.
        return (endpoint.relation_changed, endpoint.relation_broken, self._charm.on.secret_changed)

    def connection(self) -> PostgreSQLConnection | None:
        """The database to use, or None (no relation, not ready, or bad provider data)."""
        return self._answer().connection

    def status(self) -> str | None:
        """None when there is no relation or the database is ready; else why it is not."""
        return self._answer().reason

    def unit_status(self) -> ops.StatusBase | None:
        """`status()` as Waiting (still coming) or Blocked (the provider sent bad data)."""
        answer = self._answer()
        if answer.reason is None:
            return None
        if answer.waiting:
            return ops.WaitingStatus(answer.reason)
        return ops.BlockedStatus(answer.reason)

    # The request

    def _publish_request(self, _: ops.EventBase) -> None:
        if not self._charm.unit.is_leader():
            return
        for relation in self.model.relations[self._relation_name]:
            ours = relation.data[self.model.app]
            if "requests" not in ours:
                _write_v1_request(self.model, relation, self._database_name)
            if "database" not in ours:
                ours["database"] = self._database_name
            if "requested-secrets" not in ours:
                ours["requested-secrets"] = json.dumps(list(REQUESTED_SECRETS))

    # The answer

    def _answer(self) -> _Answer:
        relations = self.model.relations[self._relation_name]
        if not relations:
            return _NO_RELATION
        relation = min(relations, key=lambda r: r.id)
        if relation.app is None:
            return _Answer(None, WAITING_CREDENTIALS)
        provided = relation.data[relation.app]
        if provided.get("version") == "v1":
            return self._answer_v1(relation)
        return self._answer_v0(provided)

    def _answer_v0(self, provided: ops.RelationDataContent) -> _Answer:
        secret_id = provided.get("secret-user")
        if not secret_id:
            return _Answer(None, WAITING_CREDENTIALS)
        try:
            content = self.model.get_secret(id=secret_id).get_content(refresh=True)
        except ops.SecretNotFoundError:
            return _Answer(None, "database credentials secret not found", waiting=False)
        except ops.ModelError:
            return _Answer(None, "database credentials secret is not readable", waiting=False)
        tls = self._tls_v0(provided)
        if isinstance(tls, _Answer):
            return tls
        answer = _assemble(
            provided.get("endpoints"),
            provided.get("database") or self._database_name,
            content.get("username"),
            content.get("password"),
        )
        return _with_tls(answer, *tls)

    def _tls_v0(self, provided: ops.RelationDataContent) -> tuple[bool, str | None] | _Answer:
        """Whether the server uses TLS and its CA, in clear or in the ``secret-tls`` secret."""
        values = {key: provided.get(key) for key in ("tls", "tls-ca")}
        secret_id = provided.get("secret-tls")
        if secret_id:
            try:
                values.update(self.model.get_secret(id=secret_id).get_content(refresh=True))
            except ops.SecretNotFoundError:
                return _Answer(None, "database TLS secret not found", waiting=False)
            except ops.ModelError:
                return _Answer(None, "database TLS secret is not readable", waiting=False)
        return _tls_values(values.get("tls"), values.get("tls-ca"))

    def _answer_v1(self, relation: ops.Relation) -> _Answer:
        interfaces = _interfaces()
        repository = interfaces.OpsRelationRepository(self.model, relation, relation.app)
        try:
            contract = interfaces.build_model(repository, interfaces.DataContract)
        except ops.SecretNotFoundError:
            return _Answer(None, "database credentials secret not found", waiting=False)
        except ops.ModelError:
            return _Answer(None, "database credentials secret is not readable", waiting=False)
        except (ValueError, TypeError, interfaces.DataInterfacesError) as error:
            logger.warning("malformed postgresql_client v1 data: %s", error)
            return _Answer(None, "database provider sent malformed data", waiting=False)
        for response in contract.requests:
            if response.resource == self._database_name and response.secret_user:
                tls = _tls_values(
                    None if response.tls is None else str(response.tls), response.tls_ca
                )
                if isinstance(tls, _Answer):
                    return tls
                answer = _assemble(
                    response.endpoints, response.resource, response.username, response.password
                )
                return _with_tls(answer, *tls)
        return _Answer(None, WAITING_CREDENTIALS)


def _assemble(
    endpoints: str | None, database: str, username: str | None, password: str | None
) -> _Answer:
    if not username or not password:
        return _Answer(
            None, "database credentials secret lacks username or password", waiting=False
        )
    if not endpoints:
        return _Answer(None, WAITING_ENDPOINTS)
    # `endpoints` may list several hosts; the first is the read/write primary.
    match = _ENDPOINT.fullmatch(endpoints.split(",")[0].strip())
    if match is None or not 0 < int(match["port"]) < 65536:
        reason = f"database provider sent bad endpoints {endpoints[:60]!r}"
        return _Answer(None, reason, waiting=False)
    if any(c in value for value in (database, username, password) for c in "\r\n"):
        return _Answer(None, "database name or credentials contain a line break", waiting=False)
    host, port = match["host"].strip("[]"), int(match["port"])
    return _Answer(PostgreSQLConnection(host, port, database, username, password), None)


def _tls_values(tls: str | None, ca: str | None) -> tuple[bool, str | None] | _Answer:
    enabled = (tls or "").strip().lower() in ("true", "1", "yes")
    if ca and "BEGIN CERTIFICATE" not in ca:
        return _Answer(None, "database provider sent a bad tls-ca", waiting=False)
    return enabled or bool(ca), (ca.strip() + "\n") if ca else None


def _with_tls(answer: _Answer, tls: bool, ca: str | None) -> _Answer:
    if answer.connection is None:
        return answer
    return answer._replace(connection=dataclasses.replace(answer.connection, tls=tls, ca=ca))


def _write_v1_request(model: ops.Model, relation: ops.Relation, database_name: str) -> None:
    interfaces = _interfaces()
    request = interfaces.RequirerCommonModel(resource=database_name)
    request.request_id = interfaces.gen_hash(request.resource, request.salt)
    contract = interfaces.RequirerDataContractV1[interfaces.RequirerCommonModel](
        requests=[request]
    )
    interfaces.write_model(interfaces.OpsRelationRepository(model, relation, model.app), contract)


def _interfaces():  # unannotated: the type checker then sees the module itself
    with warnings.catch_warnings():
        # pydantic warns about the library's own field annotations on first import.
        warnings.filterwarnings("ignore", module=r"pydantic\._internal\.")
        import dpcharmlibs.interfaces
    return dpcharmlibs.interfaces
