"""The DVC data registry charm, substrate-neutral: what data-versioning(-k8s) share.

``RegistryServerCharm`` is the Juju side of the registry on either substrate: config and action
parameters, the registry users' secrets, the consumers (``mlops_dataset``), the DVC remote's
bucket and its moves, the versions and their validation jobs, the approach, every status that
does not depend on where the registry runs, and the actions. A substrate charm subclasses it and
says only how the servers run there (Pebble services in a container, or systemd units on the
machine), how its files are reached, how a short command and a job run, and which events wake it.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import logging
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import ops
import pydantic

from mlops_charms import (
    approach,
    backup,
    charm_tracing,
    databags,
    jobs,
    observability,
    pebble,
    registry,
    registry_observability,
    registry_state,
    rotation,
    secrets,
    sidecar,
    tls,
    workload_exec,
)
from mlops_charms.approach import Approach
from mlops_charms.dataset import VERSION_PATTERN, DatasetProviderData, DatasetRequirerData
from mlops_charms.hosts import is_host
from mlops_charms.jobs import Job, JobStartError, SlotRunner
from mlops_charms.registry import Binaries, Credential, ExternalBucket, RegistrySettings
from mlops_charms.registry_state import Files
from mlops_charms.s3 import S3Requirer
from mlops_charms.workload_exec import WorkloadError

logger = logging.getLogger(__name__)

STORAGE = "registry-data"
PEERS = "registry-peers"
DATASET_ENDPOINT = "mlops-dataset"
REGISTRY_SECRET = "registry-writer"  # noqa: S105 - a label: the charm's own registry user
CONSUMER_SECRET = "mlops-dataset-{relation_id}"  # noqa: S105 - a secret label
REGISTRY_USER = "registry"
CONSUMER_USER = "relation-{relation_id}"
BUCKET_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
APPROACHES = ("", "model-centric", "data-centric")
JOB_SLOT = "registry"
# How long an action with wait=true waits for its job before returning the job's id.
ACTION_WAIT = 300.0
# Peer application data, written by the leader: what it knows of the versions and the remote.
LATEST_KEY = "latest-version"
PINNED_KEY = "pinned-version"
INVALID_KEY = "invalid-versions"
BOOTSTRAP_ERROR_KEY = "bootstrap-error"
MOVE_ERROR_KEY = "move-error"
# The approach revision applied last, its mode and the version it pinned (AppliedApproach).
APPROACH_KEY = "approach-applied"
APPROACH_SERVICE = "data-versioning"
NO_VERSION_TO_PIN = "no dataset version to pin yet"


@dataclass(frozen=True)
class RegistryConfig:
    """The charm's config options, validated."""

    bucket: str = "dvc"
    public_host: str = ""
    approach: str = ""
    git_port: int = 8080
    s3_port: int = 9000
    metrics_port: int = 9102

    def __post_init__(self):
        if not BUCKET_PATTERN.match(self.bucket):
            raise ValueError("bucket: must be 3-63 lowercase letters, digits or '-'")
        # The services run as an unprivileged user: no port below 1024.
        if not 1024 <= self.git_port <= 65535:
            raise ValueError("git-port: must be between 1024 and 65535")
        if not 1024 <= self.s3_port <= 65533:
            raise ValueError("s3-port: must be between 1024 and 65533")
        if self.s3_port <= self.git_port <= self.s3_port + 2:
            raise ValueError("git-port: must not be s3-port, s3-port + 1 or s3-port + 2")
        observability.check_metrics_port(
            self.metrics_port,
            (self.git_port, *range(self.s3_port, self.s3_port + 3)),
            "git-port, s3-port, s3-port + 1 or s3-port + 2",
        )
        if self.public_host and not is_host(self.public_host):
            raise ValueError("public-host: must be a DNS name or an IP address")
        if self.approach not in APPROACHES:
            raise ValueError("approach: must be model-centric, data-centric or empty")


def _check_version(value: str, name: str) -> None:
    if not VERSION_PATTERN.match(value):
        raise ValueError(f"{name} must be a version name such as v3, not {value!r}")


def _check_message(message: str) -> None:
    if "\n" in message or len(message) > 500:
        raise ValueError("message must be one line of at most 500 characters")


@dataclass(frozen=True)
class AppliedApproach:
    """An approach revision the leader applied: its mode, and the version it pinned."""

    revision: int
    mode: str
    pinned: str | None = None

    @classmethod
    def from_json(cls, text: str | None) -> AppliedApproach | None:
        try:
            return cls(**json.loads(text)) if text else None
        except (json.JSONDecodeError, TypeError):
            return None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


@dataclass(frozen=True)
class CreateVersionParams:
    """Parameters of the create-version action."""

    source: str
    data_dir: str  # the registry's storage, from the charm, not a parameter
    source_kind: str = "upload"
    message: str = ""
    wait: bool = True

    def __post_init__(self):
        if not (self.source.startswith("/") or self.source.startswith("s3://")):
            raise ValueError("source must be an absolute path or an s3://bucket/prefix URL")
        if self.source.startswith("/"):
            root = self.data_dir.rstrip("/")
            path = posixpath.normpath(self.source)
            if not path.startswith(root + "/"):
                raise ValueError(f"source must be under {root}/, the registry's storage")
            top = path[len(root) + 1 :].split("/", 1)[0]
            if top in registry_state.INTERNAL_FOLDERS:
                raise ValueError(f"source must not be the registry's own folder {root}/{top}")
        if self.source_kind not in ("upload", "labelling-export", "augmentation"):
            raise ValueError("source-kind must be upload, labelling-export or augmentation")
        _check_message(self.message)


