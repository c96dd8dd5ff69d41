"""The Label Studio charm, substrate-neutral: what labelling-k8s and labelling share.

``LabellingServerCharm`` is the Juju side of Label Studio on either substrate: config and
action parameters, the admin secret, the database, the data registry (``mlops_dataset``),
re-label batches (``mlops_relabel``), the approach's policy, the labelling jobs, every status
that does not depend on where Label Studio runs, and the actions. A substrate charm subclasses
it and says only how Label Studio runs there: under Pebble in a container (labelling-k8s) or as
a systemd unit on the machine (labelling), which events wake it, where the server is reached,
and what runs its jobs (a ``jobs.SlotRunner``).

The labelling work itself (importing a version, exporting annotations, consistency reports,
re-labelling) is ``mlops-workload labelling`` run as a job: the hook starts it, and acts on its
end when the substrate reports it (a Pebble notice, or a systemd job's ``job-ended`` event).

Under the data-centric approach (``mlops-approach``) projects get the policy's annotators per
task, exports pass the agreement gate in their job, and projects whose answers changed are
reported on at ``update-status``; otherwise the charm follows its own config.

Related to a CA over ``certificates``, each unit serves HTTPS only once its certificate is
issued (``mlops_charms.tls``); until then it serves as it was.

On PostgreSQL (shared by every unit) only the leader migrates the database, in a hook, before
its server starts; it then records the release and database it migrated in the peers' app
data, and the other units start (without migrating) only once that mark is theirs. A failed
migration is the leader's Blocked status; the other units wait. With SQLite each unit's start
migrates its own database, as before.
"""

from __future__ import annotations

import abc
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import ops

from mlops_charms import (
    agreement,
    approach,
    backup,
    charm_tracing,
    databags,
    jobs,
    label_studio,
    labelling_observability,
    observability,
    pebble,
    rotation,
    secrets,
    sidecar,
)
from mlops_charms.dataset import VERSION_PATTERN, DatasetProviderData, DatasetRequirerData
from mlops_charms.host_files import HostFiles
from mlops_charms.jobs import Job, JobSpec, SlotRunner
from mlops_charms.label_studio import (
    Binaries,
    PostgreSQLDatabase,
    RegistryAccess,
    ServerSettings,
)
from mlops_charms.postgresql import PostgreSQLRequirer
from mlops_charms.relabel import RelabelBatch, RelabelProviderData, RelabelRequirerData
from mlops_charms.rest import RESTError
from mlops_charms.tls import ServerCertificate, ServerTLS, remove_server_files
from mlops_charms.workload_exec import WorkloadError

logger = logging.getLogger(__name__)

STORAGE = "labelling-data"
DATASET_ENDPOINT = "mlops-dataset"
RELABEL_ENDPOINT = "mlops-relabel"
PEERS = "labelling-peers"
# The peers' app data: the database the leader migrated (label_studio.database_mark), or why
# its last migration failed.
MIGRATED_KEY = "migrated"
MIGRATION_FAILED_KEY = "migration-failed"
SERVER_SECRET = "label-studio-server"  # noqa: S105 - a label: admin password, token, key
PRESETS = ("text-classification", "image-classification", "named-entities")
JOB_SLOT = "labelling"
APPROACH_SERVICE = "labelling"
WAITING_FOR_LABEL_STUDIO = "waiting for Label Studio"
# How long an action with wait=true waits for its job before returning the job's id.
ACTION_WAIT = 300.0


@dataclass(frozen=True)
class LabellingConfig:
    """The charm's config options, validated."""

    port: int = 8080
    metrics_port: int = 9103
    workers: int = 1
    overlap: int = 1
    consistency_threshold: float = 0.5
    relabel_project: str = ""

    def __post_init__(self):
        if not 1024 <= self.port <= 65535:
            raise ValueError("port: must be between 1024 and 65535")
        observability.check_metrics_port(self.metrics_port, (self.port,), "port")
        if not 1 <= self.workers <= 16:
            raise ValueError("workers: must be between 1 and 16")
        if not 1 <= self.overlap <= 10:
            raise ValueError("overlap: must be between 1 and 10")
        if not 0.0 <= self.consistency_threshold <= 1.0:
            raise ValueError("consistency-threshold: must be between 0 and 1")
        if self.relabel_project and not _is_project_title(self.relabel_project):
            raise ValueError("relabel-project: must be 1-100 characters without line breaks")


@dataclass(frozen=True)
class LabellingPolicy:
    """What labelling applies: the data-centric approach's, else the charm's own config."""

    overlap: int  # annotators per task of a project import-version feeds
    data_centric: bool = False
    agreement_threshold: float | None = None  # the export gate; None: no gate

    @property
    def relabel_overlap(self) -> int | None:
        """Annotators per task of re-label projects; None: as many as their source project."""
        return self.overlap if self.data_centric else None


def _is_project_title(title: str) -> bool:
    return 0 < len(title) <= 100 and title == title.strip() and "\n" not in title


def _check_project(project: str) -> None:
    if not _is_project_title(project):
        raise ValueError("project must be 1-100 characters, no surrounding spaces or line breaks")


