"""The MLflow Tracking Server charm, substrate-neutral: what tracking-k8s and tracking share.

``TrackingServerCharm`` is the Juju side of MLflow on either substrate: config and action
parameters, the admin secret, the stores (PostgreSQL, S3), one MLflow user per ``mlops_tracking``
consumer, the approach's acknowledgement, the scrape job, alert rules and dashboard offered to
Prometheus and Grafana, the unit's certificate (``certificates``: MLflow then serves HTTPS
only and consumers get the CA), every status that does not depend on where MLflow runs, and the
actions. A substrate charm subclasses it and says only how MLflow runs there: under Pebble in
a container (tracking-k8s) or as a systemd unit on the machine (tracking), which events wake
it, and where the server is reached.
"""

from __future__ import annotations

import abc
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass

import ops

from mlops_charms import (
    approach,
    charm_tracing,
    databags,
    mlflow,
    mlflow_observability,
    mlflow_schema,
    observability,
    rotation,
    secrets,
    sidecar,
)
from mlops_charms.host_files import HostFiles
from mlops_charms.jobs import Job, SlotRunner
from mlops_charms.mlflow import MLflowAPI, ServerSettings
from mlops_charms.postgresql import PostgreSQLRequirer
from mlops_charms.rest import RESTError
from mlops_charms.s3 import S3Requirer
from mlops_charms.tls import ServerCertificate, ServerTLS, remove_server_files
from mlops_charms.tracking import TrackingProviderData, TrackingRequirerData
from mlops_charms.tracking_backup import TrackingBackups

logger = logging.getLogger(__name__)

TRACKING_ENDPOINT = "mlops-tracking"
METRICS_ENDPOINT = "metrics-endpoint"
DASHBOARD_ENDPOINT = "grafana-dashboard"
SERVER_SECRET = "mlflow-server"  # noqa: S105 - a label: admin password, Flask secret key
CONSUMER_SECRET = "mlops-tracking-{relation_id}"  # noqa: S105 - a secret label
CONSUMER_USER = "relation-{relation_id}-{app}"
USERNAME_PATTERN = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
ALIAS_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
APPROACH_SERVICE = "tracking"


@dataclass(frozen=True)
class TrackingConfig:
    """The charm's config options, validated."""

    port: int = 5000
    metrics_port: int = 9101
    workers: int = 1
    enable_job_execution: bool = False
    default_experiment: str = "Default"
    default_permission: str = "READ"
    allowed_hosts: str = ""

    def __post_init__(self):
        if not 1024 <= self.port <= 65535:
            raise ValueError("port: must be between 1024 and 65535")
        if not 1024 <= self.metrics_port <= 65535 or self.metrics_port == self.port:
            raise ValueError("metrics-port: must be between 1024 and 65535, and not port")
        if not 1 <= self.workers <= 16:
            raise ValueError("workers: must be between 1 and 16")
        if not self.default_experiment.strip():
            raise ValueError("default-experiment: must not be empty")
        if self.default_permission not in mlflow.PERMISSIONS:
            raise ValueError(f"default-permission: must be one of {', '.join(mlflow.PERMISSIONS)}")
        if any(not host or " " in host for host in self.extra_hosts):
            raise ValueError("allowed-hosts: must be comma-separated host names without spaces")

    @property
    def extra_hosts(self) -> tuple[str, ...]:
        if not self.allowed_hosts.strip():
            return ()
        return tuple(host.strip() for host in self.allowed_hosts.split(","))


@dataclass(frozen=True)
class CreateUserParams:
    """Parameters of the create-user action."""

    username: str
    permission: str = "EDIT"

    def __post_init__(self):
        if not USERNAME_PATTERN.match(self.username):
            raise ValueError("username must be 1-64 letters, digits, '.', '_', '-' or '@'")
        if self.username == mlflow.ADMIN_USERNAME or self.username.startswith("relation-"):
            raise ValueError(f"username {self.username!r} is reserved for the charm")
        if self.permission not in ("READ", "EDIT", "MANAGE", "ADMIN"):
            raise ValueError("permission must be READ, EDIT, MANAGE or ADMIN")