class DiffVersionsParams(pydantic.BaseModel):
    """Parameters of the diff-versions action (``from`` is a Python keyword)."""

    old: str = pydantic.Field(alias="from")
    new: str = pydantic.Field(alias="to")

    @pydantic.model_validator(mode="after")
    def _are_versions(self) -> DiffVersionsParams:
        _check_version(self.old, "from")
        _check_version(self.new, "to")
        if self.old == self.new:
            raise ValueError("from and to must be different versions")
        return self


@dataclass(frozen=True)
class PinVersionParams:
    """Parameters of the pin-version action."""

    version: str

    def __post_init__(self):
        if self.version:
            _check_version(self.version, "version")


@dataclass(frozen=True)
class RollbackParams:
    """Parameters of the rollback action."""

    to: str
    message: str = ""
    wait: bool = True

    def __post_init__(self):
        _check_version(self.to, "to")
        _check_message(self.message)


class RegistryServerCharm(ops.CharmBase, abc.ABC):
    """The DVC data registry offered over ``mlops_dataset``; a subclass runs it somewhere."""

    # A substrate's own options extend the shared ones (a subclass of ``RegistryConfig``).
    config_class: type[RegistryConfig] = RegistryConfig
    # The system user the servers, the bootstrap and the jobs run as.
    service_user: str = "_daemon_"

    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        self.tracing = charm_tracing.trace_charm(self)
        self.s3 = S3Requirer(self, "s3-credentials", bucket_name=self._requested_bucket())
        # HTTPS once the certificates relation issued the unit's certificate; also what removes
        # the old revisions of the charm's secrets (see mlops_charms.tls).
        self.certificate = tls.ServerCertificate(self, self._certificate_hosts)
        self._problem: str | None = None
        for event in (
            self.on[DATASET_ENDPOINT].relation_joined,
            self.on[DATASET_ENDPOINT].relation_changed,
            self.on[PEERS].relation_changed,
            self.on[observability.METRICS_ENDPOINT].relation_joined,
            self.on[observability.DASHBOARD_ENDPOINT].relation_joined,
            *self.s3.events,
            *self.certificate.events,
            *approach.relation_events(self),
        ):
            framework.observe(event, self._reconcile)
        framework.observe(self.on[DATASET_ENDPOINT].relation_broken, self._on_consumer_gone)
        framework.observe(self.on.collect_unit_status, self._on_collect_status)
        framework.observe(self.on.create_version_action, self._on_create_version)
        framework.observe(self.on.list_versions_action, self._on_list_versions)
        framework.observe(self.on.diff_versions_action, self._on_diff_versions)
        framework.observe(self.on.pin_version_action, self._on_pin_version)
        framework.observe(self.on.rollback_action, self._on_rollback)
        framework.observe(self.on.list_jobs_action, self._on_list_jobs)
        framework.observe(self.on.create_backup_action, self._on_create_backup)
        framework.observe(self.on.list_backups_action, self._on_list_backups)
        framework.observe(self.on.restore_action, self._on_restore)
        framework.observe(self.on.rotate_credentials_action, self._on_rotate_credentials)

    # --- the substrate: what a subclass says ------------------------------------------------

    @property
    @abc.abstractmethod
    def _state_dir(self) -> str:
        """Where the unit's storage is, as the servers see it."""

    @property
    @abc.abstractmethod
    def _files(self) -> Files:
        """The servers' files: the workload container's, or the machine's own."""

    @property
    @abc.abstractmethod
    def _default_public_host(self) -> str:
        """The host consumers reach the registry at when ``public-host`` is not set."""

    @property
    @abc.abstractmethod
    def _binaries(self) -> Binaries:
        """Where the workload's programs are."""

    @property
    def _tags_notify(self) -> tuple[str, ...]:
        """What the post-receive hook runs when tags arrive; empty: the substrate watches."""
        return ()

    @abc.abstractmethod
    def _prepare_substrate(self) -> bool:
        """Make the substrate ready (connect, install); False: not yet, the status says why."""

    @abc.abstractmethod
    def _substrate_status(self) -> ops.StatusBase | None:
        """Why the substrate is not ready yet (Pebble, storage, install), or None."""

    @abc.abstractmethod
    def _jobs(self) -> SlotRunner:
        """The registry's one job slot."""

    @abc.abstractmethod
    def _run(
        self,
        command: Sequence[str],
        *,
        what: str,
        environment: Mapping[str, str],
        working_dir: str,
        timeout: float = 120.0,
    ) -> str:
        """Run a short command as the service user; its stdout, or ``WorkloadError``."""

    @abc.abstractmethod
    def _run_servers(self, settings: RegistrySettings, *, restart: bool) -> None:
        """Run ``registry.services(settings)``; ``restart``: files read at start changed."""

    @abc.abstractmethod
    def _servers_running(self) -> bool:
        """Whether the git server (Apache) runs."""

    @abc.abstractmethod
    def _stop_servers(self, settings: RegistrySettings) -> None:
        """Stop every server of the registry (before a restore swaps their files)."""

    def _on_ended_job(self, job: Job) -> None:
        """After the charm acted on ``job``'s end: what the substrate tidies (a unit file)."""

    # --- goal state -------------------------------------------------------------------------

    def _requested_bucket(self) -> str:
        bucket = self.config.get("bucket")
        return bucket if isinstance(bucket, str) and BUCKET_PATTERN.match(bucket) else "dvc"

    def _substrate_ready(self) -> bool:
        return self._substrate_status() is None

    def _config(self) -> RegistryConfig:
        return self.load_config(self.config_class)

    def _config_problem(self) -> str | None:
        return sidecar.config_problem(self, self.config_class)

    def _user_secret(self, label: str, username: str, *, write: bool) -> Credential | None:
        """A registry user from its secret: git password and its own S3 key pair."""
        content = secrets.ensure_app_secret(self, label, lambda: _new_credential(username))
        if content is None:
            return None
        if not content.get("access-key") and self.unit.is_leader():
            # A secret made before users had S3 keys of their own.
            content = {**_new_credential(username), **content, "username": username}
            self.model.get_secret(label=label).set_content(content)
        return Credential(
            content["username"],
            content["password"],
            access_key=content.get("access-key", ""),
            secret_key=content.get("secret-key", ""),
            write=write,
        )

    def _consumer_access(self, relation: ops.Relation) -> str:
        request, _problem = databags.load_remote_app_data(relation, DatasetRequirerData)
        return (request.access if request else None) or "read"

    def _consumer_credential(self, relation: ops.Relation) -> Credential | None:
        return self._user_secret(
            CONSUMER_SECRET.format(relation_id=relation.id),
            CONSUMER_USER.format(relation_id=relation.id),
            write=self._consumer_access(relation) == "write",
        )

    def _wanted_bucket(self) -> ExternalBucket | None:
        """The external bucket the s3 relation offers, if it is complete."""
        connection = self.s3.connection()
        if connection is None:
            return None
        return ExternalBucket(
            bucket=connection.bucket,
            path=connection.path,
            endpoint=connection.endpoint,
            region=connection.region,
            access_key=connection.access_key,
            secret_key=connection.secret_key,
            ca_chain=connection.ca_chain,
            path_style=connection.path_style,
        )

    def _certificate_hosts(self) -> list[str]:
        """Who reaches the registry: consumers at the public host, the exporter at localhost."""
        public = self.config.get("public-host")
        hosts = [public] if isinstance(public, str) and is_host(public) else []
        return [*hosts, self._default_public_host, "localhost"]

    def _settings(self, config: RegistryConfig, writer: Credential) -> RegistrySettings:
        consumers = [
            self._consumer_credential(relation)
            for relation in self.model.relations[DATASET_ENDPOINT]
            if not databags.load_remote_app_data(relation, DatasetRequirerData)[1]
        ]
        settings = RegistrySettings(
            state_dir=self._state_dir,
            public_host=config.public_host or self._default_public_host,
            users=(writer, *(c for c in consumers if c is not None)),
            git_port=config.git_port,
            s3_port=config.s3_port,
            metrics_port=config.metrics_port,
            service_user=self.service_user,
            service_group=self.service_user,
            binaries=self._binaries,
            tags_notify=self._tags_notify,
            tls=self.certificate.server_tls(),
        )
        backend = registry_state.read_backend(self._files, settings)
        wanted = self._wanted_bucket()
        # rclone trusts the CA of the bucket in use and of the one objects may move to.
        trusted = "".join(b.ca_chain for b in (backend, wanted) if b and b.ca_chain) or None
        return dataclasses.replace(settings, backend=backend, trusted_ca=trusted)

    def _ready_settings(self) -> RegistrySettings | None:
        if self._config_problem() or not self._substrate_ready():
            return None
        writer = self._writer()
        return self._settings(self._config(), writer) if writer else None

    def _writer(self) -> Credential | None:
        return self._user_secret(REGISTRY_SECRET, REGISTRY_USER, write=True)

    # --- reconcile --------------------------------------------------------------------------

    def _reconcile(self, event: ops.EventBase) -> None:
        """Bring the workload, the remote, the versions and the relations to the goal state."""
        if self._config_problem() or not self._prepare_substrate():
            return
        if not self.unit.is_leader() and self.app.planned_units() > 1:
            return  # a single writer: collect-status says so
        settings = self._ready_settings()
        if settings is None:
            return
        self.unit.set_ports(settings.git_port, settings.s3_port, settings.metrics_port)
        observability.publish(
            self,
            port=settings.metrics_port,
            job_name=registry_observability.JOB_NAME,
            alert_rules=registry_observability.ALERT_RULES,
            dashboards=registry_observability.DASHBOARDS,
        )
        try:
            if self.unit.is_leader() and self._settle(settings):
                settings = self._ready_settings() or settings  # another bucket is in use now
            if backup.restoring(self._jobs()) is not None:
                return  # the servers stay stopped: the restore's end wakes the charm again
            self._apply(settings)
            if self.unit.is_leader():
                self._follow_remote(settings, retry=isinstance(event, ops.UpdateStatusEvent))
                self._follow_versions(settings)
                self._follow_approach(settings)
                self._record_pin(settings)
        except jobs.JobBusyError as error:
            logger.info("a job waits for the slot: %s", error)  # started by a later hook
        except (WorkloadError, JobStartError, ops.pebble.Error, OSError) as error:
            self._problem = str(error).splitlines()[0]
            logger.warning("registry not configured: %s", self._problem)
            return
        if self.unit.is_leader():
            self._provide_dataset(settings)

    def _settle(self, settings: RegistrySettings) -> bool:
        """Act on ended jobs, take new keys of the bucket in use; True if the bucket changed."""
        backend = settings.backend
        self._act_on_ended_jobs(settings)
        wanted = self._wanted_bucket()
        if wanted is not None and wanted.location == _location(backend) and wanted != backend:
            registry_state.write_backend(self._files, settings, wanted)  # new keys or CA
        return registry_state.read_backend(self._files, settings) != backend

    def _apply(self, settings: RegistrySettings) -> None:
        """Write the files, bootstrap the repository until it succeeded once, run the servers."""
        files = self._files
        if settings.tls is None:
            tls.remove_server_files(files, settings.tls_files)
        for directory in settings.directories:
            if not files.exists(directory):
                files.make_dir(
                    directory, make_parents=True, user=self.service_user, group=self.service_user
                )
        changed = {
            path
            for path, (content, mode) in registry.files(settings).items()
            if pebble.push_if_changed(
                files,
                path,
                content,
                permissions=mode,
                user=self.service_user,
                group=self.service_user,
            )
        }
        changed |= registry_state.write_htpasswd(files, settings)
        if self.unit.is_leader():
            registry_state.bootstrap(files, settings, self._run, self._set_bootstrap_error)
        restart = bool(changed & registry.restart_files(settings))
        self._run_servers(settings, restart=restart)

    def _set_bootstrap_error(self, error: str | None) -> None:
        self._set_peer_value(BOOTSTRAP_ERROR_KEY, error)

    # --- the remote: move the objects before the services serve another bucket --------------

    def _follow_remote(self, settings: RegistrySettings, *, retry: bool) -> None:
        """Start moving the objects when the s3 relation names another bucket than in use.

        The services keep serving the bucket in use until a job has copied every object to
        the new one and checked the copy; only then does the charm switch (see
        ``_act_on_ended_jobs``). A failed move is retried on update-status.
        """
        wanted = self._wanted_bucket()
        if wanted is None and self.s3.status():
            return  # a relation still completing: keep the bucket in use
        in_use = settings.backend
        if _location(wanted) == _location(in_use):
            self._set_peer_value(MOVE_ERROR_KEY, None)
            return
        runner = self._jobs()
        if runner.current() is not None:
            return  # one job at a time; the move starts after it
        failed = self._failed_move()
        if failed and failed.get("to") == _target(wanted) and not retry:
            return  # that move failed: retried on update-status (another target goes at once)
        runner.start(registry.move_objects_job(settings, in_use, wanted))

    def _failed_move(self) -> dict[str, str] | None:
        """The last failed move of the objects: where to (``to``) and why (``error``)."""
        recorded = self._peer_value(MOVE_ERROR_KEY)
        try:
            failed = json.loads(recorded) if recorded else None
        except json.JSONDecodeError:
            return None
        return failed if isinstance(failed, dict) else None

    # --- versions: tags in the repository, validated when users push them -------------------

    def _follow_versions(self, settings: RegistrySettings) -> None:
        """Publish the latest valid version; validate pushed tags in a job, one at a time."""
        tags = registry_state.tags(self._files, settings)
        latest = self._peer_value(LATEST_KEY)
        invalid = set(self._invalid_versions())
        if latest and latest not in tags:
            # The repository lost versions (new storage): never publish one it lacks.
            kept = [t for t in tags if t not in invalid and _number(t) < _number(latest)]
            latest = max(kept, key=_number, default=None)
            self._set_peer_value(LATEST_KEY, latest)
        pinned = self._peer_value(PINNED_KEY)
        if pinned and pinned not in tags:
            logger.warning("pinned version %s is not in the repository: unpinned", pinned)
            self._set_peer_value(PINNED_KEY, None)
        unknown = sorted(
            (t for t in tags if _number(t) > _number(latest) and t not in invalid), key=_number
        )
        runner = self._jobs()
        if unknown and runner.current() is None:
            name = unknown[0]
            spec = registry.dataset_job(
                settings, "validate-version", name, params={"version": name}
            )
            runner.start(spec)

    def _pin_problem(self, version: str, settings: RegistrySettings) -> str | None:
        """Why ``version`` cannot be pinned (not a valid version of the registry), or None."""
        if version in self._invalid_versions():
            return f"cannot pin {version}: its data is not in the remote"
        tags = registry_state.tags(self._files, settings)
        if version not in tags or _number(version) > _number(self._peer_value(LATEST_KEY)):
            return f"cannot pin {version}: no such valid version"
        return None

    def _act_on_ended_jobs(self, settings: RegistrySettings) -> None:
        """Act once on each ended job: new versions, validations, moves of the remote."""
        runner = self._jobs()
        for job in runner.unreported():
            self._act_on(job, settings)
            runner.mark_reported(job)
            self._on_ended_job(job)

    def _act_on(self, job: Job, settings: RegistrySettings) -> None:
        result = job.result or {}
        if job.state == "failed":
            logger.warning("job %s (%s) failed: %s", job.id, job.kind, job.error)
        if job.kind in ("create-version", "rollback") and job.state == "succeeded":
            self._note_version(str(result.get("version", "")))
        elif job.kind == "validate-version":
            name = job.params.get("version", "")
            if job.state == "succeeded" and result.get("valid"):
                self._note_version(name)
            else:
                # Never published unchecked: a version that could not be checked counts as
                # invalid too (the job's error says why; versions are immutable).
                reason = result.get("reason") or job.error
                logger.warning("pushed version %s is not valid: %s", name, reason)
                self._set_invalid(name)
        elif job.kind == "move-remote":
            wanted = self._wanted_bucket()
            if job.state == "failed":
                failed = {"to": job.params.get("to", ""), "error": job.error or "failed"}
                self._set_peer_value(MOVE_ERROR_KEY, json.dumps(failed))
            elif result.get("target") == _target(wanted):
                registry_state.write_backend(self._files, settings, wanted)
                self._set_peer_value(MOVE_ERROR_KEY, None)

    def _note_version(self, version: str) -> None:
        if _number(version) > _number(self._peer_value(LATEST_KEY)):
            self._set_peer_value(LATEST_KEY, version)

    def _invalid_versions(self) -> list[str]:
        return (self._peer_value(INVALID_KEY) or "").split()

    def _set_invalid(self, name: str) -> None:
        invalid = sorted({*self._invalid_versions(), name}, key=_number)
        self._set_peer_value(INVALID_KEY, " ".join(invalid))

    # --- the approach: each policy revision applied once --------------------------------------

    def _applied_approach(self) -> AppliedApproach | None:
        return AppliedApproach.from_json(self._peer_value(APPROACH_KEY))

    def _record_pin(self, settings: RegistrySettings) -> None:
        """Leave the pinned version where the metrics exporter reads it (a file, no restart)."""
        pebble.push_if_changed(
            self._files,
            settings.pinned_version_path,
            self._peer_value(PINNED_KEY) or "",
            permissions=0o644,
            user=self.service_user,
            group=self.service_user,
        )

    def _follow_approach(self, settings: RegistrySettings) -> None:
        """Apply a new revision of the approach once, then acknowledge it (leader).

        Model-centric pins its ``dataset_version``, or the latest version at that moment;
        data-centric unpins. A pin-version afterwards is the operator's override until the
        next revision. A revision that cannot be applied yet (no version, or not a valid one)
        is retried by later hooks; meanwhile the previous one is acknowledged with the reason.
        Without the relation the pin stays as it is; a new relation applies its revision anew.
        """
        if self.model.get_relation(approach.APPROACH_ENDPOINT) is None:
            self._set_peer_value(APPROACH_KEY, None)
            return
        in_force, _problem = approach.read(self.model)
        if in_force is None:
            return  # nothing published yet, or a bad databag: the status says so
        applied = self._applied_approach()
        reason = None
        if applied is None or applied.revision != in_force.revision:
            pinned, reason = self._approach_pin(in_force, settings)
            if reason is None:
                applied = AppliedApproach(in_force.revision, in_force.mode, pinned)
                self._set_peer_value(PINNED_KEY, pinned)
                self._set_peer_value(APPROACH_KEY, applied.to_json())
                logger.info(
                    "applied %s (rev %d), pinned: %s", in_force.mode, in_force.revision, pinned
                )
        approach.acknowledge(
            self.model,
            APPROACH_SERVICE,
            applied.revision if applied else None,
            reason=reason,
            waiting=reason == NO_VERSION_TO_PIN,
            pinned_version=applied.pinned if applied else None,
        )

    def _approach_pin(
        self, in_force: Approach, settings: RegistrySettings
    ) -> tuple[str | None, str | None]:
        """The version ``in_force`` pins (None: unpinned), or why it cannot be applied now."""
        if in_force.data_centric:
            return None, None
        version = in_force.policy.dataset_version or self._peer_value(LATEST_KEY)
        if version is None:
            return None, NO_VERSION_TO_PIN
        problem = self._pin_problem(version, settings)
        return (None, problem) if problem else (version, None)

    # --- consumers --------------------------------------------------------------------------

    def _provide_dataset(self, settings: RegistrySettings) -> None:
        """Give every consumer its credentials and tell it where the data and versions are."""
        latest = self._peer_value(LATEST_KEY)
        pinned = self._peer_value(PINNED_KEY)
        for relation in self.model.relations[DATASET_ENDPOINT]:
            _request, problem = databags.load_remote_app_data(relation, DatasetRequirerData)
            if problem:
                continue
            credential = self._consumer_credential(relation)
            if credential is None:
                continue
            published, _ = databags.load_app_data(relation, self.app, DatasetProviderData)
            databags.save_app_data(
                relation,
                self.app,
                DatasetProviderData(
                    registry_url=settings.git_url,
                    remote_url=settings.remote_url,
                    remote_endpoint=settings.remote_endpoint,
                    access="write" if credential.write else "read",
                    credentials_secret_id=secrets.granted_secret_id(
                        self.model,
                        relation,
                        CONSUMER_SECRET.format(relation_id=relation.id),
                        published.credentials_secret_id if published else None,
                    ),
                    latest_version=latest,
                    pinned_version=pinned,
                    ca=settings.tls.ca if settings.tls else None,
                ),
            )

    def _on_consumer_gone(self, event: ops.RelationBrokenEvent) -> None:
        """Remove a departed consumer's secret (its user leaves htpasswd), then reconcile."""
        if self.unit.is_leader():
            secrets.remove_app_secret(
                self.model, CONSUMER_SECRET.format(relation_id=event.relation.id)
            )
        self._reconcile(event)

    # --- peer data --------------------------------------------------------------------------

    def _peer_data(self) -> ops.RelationDataContent | None:
        relation = self.model.get_relation(PEERS)
        return relation.data[self.app] if relation else None

    def _peer_value(self, key: str) -> str | None:
        data = self._peer_data()
        return (data.get(key) or None) if data is not None else None

    def _set_peer_value(self, key: str, value: str | None) -> None:
        data = self._peer_data()
        if data is None or (data.get(key) or None) == value:
            return
        if value:
            data[key] = value
        else:
            del data[key]

    # --- status -----------------------------------------------------------------------------

    def _on_collect_status(self, event: ops.CollectStatusEvent) -> None:
        config_problem = self._config_problem()
        if config_problem:
            event.add_status(ops.BlockedStatus(config_problem))
            return
        if self.app.planned_units() > 1:
            event.add_status(
                ops.BlockedStatus("scale to 1 unit: the registry's git server is a single writer")
            )
        substrate_status = self._substrate_status()
        if substrate_status is not None:
            event.add_status(substrate_status)
            return
        self._add_relations_status(event)
        if secrets.read_app_secret(self.model, REGISTRY_SECRET) is None:
            event.add_status(ops.WaitingStatus("waiting for the leader to create the secrets"))
            return
        self._add_registry_status(event)
        self._add_approach_status(event)
        restoring = self._restoring()
        if restoring is not None:
            event.add_status(ops.MaintenanceStatus(f"restoring {restoring}"))
        if not self._servers_running():
            event.add_status(ops.MaintenanceStatus("starting the registry"))
        event.add_status(ops.ActiveStatus(self._active_message()))

    def _add_relations_status(self, event: ops.CollectStatusEvent) -> None:
        """A certificate or S3 not complete yet, a consumer's bad request."""
        certificate_status = self.certificate.status()
        if certificate_status:
            # The registry serves as it did (plain HTTP) until the certificate is issued.
            event.add_status(certificate_status)
        s3_status = self.s3.unit_status()
        if s3_status:
            # The registry keeps serving its current bucket until S3 is complete.
            event.add_status(s3_status)
        for relation in self.model.relations[DATASET_ENDPOINT]:
            _, problem = databags.load_remote_app_data(relation, DatasetRequirerData)
            if problem:
                event.add_status(ops.BlockedStatus(f"{DATASET_ENDPOINT}: {problem}"))

    def _add_registry_status(self, event: ops.CollectStatusEvent) -> None:
        """What failed in this hook, a failed bootstrap, the DVC remote's move."""
        if self._problem:
            event.add_status(ops.BlockedStatus(self._problem))
        bootstrap_error = self._peer_value(BOOTSTRAP_ERROR_KEY)
        if bootstrap_error:
            event.add_status(ops.BlockedStatus(f"registry bootstrap failed: {bootstrap_error}"))
        if not self.unit.is_leader():
            return
        wanted = self._wanted_bucket()
        settings = self._ready_settings()
        if settings is None or (wanted is None and self.s3.status()):
            return
        if _location(wanted) == _location(settings.backend):
            return
        failed = self._failed_move()
        if failed and failed.get("to") == _target(wanted):
            event.add_status(
                ops.BlockedStatus(
                    "moving the DVC remote failed (retried on update-status): "
                    f"{failed.get('error')}"
                )
            )
            return
        event.add_status(ops.MaintenanceStatus(f"moving the DVC remote to {_target(wanted)}"))

    def _add_approach_status(self, event: ops.CollectStatusEvent) -> None:
        """A bad approach databag; why the leader could not apply the current revision."""
        in_force, problem = approach.read(self.model)
        if problem:
            event.add_status(ops.BlockedStatus(problem))
        if in_force is None or not self.unit.is_leader():
            return
        acknowledged = approach.acknowledged(self.model)
        if acknowledged is None or acknowledged.reason is None:
            return
        message = (
            f"{approach.APPROACH_ENDPOINT}: cannot apply {in_force.mode} "
            f"(rev {in_force.revision}): {acknowledged.reason}"
        )
        # A first version comes from create-version or a push; an invalid one needs a person.
        if acknowledged.waiting:
            event.add_status(ops.WaitingStatus(message))
        else:
            event.add_status(ops.BlockedStatus(message))

    def _active_message(self) -> str:
        latest, pinned = self._peer_value(LATEST_KEY), self._peer_value(PINNED_KEY)
        parts = [f"latest {latest}" if latest else "no versions yet"]
        applied = self._applied_approach()
        if applied:
            parts.append(f"{applied.mode}: pinned {pinned}" if pinned else applied.mode)
        elif pinned:
            parts.append(f"pinned {pinned}")
        invalid = self._invalid_versions()
        if invalid:
            parts.append(f"invalid (data missing): {', '.join(invalid)}")
        return "; ".join(parts)

    # --- actions ----------------------------------------------------------------------------

    def _action_settings(self, event: ops.ActionEvent) -> RegistrySettings | None:
        """Settings for a ready registry, or None after failing ``event`` saying why."""
        substrate_status = self._substrate_status()
        if backup.refused_here(
            event,
            config_problem=self._config_problem(),
            unready=None
            if substrate_status is None
            else f"the registry is not ready: {substrate_status.message}",
            leader=self.unit.is_leader(),
        ):
            return None
        settings = self._ready_settings()
        if settings is None:
            event.fail("the registry's secrets do not exist yet: wait for the leader")
        return settings

    def _approach(self) -> str:
        """The mode versions record: the approach relation's, else the ``approach`` option."""
        in_force, _problem = approach.read(self.model)
        if in_force is not None:
            return in_force.mode
        return self._config().approach if not self._config_problem() else ""

    def _start_version_job(
        self,
        event: ops.ActionEvent,
        settings: RegistrySettings,
        command: str,
        args: list[str],
        *,
        shown: dict[str, str],
        wait: bool,
    ) -> None:
        """Cut a version in a job; with ``wait``, report the version when it ends in time."""
        try:
            # A move that ended switches first: never cut a version onto the bucket it left.
            if self._settle(settings):
                settings = self._ready_settings() or settings
                self._apply(settings)
        except (WorkloadError, ops.pebble.Error, OSError) as error:
            event.fail(f"the registry is not ready: {str(error).splitlines()[0]}")
            return
        mode = self._approach()
        args += ["--approach", mode] if mode else []
        spec = registry.dataset_job(settings, command, *args, params=shown)
        job = jobs.start_for_action(event, self._jobs(), spec, wait=wait, timeout=ACTION_WAIT)
        if job is None or not job.ended:
            return
        try:
            self._act_on_ended_jobs(settings)
            self._follow_approach(settings)  # a first version is what model-centric waits for
            self._provide_dataset(settings)
        except (WorkloadError, ops.pebble.Error, OSError) as error:
            logger.warning("version %s made, not yet published: %s", job.id, error)
        if job.state == "failed":
            event.fail(f"{command} failed: {job.error}")
            return
        result = job.result or {}
        event.set_results(
            {
                "job": job.id,
                "state": job.state,
                "version": result.get("version", ""),
                "parent": result.get("parent") or "",
                "commit": result.get("commit", ""),
                "files": result.get("files", 0),
                "bytes": result.get("bytes") or 0,
                "source": result.get("source", ""),
            }
        )

    def _on_create_version(self, event: ops.ActionEvent) -> None:
        params = event.load_params(CreateVersionParams, data_dir=self._state_dir, errors="fail")
        settings = self._action_settings(event)
        if settings is None:
            return
        args = ["--source", params.source, "--source-kind", params.source_kind]
        args += ["--message", params.message] if params.message else []
        if params.source.startswith("s3://"):
            # The source bucket is on the registry's own S3 endpoint (its read-write server).
            args += ["--source-endpoint-url", settings.local_endpoint]
        self._start_version_job(
            event,
            settings,
            "create-version",
            args,
            shown={"source": params.source},
            wait=params.wait,
        )

    def _on_rollback(self, event: ops.ActionEvent) -> None:
        params = event.load_params(RollbackParams, errors="fail")
        settings = self._action_settings(event)
        if settings is None:
            return
        args = ["--to", params.to]
        args += ["--message", params.message] if params.message else []
        self._start_version_job(
            event, settings, "rollback", args, shown={"to": params.to}, wait=params.wait
        )

    # --- backups: the repository and the embedded remote's objects -------------------------

    def _restoring(self) -> str | None:
        """The backup a running job restores now, or None (also when the jobs are unreadable)."""
        if not self._substrate_ready():
            return None
        try:
            return backup.restoring(self._jobs())
        except (ops.pebble.Error, ops.ModelError, OSError):
            return None

    def _backup_settings(self, event: ops.ActionEvent) -> RegistrySettings | None:
        """Settings for a backup action: ready, leader, the bucket's move settled."""
        settings = self._action_settings(event)
        if settings is None:
            return None
        try:
            if self._settle(settings):
                settings = self._ready_settings() or settings
        except (WorkloadError, ops.pebble.Error, OSError) as error:
            event.fail(f"the registry is not ready: {str(error).splitlines()[0]}")
            return None
        return settings

    def _on_create_backup(self, event: ops.ActionEvent) -> None:
        params = event.load_params(backup.CreateBackupParams, errors="fail")
        settings = self._backup_settings(event)
        if settings is None:
            return
        spec = backup.create_job(
            settings.binaries.mlops_workload,
            registry.backup_plan(settings, self.app.name),
            app=self.app.name,
            unit=self.unit.name,
            environment={"HOME": settings.home_dir},
        )
        backup.create_for_action(
            event,
            self._jobs(),
            spec,
            wait=params.wait,
            timeout=ACTION_WAIT,
            act_on_ended=lambda _job: self._act_on_ended_jobs(settings),
        )

    def _list_backups(self, event: ops.ActionEvent, settings: RegistrySettings) -> dict | None:
        """``mlops-workload backup list`` (manifests only); None after failing ``event``."""
        plan = registry.backup_plan(settings, self.app.name)
        try:
            return workload_exec.decode_json(
                self._run(
                    backup.list_command(settings.binaries.mlops_workload, plan),
                    what="list-backups",
                    environment={"HOME": settings.home_dir, **plan.environment},
                    working_dir=settings.state_dir,
                ),
                what="list-backups",
            )
        except WorkloadError as error:
            event.fail(str(error))
            return None

    def _on_list_backups(self, event: ops.ActionEvent) -> None:
        settings = self._backup_settings(event)
        if settings is None:
            return
        result = self._list_backups(event, settings)
        if result is not None:
            event.set_results(backup.listed_results(result))

    def _on_restore(self, event: ops.ActionEvent) -> None:
        """Stop the servers, restore in a job; the job's end (a reconcile) starts them again."""
        params = event.load_params(backup.RestoreParams, errors="fail")
        settings = self._backup_settings(event)
        if settings is None:
            return
        plan = registry.backup_plan(settings, self.app.name)

        def serve_again() -> None:
            try:
                self._act_on_ended_jobs(settings)
                self._apply(settings)
            except (WorkloadError, ops.pebble.Error, OSError) as error:
                logger.warning("servers not restarted after the restore: %s", error)

        backup.restore_for_action(
            event,
            self._jobs(),
            backup_id=params.backup_id,
            destination=plan.destination,
            listed=lambda: self._list_backups(event, settings),
            stop_servers=lambda: self._stop_servers(settings),
            spec=backup.restore_job(
                settings.binaries.mlops_workload,
                plan,
                params.backup_id,
                environment={"HOME": settings.home_dir},
            ),
            wait=params.wait,
            timeout=ACTION_WAIT,
            serve_again=serve_again,
        )

    def _on_list_jobs(self, event: ops.ActionEvent) -> None:
        if self._action_settings(event) is None:
            return
        jobs.list_for_action(event, self._jobs())

    def _dataset(self, event: ops.ActionEvent, command: str, *args: str) -> dict | None:
        """Run a short ``mlops-workload dataset`` command; None after failing ``event``."""
        settings = self._action_settings(event)
        if settings is None:
            return None
        try:
            return workload_exec.decode_json(
                self._run(
                    registry.dataset_command(settings, command, *args),
                    what=command,
                    environment=registry.workload_environment(settings),
                    working_dir=settings.state_dir,
                ),
                what=command,
            )
        except WorkloadError as error:
            event.fail(str(error).removeprefix(f"{command} failed: "))
            return None

    def _on_list_versions(self, event: ops.ActionEvent) -> None:
        result = self._dataset(event, "list-versions")
        if result is None:
            return
        listed = result.get("versions", [])
        event.set_results(
            {
                "count": len(listed),
                "latest": self._peer_value(LATEST_KEY) or "",  # the latest valid one
                "pinned": self._peer_value(PINNED_KEY) or "",
                "versions": json.dumps(listed),
            }
        )

    def _on_diff_versions(self, event: ops.ActionEvent) -> None:
        try:
            params = DiffVersionsParams.model_validate(dict(event.params))
        except pydantic.ValidationError as error:
            event.fail(f"Error in action parameters: {databags.one_line(error)}")
            return
        result = self._dataset(event, "diff-versions", params.old, params.new)
        if result is None:
            return
        event.set_results(
            {
                "from": params.old,
                "to": params.new,
                "added": json.dumps(result["added"]),
                "removed": json.dumps(result["removed"]),
                "modified": json.dumps(result["modified"]),
                "added-bytes": result["added_bytes"],
                "removed-bytes": result["removed_bytes"],
                "modified-bytes": result["modified_bytes"],
            }
        )

    def _on_pin_version(self, event: ops.ActionEvent) -> None:
        params = event.load_params(PinVersionParams, errors="fail")
        settings = self._action_settings(event)
        if settings is None:
            return
        problem = self._pin_problem(params.version, settings) if params.version else None
        if problem:
            event.fail(problem)
            return
        self._set_peer_value(PINNED_KEY, params.version or None)
        self._provide_dataset(settings)
        self._record_pin(settings)
        event.set_results({"pinned": params.version})

    def _on_rotate_credentials(self, event: ops.ActionEvent) -> None:
        """New git passwords and S3 key pairs for the registry's writer and its consumers.

        All at once: htpasswd (Apache reads it on every request) and s3.env are rewritten
        first, and the servers restart once, as rclone reads its keys only at start; then
        each user's secret gets a new revision, which consumers read on ``secret-changed``.
        """
        if not rotation.leader_or_fail(self, event):
            return
        params = event.load_params(rotation.RotateCredentialsParams, errors="fail")
        try:
            relations = rotation.consumers(self.model.relations[DATASET_ENDPOINT], params)
        except rotation.RotationError as error:
            event.fail(str(error))
            return
        settings = self._action_settings(event)
        if settings is None:
            return
        if not self._servers_running():
            event.fail("the registry's git server is not running: check `juju status`")
            return
        job = self._jobs().current()
        if job is not None:
            event.fail(f"job {job.id} ({job.kind}) runs: rotate once it ended")
            return
        changes = [
            rotation.Change(
                name, label, current, {**current, **_new_credential(current["username"])}
            )
            for name, label in self._rotation_labels(params.admin, relations)
            if (current := secrets.read_app_secret(self.model, label)) is not None
        ]

        def apply(contents: Mapping[str, dict[str, str]]) -> None:
            by_user = {content["username"]: content for content in contents.values()}
            users = tuple(
                dataclasses.replace(
                    user,
                    password=by_user[user.username]["password"],
                    access_key=by_user[user.username]["access-key"],
                    secret_key=by_user[user.username]["secret-key"],
                )
                if user.username in by_user
                else user
                for user in settings.users
            )
            try:
                self._apply(dataclasses.replace(settings, users=users))
            except (WorkloadError, JobStartError, ops.pebble.Error, OSError) as error:
                raise rotation.RotationError(
                    f"the registry did not take the new credentials: {str(error).splitlines()[0]}"
                ) from None

        rotation.run_action(
            event,
            lambda: rotation.rotate(self.model, changes, apply=apply),
            restarted=lambda: [service.name for service in registry.services(settings)]
            if changes
            else [],
        )

    def _rotation_labels(
        self, admin: bool, relations: Sequence[ops.Relation]
    ) -> list[tuple[str, str]]:
        """(name, secret label) of each credential a rotation covers: the writer's first."""
        labels = [(rotation.ADMIN, REGISTRY_SECRET)] if admin else []
        labels += [
            (relation.app.name, CONSUMER_SECRET.format(relation_id=relation.id))
            for relation in relations
            if relation.app is not None
        ]
        return labels


def _new_credential(username: str) -> dict[str, str]:
    return {
        "username": username,
        "password": secrets.generate_password(),
        "access-key": "mlops" + secrets.generate_password(16).replace("-", "").replace("_", ""),
        "secret-key": secrets.generate_password(40),
    }


def _location(bucket: ExternalBucket | None) -> str | None:
    return bucket.location if bucket else None


def _target(bucket: ExternalBucket | None) -> str:
    """Where a move goes, as its job records it (``to``)."""
    return bucket.location if bucket else registry.STORAGE_TARGET


def _number(name: str | None) -> int:
    return int(name[1:]) if name and VERSION_PATTERN.match(name) else 0