@dataclass(frozen=True)
class ImportVersionParams:
    """Parameters of the import-version action."""

    version: str
    project: str
    preset: str | None = None
    labels: str = ""
    label_config: str = ""
    overlap: int | None = None
    wait: bool = True

    def __post_init__(self):
        if not VERSION_PATTERN.match(self.version):
            raise ValueError(f"version must be a version name such as v3, not {self.version!r}")
        _check_project(self.project)
        if bool(self.preset) == bool(self.label_config.strip()):
            raise ValueError("give exactly one of preset and label-config")
        if self.preset and self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(PRESETS)}")
        if self.preset and not self.label_list:
            raise ValueError("labels: give the preset's labels, comma-separated")
        if self.label_config and not re.search(r'value="\$(text|image)"', self.label_config):
            raise ValueError("label-config must read $text or $image")
        if self.overlap is not None and not 1 <= self.overlap <= 10:
            raise ValueError("overlap must be between 1 and 10")

    @property
    def label_list(self) -> list[str]:
        return [label.strip() for label in self.labels.split(",") if label.strip()]


@dataclass(frozen=True)
class ExportAnnotationsParams:
    """Parameters of the export-annotations action."""

    project: str
    message: str = ""
    force: bool = False
    wait: bool = True

    def __post_init__(self):
        _check_project(self.project)
        if "\n" in self.message or len(self.message) > 500:
            raise ValueError("message must be one line of at most 500 characters")


@dataclass(frozen=True)
class ConsistencyReportParams:
    """Parameters of the consistency-report action."""

    project: str
    threshold: float | None = None
    requeue: bool = False
    wait: bool = True

    def __post_init__(self):
        _check_project(self.project)
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ValueError("threshold must be between 0 and 1")


class RegistryAnswer(NamedTuple):
    """The data registry's access for this app, or why there is none."""

    access: RegistryAccess | None
    problem: ops.StatusBase | None