@dataclass(frozen=True)
class PromoteModelParams:
    """Parameters of the promote-model action."""

    model: str
    version: int
    alias: str = "champion"

    def __post_init__(self):
        if not self.model.strip():
            raise ValueError("model must not be empty")
        if self.version < 1:
            raise ValueError("version must be a positive integer")
        if not ALIAS_PATTERN.match(self.alias) or self.alias.lower() == "latest":
            raise ValueError("alias must be letters, digits, '_' or '-', and not 'latest'")
        if re.fullmatch(r"v\d+", self.alias):
            raise ValueError(f"alias {self.alias!r} is reserved for version references")


class ConsumerExperimentError(Exception):
    """A consumer asked for an experiment it may not have; the message says which."""


class TrackingServerCharm(ops.CharmBase, abc.ABC):
    """MLflow offered to the stack over ``mlops_tracking``; a subclass runs it on its substrate."""

    # A substrate's own options extend the shared ones (a subclass of ``TrackingConfig``).
    config_class: type[TrackingConfig] = TrackingConfig

    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        self.tracing = charm_tracing.trace_charm(self)
        self.database = PostgreSQLRequirer(self, "database", database_name="mlflow")
        self.s3 = S3Requirer(self, "s3-credentials", bucket_name="mlflow")
        # HTTPS once the certificates relation issued the unit's certificate; also what removes
        # the old revisions of the charm's secrets (see mlops_charms.tls).
        self.certificate = ServerCertificate(self, self._certificate_hosts)
        for event in (
            self.on[TRACKING_ENDPOINT].relation_joined,
            self.on[TRACKING_ENDPOINT].relation_changed,
            self.on[METRICS_ENDPOINT].relation_joined,
            self.on[DASHBOARD_ENDPOINT].relation_joined,
            *self.database.events,
            *self.s3.events,
            *self.certificate.events,
            *approach.relation_events(self),
        ):
            framework.observe(event, self._reconcile)
        framework.observe(self.on[TRACKING_ENDPOINT].relation_broken, self._on_consumer_gone)
        self._consumer_problems: list[str] = []
        framework.observe(self.on.collect_unit_status, self._on_collect_status)
        framework.observe(self.on.get_admin_credentials_action, self._on_get_admin_credentials)
        framework.observe(self.on.create_user_action, self._on_create_user)
        framework.observe(self.on.promote_model_action, self._on_promote_model)
        framework.observe(self.on.rotate_credentials_action, self._on_rotate_credentials)
        # create-backup, list-backups, restore; and whether a restore holds MLflow stopped.
        self.backups = TrackingBackups(self, SERVER_SECRET)

    # --- the substrate: what a subclass says ------------------------------------------------

    @property
    @abc.abstractmethod
    def _data_dir(self) -> str:
        """Where the server keeps its stores, artifacts and secret files."""

    @property
    @abc.abstractmethod
    def _internal_url(self) -> str:
        """The URL consumers in the same model (or on the same network) log to."""

    @property
    def _external_url(self) -> str | None:
        """The URL from outside (an ingress), if there is one."""
        return None

    @property
    def _public_url(self) -> str:
        return self._external_url or self._internal_url

    @property
    def _scheme(self) -> str:
        """``https`` once the unit has its certificate: MLflow then serves HTTPS only."""
        return "https" if self._server_tls() else "http"

    @abc.abstractmethod
    def _server_hosts(self) -> tuple[str, ...]:
        """The names clients reach the server by (its Host headers), besides ``allowed-hosts``."""

    @abc.abstractmethod
    def _prepare_substrate(self) -> bool:
        """Ready the substrate (connect, install, open ports); whether MLflow can be run now."""

    @abc.abstractmethod
    def _substrate_status(self) -> ops.StatusBase | None:
        """Why the substrate is not ready for MLflow, or None."""

    def _substrate_relation_statuses(self) -> list[ops.StatusBase]:
        """What the substrate's own relations (an ingress) are waiting for or lack."""
        return []

    @abc.abstractmethod
    def _run_server(self, settings: ServerSettings) -> None:
        """Write the server's files and run it with ``settings``, changing only what differs."""

    @abc.abstractmethod
    def _stop_server(self, settings: ServerSettings) -> None:
        """Stop the server: this unit must not serve."""

    @abc.abstractmethod
    def _read_file(self, path: str) -> str | None:
        """A file the workload wrote (on the storage), or None if there is none."""

    # --- goal state -------------------------------------------------------------------------

    def _config(self) -> TrackingConfig:
        return self.load_config(self.config_class)

    def _server_tls(self) -> ServerTLS | None:
        return self.certificate.server_tls()

    def _certificate_hosts(self) -> tuple[str, ...]:
        """The names the unit's certificate is for.

        The server's, ``allowed-hosts``, and ``localhost``: the unit's own checks and the
        charm's API calls reach MLflow by that name.
        """
        extra = () if self._config_problem() else self._config().extra_hosts
        return (*self._server_hosts(), *extra, "localhost")

    def _config_problem(self) -> str | None:
        return sidecar.config_problem(self, self.config_class)

    def _server_secret(self) -> dict[str, str] | None:
        return secrets.ensure_app_secret(
            self,
            SERVER_SECRET,
            lambda: {
                "admin-password": secrets.generate_password(),
                "flask-secret-key": secrets.generate_password(48),
            },
        )

    def _settings(self, config: TrackingConfig, server_secret: dict[str, str]) -> ServerSettings:
        database = self.database.connection()
        artifacts = self.s3.connection()
        return ServerSettings(
            data_dir=self._data_dir,
            port=config.port,
            metrics_port=config.metrics_port,
            workers=config.workers,
            # MLflow 3.17's job runner calls its server at a hard-coded http:// address
            # (mlflow/server/__init__.py): over HTTPS its jobs could never reach it.
            job_execution=config.enable_job_execution and self._server_tls() is None,
            default_permission=config.default_permission,
            admin_password=server_secret["admin-password"],
            flask_secret_key=server_secret["flask-secret-key"],
            upgrade_schema=self.unit.is_leader(),
            tls=self._server_tls(),
            allowed_hosts=tuple(
                f"{host}{suffix}"
                for host in (*self._server_hosts(), *config.extra_hosts)
                for suffix in ("", ":*")
            ),
            database=mlflow.PostgreSQLBackend(
                url=database.sqlalchemy_url(),
                password=database.password,
                sslmode=database.sslmode,
                ca=database.ca,
            )
            if database
            else None,
            artifacts=mlflow.S3Artifacts(
                destination=artifacts.url(),
                endpoint=artifacts.endpoint,
                region=artifacts.region,
                access_key=artifacts.access_key,
                secret_key=artifacts.secret_key,
                ca_chain=artifacts.ca_chain,
                path_style=artifacts.path_style,
            )
            if artifacts
            else None,
        )

    def _admin_api(self, config: TrackingConfig, server_secret: dict[str, str]) -> MLflowAPI:
        tls = self._server_tls()
        return MLflowAPI(
            f"{self._scheme}://localhost:{config.port}",
            mlflow.ADMIN_USERNAME,
            server_secret["admin-password"],
            ca=tls.ca if tls else None,
        )

    # --- reconcile --------------------------------------------------------------------------

    def _reconcile(self, _event: ops.EventBase) -> None:
        """Bring the workload, the ports and the relations to the goal state."""
        if self._config_problem() or not self._prepare_substrate():
            return
        self._reconcile_workload()
        self._offer_observability()
        if self.unit.is_leader():
            self._acknowledge_approach()

    def _offer_observability(self) -> None:
        """Tell Prometheus where the metrics exporter listens and Grafana what to show."""
        observability.publish(
            self,
            port=self._config().metrics_port,
            job_name=mlflow_observability.JOB_NAME,
            alert_rules=mlflow_observability.ALERT_RULES,
            dashboards={mlflow_observability.DASHBOARD_NAME: mlflow_observability.DASHBOARD},
        )

    def _reconcile_workload(self) -> None:
        """The server (on complete stores only) and its consumers."""
        config = self._config()
        server_secret = self._server_secret()
        if server_secret is None or self.database.status() or self.s3.status():
            # Keep the server on its current stores until the new ones are complete.
            return
        settings = self._settings(config, server_secret)
        if not self.unit.is_leader() and self._scale_out_problem():
            # Behind one address, this unit would serve other data: it must not serve.
            self._stop_server(settings)
            return
        if self.backups.hold_server():
            return  # a restore runs: MLflow stays stopped until the job's end wakes the charm
        if settings.tls is None:
            remove_server_files(self._storage_files(), settings.tls_files)
        self._run_server(settings)
        if self.unit.is_leader():
            self._provide_tracking(config, server_secret)

    def _acknowledge_approach(self) -> None:
        """Acknowledge the approach's revision once MLflow answers (leader).

        Tracking has nothing of its own to change per mode: the training runs that log to it
        group themselves into experiments and tag the mode and revision.
        """
        relation = self.model.get_relation(approach.APPROACH_ENDPOINT)
        in_force, _problem = approach.read(self.model)
        if relation is None or in_force is None:
            return  # not related, nothing published yet, or a bad databag (the status says)
        acknowledged = approach.acknowledged(self.model)
        applied = acknowledged.applied_revision if acknowledged else None
        if applied == in_force.revision:
            return
        server_secret = secrets.read_app_secret(self.model, SERVER_SECRET)
        if server_secret and self._admin_api(self._config(), server_secret).is_healthy():
            approach.acknowledge(self.model, APPROACH_SERVICE, in_force.revision)
        else:
            approach.acknowledge(
                self.model, APPROACH_SERVICE, applied, reason="waiting for MLflow", waiting=True
            )

    def _scale_out_problem(self) -> str | None:
        return sidecar.scale_out_problem(
            self,
            has_database=self.database.connection() is not None,
            has_object_storage=self.s3.connection() is not None,
        )

    def _provide_tracking(self, config: TrackingConfig, server_secret: dict[str, str]) -> None:
        """Give every consumer its own MLflow user and publish where and how to log."""
        relations = self.model.relations[TRACKING_ENDPOINT]
        if not relations:
            return
        api = self._admin_api(config, server_secret)
        tls = self._server_tls()
        if not api.is_healthy():
            return  # the substrate wakes the charm again once MLflow answers
        for relation in relations:
            request, problem = databags.load_remote_app_data(relation, TrackingRequirerData)
            if problem or request is None or relation.app is None:
                continue
            experiment = request.experiment or config.default_experiment
            try:
                self._provision(
                    api, relation, experiment, config.default_experiment, tls.ca if tls else None
                )
            except (RESTError, ConsumerExperimentError) as error:
                logger.warning("could not provision %s: %s", relation.app.name, error)
                self._consumer_problems.append(f"{TRACKING_ENDPOINT} {relation.app.name}: {error}")

    def _provision(
        self,
        api: MLflowAPI,
        relation: ops.Relation,
        experiment: str,
        default_experiment: str,
        ca: str | None,
    ) -> None:
        """The consumer's user, EDIT on its experiment only, and what it is told.

        ``ca``: the CA of the server's certificate, for the consumer to verify it (HTTPS).
        """
        assert relation.app is not None
        published, _problem = databags.load_app_data(relation, self.app, TrackingProviderData)
        credentials = self._consumer_credentials(relation)
        if credentials is None:
            return
        username = credentials["username"]
        if api.get_user(username) is None:
            api.create_user(username, credentials["password"])
        experiment_id = self._consumer_experiment(
            api, experiment, relation.app.name, default_experiment
        )
        api.grant_experiment_permission(experiment_id, username, "EDIT")
        previous = published.default_experiment if published else None
        if previous and previous != experiment:
            # The consumer asked for another experiment: its old grant goes.
            old = api.get_experiment(previous)
            if old is not None and api.experiment_permission(old["experiment_id"], username):
                api.revoke_experiment_permission(old["experiment_id"], username)
        databags.save_app_data(
            relation,
            self.app,
            TrackingProviderData(
                tracking_uri=self._internal_url,
                external_tracking_uri=self._external_url,
                credentials_secret_id=secrets.granted_secret_id(
                    self.model,
                    relation,
                    CONSUMER_SECRET.format(relation_id=relation.id),
                    published.credentials_secret_id if published else None,
                ),
                default_experiment=experiment,
                ca=ca,
            ),
        )

    @staticmethod
    def _consumer_experiment(
        api: MLflowAPI, name: str, consumer: str, default_experiment: str
    ) -> str:
        """The id of the experiment a consumer may log to: the shared default, or its own.

        An experiment the charm made for another consumer, or that a person made, is not
        handed over: a consumer may not claim EDIT on it by naming it.
        """
        found = api.get_experiment(name)
        if found is None:
            return api.create_experiment(name, {mlflow.CONSUMER_TAG: consumer})
        if found.get("lifecycle_stage") == "deleted":
            raise ConsumerExperimentError(
                f"experiment {name!r} is deleted: restore it in MLflow, or ask for another"
            )
        if name == default_experiment:
            return found["experiment_id"]
        tags = {tag.get("key"): tag.get("value") for tag in found.get("tags", [])}
        if tags.get(mlflow.CONSUMER_TAG) != consumer:
            raise ConsumerExperimentError(
                f"experiment {name!r} exists and is not this application's: ask for another"
            )
        return found["experiment_id"]

    def _consumer_credentials(self, relation: ops.Relation) -> dict[str, str] | None:
        assert relation.app is not None
        username = CONSUMER_USER.format(relation_id=relation.id, app=relation.app.name)
        return secrets.ensure_app_secret(
            self,
            CONSUMER_SECRET.format(relation_id=relation.id),
            lambda: {"username": username, "password": secrets.generate_password()},
        )

    def _on_consumer_gone(self, event: ops.RelationBrokenEvent) -> None:
        """Remove a departed consumer's MLflow user and secret, then reconcile the rest."""
        if self.unit.is_leader() and not self._config_problem():
            label = CONSUMER_SECRET.format(relation_id=event.relation.id)
            content = secrets.read_app_secret(self.model, label)
            server_secret = secrets.read_app_secret(self.model, SERVER_SECRET)
            if content and server_secret:
                try:
                    self._admin_api(self._config(), server_secret).delete_user(content["username"])
                except RESTError as error:
                    logger.warning("could not delete %s: %s", content["username"], error)
            secrets.remove_app_secret(self.model, label)
        self._reconcile(event)

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
        for status in self._relation_statuses():
            event.add_status(status)
        server_secret = secrets.read_app_secret(self.model, SERVER_SECRET)
        if server_secret is None:
            event.add_status(
                ops.WaitingStatus("waiting for the leader to create the admin secret")
            )
            return
        scale_out = self._scale_out_problem()
        if scale_out:
            event.add_status(ops.BlockedStatus(scale_out))
        migration = mlflow_schema.failure(
            self._read_file(mlflow_schema.failure_path(self._data_dir))
        )
        if migration:
            event.add_status(ops.BlockedStatus(migration))
        for problem in self._consumer_problems:
            event.add_status(ops.BlockedStatus(problem))
        restoring = self.backups.restoring()
        if restoring is not None:
            event.add_status(ops.MaintenanceStatus(f"restoring {restoring}"))
        if not self._admin_api(self._config(), server_secret).is_healthy():
            event.add_status(ops.WaitingStatus("waiting for MLflow to become ready"))
        event.add_status(ops.ActiveStatus(self._serving_message()))

    def _serving_message(self) -> str:
        serving = f"serving at {self._public_url}"
        if self._config().enable_job_execution and self._server_tls():
            serving += "; job execution off: MLflow's jobs cannot call it over HTTPS"
        return serving

    def _relation_statuses(self) -> list[ops.StatusBase]:
        """What each relation is waiting for or what is wrong with its remote data."""
        statuses = [
            status
            for status in (self.database.unit_status(), self.s3.unit_status())
            if status is not None
        ]
        statuses.extend(self._substrate_relation_statuses())
        certificate = self.certificate.status()
        if certificate is not None:
            statuses.append(certificate)
        for relation in self.model.relations[TRACKING_ENDPOINT]:
            _, problem = databags.load_remote_app_data(relation, TrackingRequirerData)
            if problem:
                statuses.append(ops.BlockedStatus(f"{TRACKING_ENDPOINT}: {problem}"))
        _in_force, approach_problem = approach.read(self.model)
        if approach_problem:
            statuses.append(ops.BlockedStatus(approach_problem))
        return statuses

    # --- actions ----------------------------------------------------------------------------

    def _ready_admin_api(self, event: ops.ActionEvent) -> MLflowAPI | None:
        """An admin client for a healthy server, or None after failing ``event`` saying why."""
        config_problem = self._config_problem()
        if config_problem:
            event.fail(f"cannot run while blocked: {config_problem}")
            return None
        server_secret = secrets.admin_secret_or_fail(self.model, SERVER_SECRET, event)
        if server_secret is None:
            return None
        api = self._admin_api(self._config(), server_secret)
        if not api.is_healthy():
            event.fail("the MLflow server is not ready: check `juju status`")
            return None
        return api

    def _on_get_admin_credentials(self, event: ops.ActionEvent) -> None:
        server_secret = secrets.admin_secret_or_fail(self.model, SERVER_SECRET, event)
        if server_secret is None:
            return
        url = self._internal_url if not self._config_problem() else None
        tls = self._server_tls()
        event.set_results(
            {
                "username": mlflow.ADMIN_USERNAME,
                "password": server_secret["admin-password"],
                **({"url": self._public_url} if url else {}),
                # Over HTTPS: the CA to verify the server with (MLFLOW_TRACKING_SERVER_CERT_PATH).
                **({"ca": tls.ca} if tls else {}),
            }
        )

    def _on_create_user(self, event: ops.ActionEvent) -> None:
        params = event.load_params(CreateUserParams, errors="fail")
        api = self._ready_admin_api(event)
        if api is None:
            return
        config = self._config()
        try:
            if api.get_user(params.username) is not None:
                event.fail(f"user {params.username!r} already exists")
                return
            password = secrets.generate_password()
            api.create_user(params.username, password)
        except RESTError as error:
            event.fail(str(error))
            return
        try:
            if params.permission == "ADMIN":
                api.set_admin(params.username, True)
            else:
                experiment_id = api.ensure_experiment(config.default_experiment)
                api.grant_experiment_permission(experiment_id, params.username, params.permission)
        except RESTError as error:
            # No half-made user with a password nobody knows: the action can be run again.
            try:
                api.delete_user(params.username)
            except RESTError:
                logger.warning("could not remove the half-made user %s", params.username)
            event.fail(str(error))
            return
        event.set_results(
            {
                "username": params.username,
                "password": password,
                "permission": params.permission,
                "experiment": config.default_experiment if params.permission != "ADMIN" else "",
            }
        )

    def _on_promote_model(self, event: ops.ActionEvent) -> None:
        params = event.load_params(PromoteModelParams, errors="fail")
        api = self._ready_admin_api(event)
        if api is None:
            return
        version = str(params.version)
        try:
            model_version = api.get_model_version(params.model, version)
            if model_version is None:
                event.fail(f"model {params.model!r} has no version {version}")
                return
            api.set_model_alias(params.model, params.alias, version)
        except RESTError as error:
            event.fail(str(error))
            return
        event.set_results(
            {
                "model": params.model,
                "version": version,
                "alias": params.alias,
                "run-id": model_version.get("run_id", ""),
                "source": model_version.get("source", ""),
            }
        )

    def _on_rotate_credentials(self, event: ops.ActionEvent) -> None:
        """New passwords for the admin and the consumers' MLflow users (leader).

        Each password is changed in MLflow first (its auth store, through the API), then in
        its Juju secret; consumers read the new revision on ``secret-changed``. MLflow reads
        the admin password in ``secrets.env`` only to create the admin user: the file is
        rewritten, the server is not restarted.
        """
        if not rotation.leader_or_fail(self, event):
            return
        params = event.load_params(rotation.RotateCredentialsParams, errors="fail")
        try:
            relations = rotation.consumers(self.model.relations[TRACKING_ENDPOINT], params)
        except rotation.RotationError as error:
            event.fail(str(error))
            return
        api = self._ready_admin_api(event)
        if api is None:
            return
        if self.database.status() or self.s3.status() or not self._prepare_substrate():
            event.fail("the server's stores or substrate are not ready: check `juju status`")
            return

        def rotate_all() -> list[rotation.Rotated]:
            # One credential at a time: MLflow changes one user per call.
            rotated: list[rotation.Rotated] = []
            admin_api = api
            try:
                if params.admin:
                    rotated_admin, admin_api = self._rotate_admin()
                    rotated += rotated_admin
                for relation in relations:
                    rotated += self._rotate_consumer(admin_api, relation)
            except rotation.RotationError as error:
                raise rotation.RotationError(str(error), [*rotated, *error.rotated]) from None
            return rotated

        rotation.run_action(event, rotate_all)

    def _rotate_admin(self) -> tuple[list[rotation.Rotated], MLflowAPI]:
        """A new admin password; and the admin client that uses it."""
        current = secrets.read_app_secret(self.model, SERVER_SECRET)
        if current is None:
            raise rotation.RotationError("the admin secret cannot be read now: try again")
        config = self._config()
        change = rotation.Change(
            rotation.ADMIN,
            SERVER_SECRET,
            current,
            {**current, "admin-password": secrets.generate_password()},
        )

        def apply(contents: Mapping[str, dict[str, str]]) -> None:
            content = contents[SERVER_SECRET]
            # Authenticated with the password that works now: the old one on the way forward,
            # the new one on the way back.
            in_force = change.current if content is change.new else change.new
            try:
                self._admin_api(config, in_force).update_password(
                    mlflow.ADMIN_USERNAME,
                    content["admin-password"],
                    current_password=in_force["admin-password"],
                )
            except RESTError as error:
                raise rotation.RotationError(
                    f"admin: MLflow refused the new password: {error}"
                ) from None
            try:
                # secrets.env follows; the admin user exists, so MLflow does not read it again
                # and nothing restarts.
                self._run_server(self._settings(config, content))
            except (OSError, ops.pebble.Error) as error:
                self._admin_api(config, content).update_password(
                    mlflow.ADMIN_USERNAME,
                    in_force["admin-password"],
                    current_password=content["admin-password"],
                )
                raise rotation.RotationError(f"admin: secrets.env not written: {error}") from None

        rotated = rotation.rotate(self.model, [change], apply=apply)
        return rotated, self._admin_api(config, change.new)

    def _rotate_consumer(self, api: MLflowAPI, relation: ops.Relation) -> list[rotation.Rotated]:
        """A new password for the consumer's MLflow user; nothing before it has one."""
        assert relation.app is not None
        label = CONSUMER_SECRET.format(relation_id=relation.id)
        current = secrets.read_app_secret(self.model, label)
        if current is None:
            return []  # not provisioned yet: its first password is new anyway
        name = relation.app.name

        def apply(contents: Mapping[str, dict[str, str]]) -> None:
            content = contents[label]
            try:
                api.update_password(content["username"], content["password"])
            except RESTError as error:
                raise rotation.RotationError(
                    f"{name}: MLflow refused the new password: {error}"
                ) from None

        change = rotation.Change(
            name, label, current, {**current, "password": secrets.generate_password()}
        )
        return rotation.rotate(self.model, [change], apply=apply)

    # --- backups: what the substrate runs them with (``tracking_backup``) -------------------

    @property
    @abc.abstractmethod
    def _mlops_workload(self) -> str:
        """Where the stack's workload CLI (``mlops-workload``) is, where MLflow runs."""

    @abc.abstractmethod
    def _jobs(self) -> SlotRunner:
        """The runner of the tracking jobs' slot (backups and restores)."""

    def _job_reported(self, job: Job) -> None:
        """The charm acted on ``job``'s end: the substrate may tidy what ran it."""

    @abc.abstractmethod
    def _storage_files(self) -> ops.Container | HostFiles:
        """The files of the storage, read as ``_data_dir`` paths."""

    @abc.abstractmethod
    def _run_workload(
        self, command: list[str], *, what: str, environment: dict[str, str], working_dir: str
    ) -> str:
        """Run a short command where MLflow runs, as its user; its stdout (``WorkloadError``)."""

    @abc.abstractmethod
    def _backup_substrate_unready(self) -> str | None:
        """Why a backup action cannot reach the substrate now (the failure's one line), or None."""