class LabellingServerCharm(ops.CharmBase, abc.ABC):
    """Label Studio fed from the stack's data registry; a subclass runs it on its substrate."""

    # A substrate's own options extend the shared ones (a subclass of ``LabellingConfig``).
    config_class: type[LabellingConfig] = LabellingConfig
    # The registry's charm on this substrate, named when an action needs it.
    registry_charm = "data-versioning-k8s"

    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        self.tracing = charm_tracing.trace_charm(self)
        self.database = PostgreSQLRequirer(self, "database", database_name="label_studio")
        # HTTPS once the certificates relation issued the unit's certificate; also what removes
        # the old revisions of the charm's secrets (see mlops_charms.tls).
        self.certificate = ServerCertificate(self, self._certificate_hosts)
        for event in (
            *self.certificate.events,
            self.on[DATASET_ENDPOINT].relation_created,
            self.on[DATASET_ENDPOINT].relation_changed,
            self.on[DATASET_ENDPOINT].relation_broken,
            self.on[RELABEL_ENDPOINT].relation_changed,
            # The leader's mark of a migrated database: the other units may start. Created
            # (a refresh from a release without the endpoint): where the leader records it.
            self.on[PEERS].relation_created,
            self.on[PEERS].relation_changed,
            *approach.relation_events(self),
            self.on.secret_changed,
            *self.database.events,
            self.on[observability.METRICS_ENDPOINT].relation_joined,
            self.on[observability.DASHBOARD_ENDPOINT].relation_joined,
        ):
            framework.observe(event, self._reconcile)
        framework.observe(self.on.collect_unit_status, self._on_collect_status)
        framework.observe(self.on.get_admin_credentials_action, self._on_get_admin_credentials)
        framework.observe(self.on.import_version_action, self._on_import_version)
        framework.observe(self.on.export_annotations_action, self._on_export_annotations)
        framework.observe(self.on.consistency_report_action, self._on_consistency_report)
        framework.observe(self.on.list_jobs_action, self._on_list_jobs)
        framework.observe(self.on.create_backup_action, self._on_create_backup)
        framework.observe(self.on.list_backups_action, self._on_list_backups)
        framework.observe(self.on.restore_action, self._on_restore)
        framework.observe(self.on.rotate_credentials_action, self._on_rotate_credentials)
        self._healthy: bool | None = None  # asked once per hook
        self._migration_error: str | None = None  # the leader's failed migration, this hook
        self._migrated: str | None = None  # what the leader migrated, this hook

    # --- the substrate: what a subclass says ------------------------------------------------

    @property
    @abc.abstractmethod
    def _data_dir(self) -> str:
        """Where Label Studio keeps its database, media, the registry workspace and secrets."""

    @property
    @abc.abstractmethod
    def _server_host(self) -> str:
        """The name or address annotators and the stack reach Label Studio at."""

    def _certificate_hosts(self) -> list[str]:
        """The names the unit's certificate is for: where it is reached, and ``localhost``.

        The charm, its jobs and the metrics exporter call Label Studio over ``localhost``.
        """
        return [self._server_host, "localhost"]

    @property
    @abc.abstractmethod
    def _binaries(self) -> Binaries:
        """Where Label Studio's and the workload CLI's programs are on this substrate."""

    @abc.abstractmethod
    def _storage_files(self) -> ops.Container | HostFiles:
        """The files of the storage, read and written as ``_data_dir`` paths."""

    @abc.abstractmethod
    def _prepare_substrate(self) -> bool:
        """Ready the substrate (connect, install); whether Label Studio can be run now."""

    @abc.abstractmethod
    def _substrate_status(self) -> ops.StatusBase | None:
        """Why the substrate is not ready for Label Studio, or None."""

    @abc.abstractmethod
    def _substrate_unready(self) -> str | None:
        """Why an action cannot reach the substrate now (the failure's one line), or None."""

    @abc.abstractmethod
    def _run_server(self, settings: ServerSettings) -> None:
        """Write the server's files and run it with ``settings``, changing only what differs."""

    @abc.abstractmethod
    def _run_command(
        self,
        command: list[str],
        *,
        what: str,
        environment: dict[str, str],
        working_dir: str,
        timeout: float = 120.0,
    ) -> None:
        """Run a short command where Label Studio runs, as its user; ``WorkloadError``: why not."""

    @abc.abstractmethod
    def _stop_server(self, settings: ServerSettings) -> None:
        """Stop the server: this unit must not serve."""

    @abc.abstractmethod
    def _jobs(self) -> SlotRunner:
        """The runner of the labelling jobs' slot."""

    def _job_reported(self, job: Job) -> None:
        """The charm acted on ``job``'s end: the substrate may tidy what ran it."""

    # --- goal state -------------------------------------------------------------------------

    def _config(self) -> LabellingConfig:
        return self.load_config(self.config_class)

    def _server_tls(self) -> ServerTLS | None:
        """The unit's issued certificate: Label Studio serves HTTPS with it; None: HTTP."""
        return self.certificate.server_tls()

    @property
    def _internal_url(self) -> str:
        """The URL annotators and the stack reach Label Studio at."""
        scheme = "https" if self._server_tls() else "http"
        return f"{scheme}://{self._server_host}:{self._config().port}"

    def _config_problem(self) -> str | None:
        return sidecar.config_problem(self, self.config_class)

    def _agreement(self) -> agreement.AgreementRecord:
        return agreement.AgreementRecord(self._storage_files(), f"{self._data_dir}/agreement.json")

    def _is_healthy(self, settings: ServerSettings) -> bool:
        if self._healthy is None:
            self._healthy = label_studio.is_healthy(settings)
        return self._healthy

    def _policy(self) -> LabellingPolicy:
        """The data-centric approach's overlap and gate, else the config's overlap, no gate.

        Model-centric labelling is the charm's own: single pass by default, no gate. A bad
        approach databag is a status; labelling then follows its config as without it.
        """
        overlap = self._config().overlap
        in_force, _problem = approach.read(self.model)
        if in_force is None or not in_force.data_centric:
            return LabellingPolicy(overlap)
        return LabellingPolicy(
            overlap=in_force.policy.annotator_overlap or overlap,
            data_centric=True,
            agreement_threshold=in_force.policy.agreement_threshold,
        )

    def _server_secret(self) -> dict[str, str] | None:
        return secrets.ensure_app_secret(
            self,
            SERVER_SECRET,
            lambda: {
                "admin-password": secrets.generate_password(),
                "admin-token": secrets.generate_password(40),
                "secret-key": secrets.generate_password(50),
            },
        )

    def _settings(self, config: LabellingConfig, server_secret: dict[str, str]) -> ServerSettings:
        connection = self.database.connection()
        return ServerSettings(
            data_dir=self._data_dir,
            port=config.port,
            metrics_port=config.metrics_port,
            processes=config.workers,
            admin_password=server_secret["admin-password"],
            admin_token=server_secret["admin-token"],
            secret_key=server_secret["secret-key"],
            binaries=self._binaries,
            tls=self._server_tls(),
            # A shared database is the leader's to migrate.
            migrates=connection is None or self.unit.is_leader(),
            database=PostgreSQLDatabase(
                host=connection.host,
                port=connection.port,
                name=connection.database,
                user=connection.username,
                password=connection.password,
                sslmode=connection.sslmode,
                ca=connection.ca,
            )
            if connection
            else None,
        )

    def _registry(self) -> RegistryAnswer:
        """The registry's write access from ``mlops-dataset``, or the status saying why not."""
        relation = self.model.get_relation(DATASET_ENDPOINT)
        if relation is None:
            return RegistryAnswer(None, None)
        data, problem = databags.load_remote_app_data(relation, DatasetProviderData)
        if problem:
            return RegistryAnswer(None, ops.BlockedStatus(f"{DATASET_ENDPOINT}: {problem}"))
        if data is None or not data.registry_url or not data.credentials_secret_id:
            return RegistryAnswer(None, ops.WaitingStatus("waiting for the data registry"))
        if data.access != "write":
            # Asked for (see _request_write_access); the registry answers on its next hook.
            return RegistryAnswer(
                None, ops.WaitingStatus(f"{DATASET_ENDPOINT}: waiting for write access")
            )
        try:
            content = self.model.get_secret(id=data.credentials_secret_id).get_content(
                refresh=True
            )
        except (ops.SecretNotFoundError, ops.ModelError):
            return RegistryAnswer(
                None, ops.BlockedStatus(f"{DATASET_ENDPOINT}: credentials secret not readable")
            )
        if not content.get("username") or not content.get("password"):
            return RegistryAnswer(
                None, ops.BlockedStatus(f"{DATASET_ENDPOINT}: credentials lack a git user")
            )
        return RegistryAnswer(
            RegistryAccess(
                git_url=data.registry_url,
                username=content["username"],
                password=content["password"],
                dvc_endpoint=data.remote_endpoint,
                s3_access_key=content.get("access-key", ""),
                s3_secret_key=content.get("secret-key", ""),
                ca=data.ca,
            ),
            None,
        )

    # --- reconcile --------------------------------------------------------------------------

    def _reconcile(self, event: ops.EventBase) -> None:
        """Bring the workload, the ports and the relations to the goal state."""
        if self.unit.is_leader():
            self._request_write_access()
        settings = self._reconcile_workload()
        if not self.unit.is_leader():
            return
        self._acknowledge_approach(settings)
        if settings is None:
            return
        runner = self._jobs()
        self._queue_relabel_batches(self._config(), settings, runner)
        if isinstance(event, ops.UpdateStatusEvent):
            self._report_changed_agreement(settings, runner)

    def _reconcile_workload(self) -> ServerSettings | None:
        """Push the files and the layer, act on ended jobs; the settings of the server running.

        None: it does not run here yet, or must not (a status says why).
        """
        if self._config_problem() or not self._prepare_substrate():
            return None
        config = self._config()
        self.unit.set_ports(config.port, config.metrics_port)
        observability.publish(
            self,
            port=config.metrics_port,
            job_name=labelling_observability.JOB_NAME,
            alert_rules=labelling_observability.ALERT_RULES,
            dashboards=labelling_observability.DASHBOARDS,
        )
        server_secret = self._server_secret()
        if server_secret is None or self.database.status():
            # Keep the server on its current database until the new one is complete.
            return None
        settings = self._settings(config, server_secret)
        if not self.unit.is_leader() and self._scale_out_problem():
            # Behind one address, this unit would serve another database: it must not.
            self._stop_server(settings)
            return None
        if backup.restoring(self._jobs()) is not None:
            return None  # the server stays stopped: the restore's end wakes the charm again
        if not self._database_migrated(settings):
            return None
        if settings.tls is None:
            remove_server_files(self._storage_files(), settings.tls_files)
        self._run_server(settings)
        self._record_gate(settings)
        runner = self._jobs()
        for job in runner.unreported():
            if job.kind == "relabel" and not self.unit.is_leader():
                continue  # the leader acknowledges batches (after a change of leader too)
            self._act_on(job)
            self._mark_reported(runner, job)
        return settings

    # --- migrations: the leader's, on a shared database --------------------------------------

    def _peer_app_data(self) -> ops.RelationDataContent | None:
        relation = self.model.get_relation(PEERS)
        return relation.data[self.app] if relation is not None else None

    def _database_migrated(self, settings: ServerSettings) -> bool:
        """Whether this unit may start on its database: migrated to this release.

        SQLite: the server's own start migrates it. PostgreSQL: the leader migrates it here
        (once per release and database) and records it; another unit waits for that mark and
        stops meanwhile (it must not serve a schema its code does not know).
        """
        mark = label_studio.database_mark(settings)
        if mark is None:
            return True
        shared = self._peer_app_data()
        if shared is not None and shared.get(MIGRATED_KEY) == mark:
            return True
        if not self.unit.is_leader():
            self._stop_server(settings)
            return False
        try:
            self._run_command(
                label_studio.migrate_command(settings),
                what=f"migrating the database to Label Studio {label_studio.VERSION}",
                environment=label_studio.migrate_environment(settings),
                working_dir=settings.binaries.app_dir,
                timeout=label_studio.MIGRATE_TIMEOUT,
            )
        except (WorkloadError, ops.pebble.Error, OSError) as error:
            # The server is not (re)started on a schema this release may not serve; the
            # next hook tries again (the database may have been unreachable).
            logger.error("the database migration failed: %s", error)
            reason = str(error)[:200]
            if shared is not None:
                shared[MIGRATION_FAILED_KEY] = f"{mark}: {reason}"
            self._migration_error = reason
            return False
        if shared is not None:
            shared[MIGRATED_KEY] = mark
            shared.pop(MIGRATION_FAILED_KEY, None)
        self._migrated = mark
        return True

    def _migration_status(self, settings: ServerSettings) -> ops.StatusBase | None:
        """The leader's failed migration, or a unit waiting for the leader's; None: migrated."""
        mark = label_studio.database_mark(settings)
        if mark is None:
            return None
        shared = self._peer_app_data()
        if mark in (self._migrated, shared.get(MIGRATED_KEY) if shared is not None else None):
            return None
        failed = self._migration_error
        if failed is None and shared is not None:
            recorded = shared.get(MIGRATION_FAILED_KEY, "")
            if recorded.startswith(f"{mark}: "):
                failed = recorded.removeprefix(f"{mark}: ")
        if failed is not None and self.unit.is_leader():
            return ops.BlockedStatus(
                f"{failed}; the database keeps its previous schema (the failed step was rolled"
                " back): fix it and run any hook, or go back to the previous revision"
            )
        if self.unit.is_leader():
            return ops.MaintenanceStatus(
                f"migrating the database to Label Studio {label_studio.VERSION}"
            )
        version = label_studio.VERSION
        return ops.WaitingStatus(
            f"waiting for the leader to migrate the database to Label Studio {version}"
        )

    def _record_gate(self, settings: ServerSettings) -> None:
        """Leave the export gate where the metrics exporter reads it (a file, no restart)."""
        threshold = self._policy().agreement_threshold
        pebble.push_if_changed(
            self._storage_files(),
            settings.agreement_gate_path,
            "" if threshold is None else str(threshold),
            permissions=0o644,
        )

    def _mark_reported(self, runner: SlotRunner, job: Job) -> None:
        runner.mark_reported(job)
        self._job_reported(job)

    def _scale_out_problem(self) -> str | None:
        return sidecar.scale_out_problem(self, has_database=self.database.connection() is not None)

    def _request_write_access(self) -> None:
        for relation in self.model.relations[DATASET_ENDPOINT]:
            databags.save_app_data(relation, self.app, DatasetRequirerData(access="write"))

    def _act_on(self, job: Job) -> None:
        """Act once on an ended job: keep its agreement; a relabel batch is acknowledged."""
        if job.state == "failed":
            logger.warning("job %s (%s) failed: %s", job.id, job.kind, job.error)
        self._agreement().keep(job)
        if job.kind == "relabel":
            self._acknowledge_batch(job.params.get("batch", ""), queued=job.state == "succeeded")

    def _acknowledge_batch(self, batch_id: str, *, queued: bool) -> None:
        """A relabel batch's job ended (or could not start): queued, or failed for good."""
        relation = self.model.get_relation(RELABEL_ENDPOINT)
        if relation is None:
            return
        own = self._relabel_acknowledgement(relation)
        queued_ids, failed = list(own.queued or []), list(own.failed or [])
        if queued:
            queued_ids.append(batch_id)
        else:
            failed.append(batch_id)  # reported once, never retried
        databags.save_app_data(
            relation,
            self.app,
            RelabelRequirerData(queued=queued_ids or None, failed=failed or None),
        )

    def _relabel_acknowledgement(self, relation: ops.Relation) -> RelabelRequirerData:
        own, _problem = databags.load_app_data(relation, self.app, RelabelRequirerData)
        return own or RelabelRequirerData()

    def _queue_relabel_batches(
        self, config: LabellingConfig, settings: ServerSettings, runner: SlotRunner
    ) -> None:
        """Queue the next new ``mlops-relabel`` batch into its project's re-label sibling.

        One batch per job, one job at a time: the next one starts when this one's end is
        reported. The acknowledgement keeps only batches the provider still offers.
        """
        relation = self.model.get_relation(RELABEL_ENDPOINT)
        if relation is None:
            return
        data, problem = databags.load_remote_app_data(relation, RelabelProviderData)
        if problem or data is None:
            return
        offered = {b.batch_id for b in data.batches or [] if b.batch_id}
        own = self._relabel_acknowledgement(relation)
        handled = set(own.queued or []) | set(own.failed or [])
        databags.save_app_data(
            relation,
            self.app,
            RelabelRequirerData(
                queued=[b for b in own.queued or [] if b in offered] or None,
                failed=[b for b in own.failed or [] if b in offered] or None,
            ),
        )
        waiting = [
            b
            for b in data.batches or []
            if _batch_is_complete(b)
            and b.batch_id not in handled
            and (b.project or config.relabel_project)
        ]
        if not waiting or runner.current() is not None:
            return
        if not self._is_healthy(settings):
            return  # a job now could not reach it and would fail the batch for good
        batch = waiting[0]
        overlap = self._policy().relabel_overlap
        spec = self._labelling_job(
            settings,
            None,
            "relabel",
            "--project",
            batch.project or config.relabel_project,
            "--items",
            json.dumps(batch.items),
            "--reason",
            _relabel_reason(batch),
            "--batch",
            str(batch.batch_id),
            *(("--overlap", str(overlap)) if overlap else ()),
            params={"batch": str(batch.batch_id)},
        )
        try:
            runner.start(spec)
        except jobs.JobBusyError:
            return  # the next hook queues it
        except (jobs.JobStartError, ops.pebble.Error) as error:
            # Recorded as a failed job (list-jobs says why); the batch is not retried forever.
            logger.warning("cannot start the relabel job of batch %s: %s", batch.batch_id, error)
            self._acknowledge_batch(str(batch.batch_id), queued=False)

    # --- the approach -----------------------------------------------------------------------

    def _acknowledge_approach(self, settings: ServerSettings | None) -> None:
        """Acknowledge (leader) the approach revision in force, or say why it is not applied.

        Labelling applies a policy when it runs a job (imports, exports, re-label batches),
        so a revision is applied once Label Studio serves; until then the previous one stays
        acknowledged, with the reason.
        """
        relation = self.model.get_relation(approach.APPROACH_ENDPOINT)
        if relation is None:
            return
        in_force, problem = approach.read(self.model)
        acknowledged = approach.acknowledged(self.model)
        applied = acknowledged.applied_revision if acknowledged else None
        reason = problem
        if in_force is not None:
            config_problem = self._config_problem()
            if config_problem:
                reason = config_problem
            elif settings is None or not self._is_healthy(settings):
                reason = WAITING_FOR_LABEL_STUDIO
            else:
                applied = in_force.revision
        approach.acknowledge(
            self.model,
            APPROACH_SERVICE,
            applied,
            reason=reason,
            waiting=reason == WAITING_FOR_LABEL_STUDIO,
        )

    def _report_changed_agreement(self, settings: ServerSettings, runner: SlotRunner) -> None:
        """Data-centric: report on the first imported project whose answers changed.

        One request to Label Studio (the projects' answer counts); a report job only when no
        labelling job runs. Its end is kept as the project's measure (``_act_on``).
        """
        if not self._policy().data_centric or runner.current() is not None:
            return
        if not self._is_healthy(settings):
            return
        try:
            projects = label_studio.project_counts(settings)
        except RESTError as error:
            logger.warning("cannot read the projects' answer counts: %s", error)
            return
        record = self._agreement()
        if len(projects) < label_studio.PROJECTS_LISTED:  # every project listed
            record.forget_all_but({p.title for p in projects})
        changed = agreement.next_to_report(projects, record.load())
        if changed is None:
            return
        spec = self._labelling_job(
            settings,
            None,
            "consistency-report",
            "--project",
            changed.title,
            "--threshold",
            str(self._config().consistency_threshold),
            params=agreement.report_params(changed),
        )
        try:
            runner.start(spec)
        except (jobs.JobBusyError, jobs.JobStartError, ops.pebble.Error) as error:
            logger.warning("cannot start the consistency report of %s: %s", changed.title, error)

    # --- the workload's commands ------------------------------------------------------------

    def _labelling_job(
        self,
        settings: ServerSettings,
        registry: RegistryAccess | None,
        command: str,
        *args: str,
        params: dict[str, str],
    ) -> JobSpec:
        """A job running ``mlops-workload labelling <command>`` beside Label Studio.

        The registry's CA (HTTPS), when it has one, is written where the job's variables say.
        """
        if registry is not None:
            for path, pem in label_studio.registry_ca(settings, registry).paths().items():
                self._storage_files().push(path, pem, make_dirs=True, permissions=0o644)
        return JobSpec(
            kind=command,
            command=label_studio.labelling_command(settings, command, *args),
            params=params,
            environment=label_studio.workload_environment(settings, registry),
            working_dir=settings.data_dir,
        )

    # --- status -----------------------------------------------------------------------------

    def _on_collect_status(self, event: ops.CollectStatusEvent) -> None:
        config_problem = self._config_problem()
        if config_problem:
            event.add_status(ops.BlockedStatus(config_problem))
            return
        substrate = self._substrate_status()
        if substrate is not None:
            event.add_status(substrate)
            return
        database = self.database.unit_status()
        if database:
            event.add_status(database)
        certificate = self.certificate.status()
        if certificate:
            event.add_status(certificate)
        registry = self._registry()
        if registry.problem:
            event.add_status(registry.problem)
        relabel = self._relabel_status()
        if relabel:
            event.add_status(relabel)
        _in_force, approach_problem = approach.read(self.model)
        if approach_problem:
            event.add_status(ops.BlockedStatus(approach_problem))
        server_secret = secrets.read_app_secret(self.model, SERVER_SECRET)
        if server_secret is None:
            event.add_status(
                ops.WaitingStatus("waiting for the leader to create the admin secret")
            )
            return
        scale_out = self._scale_out_problem()
        if scale_out:
            event.add_status(ops.BlockedStatus(scale_out))
        self._add_server_status(event, server_secret)
        event.add_status(ops.ActiveStatus(self._active_message(registry)))

    def _add_server_status(
        self, event: ops.CollectStatusEvent, server_secret: dict[str, str]
    ) -> None:
        """A restore in progress (Label Studio stopped), or Label Studio not answering yet."""
        restoring = self._restoring()
        if restoring is not None:
            event.add_status(ops.MaintenanceStatus(f"restoring {restoring}"))
            return
        settings = self._settings(self._config(), server_secret)
        migration = self._migration_status(settings)
        if migration is not None:
            event.add_status(migration)
            return
        if not self._is_healthy(settings):
            event.add_status(ops.WaitingStatus("waiting for Label Studio to become ready"))

    def _active_message(self, registry: RegistryAnswer) -> str:
        clauses = [f"serving at {self._internal_url}"]
        if not registry.access:
            clauses.append("no data registry related")
        threshold = self._policy().agreement_threshold
        if threshold is not None:
            below_gate = agreement.gate_clause(self._agreement().load(), threshold)
            if below_gate:
                clauses.append(below_gate)
        return "; ".join(clauses)

    def _relabel_status(self) -> ops.StatusBase | None:
        relation = self.model.get_relation(RELABEL_ENDPOINT)
        if relation is None:
            return None
        data, problem = databags.load_remote_app_data(relation, RelabelProviderData)
        if problem:
            return ops.BlockedStatus(f"{RELABEL_ENDPOINT}: {problem}")
        batches = (data.batches if data else None) or []
        incomplete = [b for b in batches if not _batch_is_complete(b)]
        if incomplete:
            return ops.BlockedStatus(f"{RELABEL_ENDPOINT}: a batch lacks batch_id or items")
        if any(not b.project for b in batches) and not self._config().relabel_project:
            return ops.BlockedStatus(
                f"{RELABEL_ENDPOINT}: a batch names no project: set relabel-project"
            )
        if not self.unit.is_leader():
            return None  # only the leader queues batches and may read what it acknowledged
        own = self._relabel_acknowledgement(relation)
        waiting = {b.batch_id for b in batches} - set(own.queued or []) - set(own.failed or [])
        if waiting:
            return ops.WaitingStatus(f"{RELABEL_ENDPOINT}: {len(waiting)} batches to queue")
        if own.failed:
            return ops.BlockedStatus(
                f"{RELABEL_ENDPOINT}: batches could not be queued: {', '.join(own.failed)}"
                " (list-jobs says why)"
            )
        return None

    # --- actions ----------------------------------------------------------------------------

    def _ready_settings(self, event: ops.ActionEvent) -> ServerSettings | None:
        """Settings of a healthy server, or None after failing ``event`` saying why."""
        config_problem = self._config_problem()
        if config_problem:
            event.fail(f"cannot run while blocked: {config_problem}")
            return None
        unready = self._substrate_unready()
        if unready:
            event.fail(unready)
            return None
        server_secret = secrets.admin_secret_or_fail(self.model, SERVER_SECRET, event)
        if server_secret is None:
            return None
        settings = self._settings(self._config(), server_secret)
        if not self._is_healthy(settings):
            event.fail("Label Studio is not ready: check `juju status`")
            return None
        return settings

    def _ready_registry(self, event: ops.ActionEvent) -> RegistryAccess | None:
        registry = self._registry()
        if registry.access is None:
            if registry.problem is None:
                event.fail(f"no data registry: relate {DATASET_ENDPOINT} to {self.registry_charm}")
            else:
                event.fail(f"the data registry is not usable: {registry.problem.message}")
        return registry.access

    def _on_get_admin_credentials(self, event: ops.ActionEvent) -> None:
        server_secret = secrets.admin_secret_or_fail(self.model, SERVER_SECRET, event)
        if server_secret is None:
            return
        results = {
            "username": label_studio.ADMIN_USERNAME,
            "password": server_secret["admin-password"],
            "api-token": server_secret["admin-token"],
        }
        if not self._config_problem():
            results["url"] = self._internal_url
        event.set_results(results)

    def _run_action_job(self, event: ops.ActionEvent, spec: JobSpec, *, wait: bool) -> None:
        """Start the action's job; report its result when it ends within the wait."""
        job = jobs.start_for_action(event, self._jobs(), spec, wait=wait, timeout=ACTION_WAIT)
        if job is None or not job.ended:
            return
        self._agreement().keep(job)
        self._mark_reported(self._jobs(), job)  # reported here, to the action
        if job.state == "failed":
            event.fail(f"{job.kind} failed: {job.error}")
            return
        event.set_results({"job": job.id, **jobs.action_results(job.result or {})})

    def _on_import_version(self, event: ops.ActionEvent) -> None:
        params = event.load_params(ImportVersionParams, errors="fail")
        settings = self._ready_settings(event)
        registry = self._ready_registry(event) if settings else None
        if settings is None or registry is None:
            return
        config_args = (
            ("--preset", str(params.preset), "--labels", ",".join(params.label_list))
            if params.preset
            else ("--label-config", params.label_config)
        )
        overlap = params.overlap or self._policy().overlap
        spec = self._labelling_job(
            settings,
            registry,
            "import-version",
            "--project",
            params.project,
            "--version",
            params.version,
            *config_args,
            "--overlap",
            str(overlap),
            params={"project": params.project, "version": params.version},
        )
        self._run_action_job(event, spec, wait=params.wait)

    def _on_export_annotations(self, event: ops.ActionEvent) -> None:
        params = event.load_params(ExportAnnotationsParams, errors="fail")
        settings = self._ready_settings(event)
        registry = self._ready_registry(event) if settings else None
        if settings is None or registry is None:
            return
        args = ["--project", params.project]
        if params.message:
            args += ["--message", params.message]
        shown = {"project": params.project}
        # The gate runs in the job, on the project's answers: not in a hook.
        threshold = self._policy().agreement_threshold
        if threshold is not None:
            args += ["--agreement-threshold", str(threshold)]
            shown["agreement-threshold"] = str(threshold)
            if params.force:
                args.append("--force")
                shown["force"] = "true"
        spec = self._labelling_job(settings, registry, "export-annotations", *args, params=shown)
        self._run_action_job(event, spec, wait=params.wait)

    def _on_consistency_report(self, event: ops.ActionEvent) -> None:
        params = event.load_params(ConsistencyReportParams, errors="fail")
        settings = self._ready_settings(event)
        if settings is None:
            return
        threshold = (
            params.threshold
            if params.threshold is not None
            else self._config().consistency_threshold
        )
        args = ["--project", params.project, "--threshold", str(threshold)]
        if params.requeue:
            args.append("--requeue")
            overlap = self._policy().relabel_overlap
            if overlap:
                args += ["--overlap", str(overlap)]
        spec = self._labelling_job(
            settings, None, "consistency-report", *args, params={"project": params.project}
        )
        self._run_action_job(event, spec, wait=params.wait)

    # --- backups: the database, the media --------------------------------------------------

    def _restoring(self) -> str | None:
        """The backup a running job restores now, or None (also when the jobs are unreadable)."""
        if self._substrate_unready():
            return None
        try:
            return backup.restoring(self._jobs())
        except (ops.pebble.Error, ops.ModelError, OSError):
            return None

    def _backup_settings(self, event: ops.ActionEvent) -> ServerSettings | None:
        """Settings for a backup action (the leader's; Label Studio need not be healthy)."""
        if backup.refused_here(
            event,
            config_problem=self._config_problem(),
            unready=self._substrate_unready(),
            leader=self.unit.is_leader(),
        ):
            return None
        server_secret = secrets.admin_secret_or_fail(self.model, SERVER_SECRET, event)
        if server_secret is None:
            return None
        return self._settings(self._config(), server_secret)

    def _listed_backups(self, settings: ServerSettings) -> dict:
        """The backups on the storage (their manifests: a few file reads)."""
        plan = label_studio.backup_plan(settings)
        return backup.list_on_storage(self._storage_files(), plan.destination)

    def _on_create_backup(self, event: ops.ActionEvent) -> None:
        params = event.load_params(backup.CreateBackupParams, errors="fail")
        settings = self._backup_settings(event)
        if settings is None:
            return
        spec = backup.create_job(
            settings.binaries.mlops_workload,
            label_studio.backup_plan(settings),
            app=self.app.name,
            unit=self.unit.name,
            environment={"HOME": settings.data_dir},
        )
        runner = self._jobs()
        backup.create_for_action(
            event,
            runner,
            spec,
            wait=params.wait,
            timeout=ACTION_WAIT,
            # Reported here, to the action.
            act_on_ended=lambda job: self._mark_reported(runner, job),
        )

    def _on_list_backups(self, event: ops.ActionEvent) -> None:
        settings = self._backup_settings(event)
        if settings is None:
            return
        event.set_results(backup.listed_results(self._listed_backups(settings)))

    def _on_restore(self, event: ops.ActionEvent) -> None:
        """Stop Label Studio, restore in a job; the job's end (a reconcile) starts it again."""
        params = event.load_params(backup.RestoreParams, errors="fail")
        settings = self._backup_settings(event)
        if settings is None:
            return
        plan = label_studio.backup_plan(settings)
        backup.restore_for_action(
            event,
            self._jobs(),
            backup_id=params.backup_id,
            destination=plan.destination,
            listed=lambda: self._listed_backups(settings),
            stop_servers=lambda: self._stop_server(settings),
            spec=backup.restore_job(
                settings.binaries.mlops_workload,
                plan,
                params.backup_id,
                environment=label_studio.restore_environment(settings),
                after=label_studio.restore_steps(settings),
            ),
            wait=params.wait,
            timeout=ACTION_WAIT,
            serve_again=self._reconcile_workload,
        )

    def _on_list_jobs(self, event: ops.ActionEvent) -> None:
        unready = self._substrate_unready()
        if unready:
            event.fail(unready)
            return
        jobs.list_for_action(event, self._jobs())
        measures = self._agreement().load()
        if measures:
            event.set_results({"agreement": json.dumps(agreement.shown(measures))})

    def _on_rotate_credentials(self, event: ops.ActionEvent) -> None:
        """A new admin password and API token (leader); labelling grants no consumer any.

        Label Studio's database gets them first (a short command in its Django project; the
        server keeps running), then ``secrets.env`` (read only by ``label-studio init`` to
        create the admin: no restart), then the secret's new revision.
        """
        if not rotation.leader_or_fail(self, event):
            return
        params = event.load_params(rotation.RotateCredentialsParams, errors="fail")
        current = self._rotatable_admin_secret(event, params)
        if current is None:
            return
        new = {
            **current,
            "admin-password": secrets.generate_password(),
            "admin-token": secrets.generate_password(40),
        }
        changes = [rotation.Change(rotation.ADMIN, SERVER_SECRET, current, new)]
        config = self._config()

        def set_admin(content: dict[str, str]) -> ServerSettings:
            rotated = self._settings(config, content)
            self._run_command(
                label_studio.set_admin_credentials_command(rotated),
                what="setting the admin's credentials",
                environment=label_studio.set_admin_credentials_environment(rotated),
                working_dir=rotated.binaries.app_dir,
            )
            return rotated

        def apply(contents: Mapping[str, dict[str, str]]) -> None:
            content = contents[SERVER_SECRET]
            try:
                rotated = set_admin(content)
            except (WorkloadError, ops.pebble.Error, OSError) as error:
                raise rotation.RotationError(
                    f"admin: Label Studio did not take the new credentials: {error}"
                ) from None
            try:
                self._run_server(rotated)  # secrets.env follows, no restart
            except (ops.pebble.Error, OSError) as error:
                set_admin(current if content is new else new)  # back as it was
                raise rotation.RotationError(f"admin: secrets.env not written: {error}") from None

        if not params.admin:
            changes = []  # nothing but the admin's to rotate

        rotation.run_action(event, lambda: rotation.rotate(self.model, changes, apply=apply))

    def _rotatable_admin_secret(
        self, event: ops.ActionEvent, params: rotation.RotateCredentialsParams
    ) -> dict[str, str] | None:
        """The admin secret, if Label Studio can take new credentials now; else fail ``event``."""
        try:
            rotation.consumers((), params)  # no consumer holds Label Studio credentials
        except rotation.RotationError as error:
            event.fail(str(error))
            return None
        if self._ready_settings(event) is None:
            return None
        if not self._prepare_substrate():
            event.fail("Label Studio's substrate is not ready: check `juju status`")
            return None
        job = self._jobs().current()
        if job is not None:
            event.fail(f"job {job.id} ({job.kind}) uses the admin token: rotate once it ended")
            return None
        current = secrets.read_app_secret(self.model, SERVER_SECRET)
        if current is None:
            event.fail("the admin secret cannot be read now: try again")
        return current


def _batch_is_complete(batch: RelabelBatch) -> bool:
    return bool(batch.batch_id and batch.items)


def _relabel_reason(batch: RelabelBatch) -> str:
    reason = batch.reason or "sent back by error analysis"
    return f"{reason} (run {batch.run_id})" if batch.run_id else reason
