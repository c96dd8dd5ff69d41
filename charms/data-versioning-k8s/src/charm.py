#!/usr/bin/env python3
"""Juju glue for the DVC data registry: observe, reconcile, collect status, actions."""

from __future__ import annotations

import json
import logging
import posixpath
import re
from dataclasses import dataclass
from typing import Any

import ops
import pydantic

import registry
from mlops_charms import databags, pebble, secrets, sidecar
from mlops_charms.dataset import VERSION_PATTERN, DatasetProviderData, DatasetRequirerData
from mlops_charms.s3 import S3Requirer
from registry import Credential, ExternalRemote, RegistrySettings

logger = logging.getLogger(__name__)

CONTAINER = "registry"
STORAGE = "registry-data"
PEERS = "registry-peers"
DATASET_ENDPOINT = "mlops-dataset"
SERVICE_USER = "_daemon_"
REGISTRY_SECRET = "registry-writer"  # noqa: S105 - a label: the charm's own registry user
CONSUMER_SECRET = "mlops-dataset-{relation_id}"  # noqa: S105 - a secret label
REGISTRY_USER = "registry"
CONSUMER_USER = "relation-{relation_id}"
BUCKET_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
HOST_PATTERN = re.compile(r"^[A-Za-z0-9.-]{1,253}$")
APPROACHES = ("", "model-centric", "data-centric")
# Peer application data: what the leader knows of the versions.
LATEST_KEY = "latest-version"
PINNED_KEY = "pinned-version"
INVALID_KEY = "invalid-versions"
LISTED_KEY = "versions-listed"  # set once the registry's existing tags were read
# A version cut from a big dataset takes minutes; the hook waits for it (see README).
DATASET_TIMEOUT = 1800.0
BOOTSTRAP_TIMEOUT = 300.0


@dataclass(frozen=True)
class RegistryConfig:
    """The charm's config options, validated."""

    bucket: str = "dvc"
    public_host: str = ""
    approach: str = ""
    git_port: int = 8080
    s3_port: int = 9000

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
        if self.public_host and not HOST_PATTERN.match(self.public_host):
            raise ValueError("public-host: must be a host name")
        if self.approach not in APPROACHES:
            raise ValueError("approach: must be model-centric, data-centric or empty")


def _check_version(value: str, name: str) -> None:
    if not VERSION_PATTERN.match(value):
        raise ValueError(f"{name} must be a version name such as v3, not {value!r}")


@dataclass(frozen=True)
class CreateVersionParams:
    """Parameters of the create-version action."""

    source: str
    data_dir: str  # the registry's storage in the container, from the charm, not a parameter
    source_kind: str = "upload"
    message: str = ""

    def __post_init__(self):
        if not (self.source.startswith("/") or self.source.startswith("s3://")):
            raise ValueError("source must be an absolute path or an s3://bucket/prefix URL")
        inside = posixpath.normpath(self.source).startswith(self.data_dir.rstrip("/") + "/")
        if self.source.startswith("/") and not inside:
            raise ValueError(f"source must be under {self.data_dir}/ in the registry container")
        if self.source_kind not in ("upload", "labelling-export", "augmentation"):
            raise ValueError("source-kind must be upload, labelling-export or augmentation")
        if "\n" in self.message:
            raise ValueError("message must be one line")


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

    def __post_init__(self):
        _check_version(self.to, "to")
        if "\n" in self.message:
            raise ValueError("message must be one line")


class WorkloadError(Exception):
    """A command in the registry container failed; the message is one line."""


def _version_number(name: str | None) -> int:
    return int(name[1:]) if name and VERSION_PATTERN.match(name) else 0


class DataVersioningCharm(ops.CharmBase):
    """Runs the DVC data registry under Pebble and offers it over ``mlops_dataset``."""

    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        self.container = self.unit.get_container(CONTAINER)
        self.s3 = S3Requirer(self, "s3-credentials", bucket_name=self._requested_bucket())
        self._problem: str | None = None
        for event in (
            *sidecar.workload_events(self, CONTAINER, STORAGE),
            self.on[DATASET_ENDPOINT].relation_joined,
            self.on[DATASET_ENDPOINT].relation_changed,
            self.on[PEERS].relation_changed,
            *self.s3.events,
        ):
            framework.observe(event, self._reconcile)
        framework.observe(self.on[CONTAINER].pebble_custom_notice, self._on_custom_notice)
        framework.observe(self.on[DATASET_ENDPOINT].relation_broken, self._on_consumer_gone)
        framework.observe(self.on.collect_unit_status, self._on_collect_status)
        framework.observe(self.on.create_version_action, self._on_create_version)
        framework.observe(self.on.list_versions_action, self._on_list_versions)
        framework.observe(self.on.diff_versions_action, self._on_diff_versions)
        framework.observe(self.on.pin_version_action, self._on_pin_version)
        framework.observe(self.on.rollback_action, self._on_rollback)

    # --- goal state -------------------------------------------------------------------------

    def _requested_bucket(self) -> str:
        bucket = self.config.get("bucket")
        return bucket if isinstance(bucket, str) and BUCKET_PATTERN.match(bucket) else "dvc"

    @property
    def _state_dir(self) -> str:
        return sidecar.mount_location(self, CONTAINER, STORAGE)

    def _config(self) -> RegistryConfig:
        return self.load_config(RegistryConfig)

    def _config_problem(self) -> str | None:
        return sidecar.config_problem(self, RegistryConfig)

    def _public_host(self, config: RegistryConfig) -> str:
        return config.public_host or sidecar.service_host(self)

    def _writer(self) -> Credential | None:
        content = secrets.ensure_app_secret(
            self,
            REGISTRY_SECRET,
            lambda: {"username": REGISTRY_USER, "password": secrets.generate_password()},
        )
        return Credential(REGISTRY_USER, content["password"], write=True) if content else None

    def _consumer_access(self, relation: ops.Relation) -> str:
        request, _problem = databags.load_remote_app_data(relation, DatasetRequirerData)
        return (request.access if request else None) or "read"

    def _consumer_credential(self, relation: ops.Relation) -> Credential | None:
        label = CONSUMER_SECRET.format(relation_id=relation.id)
        username = CONSUMER_USER.format(relation_id=relation.id)
        content = secrets.ensure_app_secret(
            self, label, lambda: {"username": username, "password": secrets.generate_password()}
        )
        if content is None:
            return None
        write = self._consumer_access(relation) == "write"
        return Credential(content["username"], content["password"], write=write)

    def _external_remote(self) -> ExternalRemote | None:
        connection = self.s3.connection()
        if connection is None:
            return None
        return ExternalRemote(
            bucket=connection.bucket,
            path=connection.path,
            endpoint=connection.endpoint,
            region=connection.region,
            access_key=connection.access_key,
            secret_key=connection.secret_key,
        )

    def _settings(self, config: RegistryConfig, writer: Credential) -> RegistrySettings:
        consumers = [self._consumer_credential(r) for r in self.model.relations[DATASET_ENDPOINT]]
        return RegistrySettings(
            state_dir=self._state_dir,
            public_host=self._public_host(config),
            users=(writer, *(c for c in consumers if c is not None)),
            git_port=config.git_port,
            s3_port=config.s3_port,
            s3_read_only_port=config.s3_port + 1,
            s3_read_only_backend_port=config.s3_port + 2,
            bucket=config.bucket,
            external_remote=self._external_remote(),
            service_user=SERVICE_USER,
            service_group=SERVICE_USER,
        )

    # --- reconcile --------------------------------------------------------------------------

    def _reconcile(self, _event: ops.EventBase) -> None:
        """Bring the workload, the ports and the relations to the goal state."""
        if self._config_problem() or not self.container.can_connect():
            return
        if not self.unit.is_leader() and self.app.planned_units() > 1:
            return  # a single writer: collect-status says so
        config = self._config()
        writer = self._writer()
        if writer is None or self.s3.status():
            # Keep the current remote until the new one is complete.
            return
        settings = self._settings(config, writer)
        if settings.embedded_s3:
            self.unit.set_ports(settings.git_port, settings.s3_port, settings.s3_read_only_port)
        else:
            self.unit.set_ports(settings.git_port)
        try:
            self._apply(settings)
        except (WorkloadError, ops.pebble.Error) as error:
            self._problem = str(error)
            logger.warning("registry not configured: %s", error)
            return
        if self.unit.is_leader():
            if not self._peer_value(LISTED_KEY):
                self._refresh_latest(settings)
            elif isinstance(_event, ops.UpdateStatusEvent):
                # Juju before 3.6.25 does not deliver notices a non-root workload records:
                # versions pushed with plain git are then found here.
                self._validate_new_versions(settings, self._unknown_versions(settings))
            self._provide_dataset(settings)

    def _apply(self, settings: RegistrySettings) -> None:
        """Write the files, bootstrap the repository when its inputs changed, run the layer."""
        self.container.make_dir(
            settings.state_dir, make_parents=True, user=SERVICE_USER, group=SERVICE_USER
        )
        changed = {
            path
            for path, (content, mode) in registry.files(settings).items()
            if self._push(path, content, mode)
        }
        script_path = f"{settings.conf_dir}/bootstrap.sh"
        script_changed = self._push(script_path, registry.bootstrap_script(settings), 0o644)
        hook_changed = f"{settings.conf_dir}/post-receive" in changed
        repository_missing = not self.container.exists(f"{settings.repository_path}/HEAD")
        if script_changed or hook_changed or repository_missing:
            self._exec(
                registry.bootstrap_command(settings),
                {"HOME": settings.state_dir, **_remote_environment(settings)},
                timeout=BOOTSTRAP_TIMEOUT,
                what="bootstrap",
            )
        # Apache reads htpasswd and htgroup on every request: only its config and the S3
        # keys need a restart.
        restart = bool(
            changed & {f"{settings.conf_dir}/httpd.conf", f"{settings.conf_dir}/s3.env"}
        )
        pebble.apply_layer(self.container, "registry", registry.layer(settings), restart=restart)
        unwanted = registry.stopped_services(settings)
        running = self.container.get_services(*unwanted) if unwanted else {}
        to_stop = [name for name, info in running.items() if info.is_running()]
        if to_stop:
            self.container.stop(*to_stop)

    def _push(self, path: str, content: str, mode: int) -> bool:
        try:
            if self.container.pull(path).read() == content:
                return False
        except ops.pebble.PathError:
            pass
        self.container.push(
            path, content, make_dirs=True, permissions=mode, user=SERVICE_USER, group=SERVICE_USER
        )
        return True

    def _exec(
        self, command: list[str], environment: dict[str, str], *, timeout: float, what: str
    ) -> str:
        try:
            process = self.container.exec(
                command,
                environment=environment,
                user=SERVICE_USER,
                group=SERVICE_USER,
                timeout=timeout,
            )
            stdout, _stderr = process.wait_output()
        except ops.pebble.ExecError as error:
            stderr = str(error.stderr or "").strip().splitlines()
            raise WorkloadError(f"{what} failed: {stderr[-1] if stderr else error}") from error
        except ops.pebble.ChangeError as error:
            raise WorkloadError(f"{what} failed: {error.err}") from error
        return stdout

    def _dataset(self, settings: RegistrySettings, command: str, *args: str) -> dict[str, Any]:
        """Run ``mlops-workload dataset <command>`` in the container; its JSON result."""
        stdout = self._exec(
            registry.dataset_command(settings, command, *args),
            registry.workload_environment(settings),
            timeout=DATASET_TIMEOUT,
            what=command,
        )
        try:
            return json.loads(stdout)
        except json.JSONDecodeError as error:
            raise WorkloadError(f"{command} returned no JSON result") from error

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
            secret_id = self._grant_consumer_secret(relation, credential, settings)
            region = settings.external_remote.region if settings.external_remote else None
            databags.save_app_data(
                relation,
                self.app,
                DatasetProviderData(
                    registry_url=settings.git_url,
                    remote_url=settings.remote_url(),
                    remote_endpoint=settings.remote_endpoint(write=credential.write),
                    remote_region=region,
                    access="write" if credential.write else "read",
                    credentials_secret_id=secret_id,
                    latest_version=latest,
                    pinned_version=pinned,
                ),
            )

    def _grant_consumer_secret(
        self, relation: ops.Relation, credential: Credential, settings: RegistrySettings
    ) -> str | None:
        """Keep the consumer's secret holding its git and S3 keys; grant it; return its id."""
        secret = self.model.get_secret(label=CONSUMER_SECRET.format(relation_id=relation.id))
        remote = settings.external_remote
        wanted = {
            "username": credential.username,
            "password": credential.password,
            "access-key": remote.access_key if remote else credential.s3_access_key,
            "secret-key": remote.secret_key if remote else credential.s3_secret_key,
        }
        if secret.get_content(refresh=True) != wanted:
            secret.set_content(wanted)
        secret.grant(relation)
        return secret.get_info().id

    # --- versions ---------------------------------------------------------------------------

    def _peer_data(self) -> ops.RelationDataContent | None:
        relation = self.model.get_relation(PEERS)
        return relation.data[self.app] if relation else None

    def _peer_value(self, key: str) -> str | None:
        data = self._peer_data()
        return (data.get(key) or None) if data is not None else None

    def _set_peer_value(self, key: str, value: str | None) -> None:
        data = self._peer_data()
        if data is None:
            return
        if value:
            data[key] = value
        elif key in data:
            del data[key]

    def _note_version(self, version: str) -> None:
        if _version_number(version) > _version_number(self._peer_value(LATEST_KEY)):
            self._set_peer_value(LATEST_KEY, version)

    def _refresh_latest(self, settings: RegistrySettings) -> None:
        try:
            listed = self._dataset(settings, "list-versions")
        except WorkloadError as error:
            logger.warning("could not list versions: %s", error)
            return
        invalid = set(self._invalid_versions())
        names = [v["version"] for v in listed.get("versions", []) if v["version"] not in invalid]
        if names:
            self._note_version(names[-1])
        self._set_peer_value(LISTED_KEY, "true")

    def _invalid_versions(self) -> list[str]:
        return (self._peer_value(INVALID_KEY) or "").split()

    def _on_custom_notice(self, event: ops.PebbleCustomNoticeEvent) -> None:
        """Versions pushed with plain git + dvc: validate them, then tell the consumers."""
        if event.notice.key != registry.NOTICE_KEY or not self.unit.is_leader():
            return
        settings = self._ready_settings()
        if settings is None:
            return
        tags = (event.notice.last_data or {}).get("tags", "").split()
        self._validate_new_versions(settings, [t for t in tags if VERSION_PATTERN.match(t)])
        self._reconcile(event)

    def _unknown_versions(self, settings: RegistrySettings) -> list[str]:
        """Versions newer than the latest known one that were never found invalid."""
        try:
            listed = self._dataset(settings, "list-versions")
        except WorkloadError as error:
            logger.warning("could not list versions: %s", error)
            return []
        latest = _version_number(self._peer_value(LATEST_KEY))
        invalid = set(self._invalid_versions())
        return [
            v["version"]
            for v in listed.get("versions", [])
            if _version_number(v["version"]) > latest and v["version"] not in invalid
        ]

    def _validate_new_versions(self, settings: RegistrySettings, names: list[str]) -> None:
        """Validate versions pushed by users; publish the valid, record the invalid."""
        invalid = set(self._invalid_versions())
        for name in sorted(names, key=_version_number):
            try:
                report = self._dataset(settings, "validate-version", name)
            except WorkloadError as error:
                logger.warning("could not validate %s: %s", name, error)
                continue
            if report.get("valid"):
                invalid.discard(name)
                self._note_version(name)
            else:
                invalid.add(name)
                logger.warning("pushed version %s is not valid: %s", name, report.get("reason"))
        self._set_peer_value(INVALID_KEY, " ".join(sorted(invalid, key=_version_number)))

    def _ready_settings(self) -> RegistrySettings | None:
        if self._config_problem() or not self.container.can_connect():
            return None
        writer = self._writer()
        return self._settings(self._config(), writer) if writer else None

    def _on_consumer_gone(self, event: ops.RelationBrokenEvent) -> None:
        """Remove a departed consumer's secret (its user leaves htpasswd), then reconcile."""
        if self.unit.is_leader():
            secrets.remove_app_secret(
                self.model, CONSUMER_SECRET.format(relation_id=event.relation.id)
            )
        self._reconcile(event)

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
        if not self.container.can_connect():
            event.add_status(ops.WaitingStatus("waiting for Pebble in the registry container"))
            return
        s3_status = self.s3.unit_status()
        if s3_status:
            # The registry keeps its current remote (or does not start) until S3 is complete.
            event.add_status(s3_status)
            return
        for relation in self.model.relations[DATASET_ENDPOINT]:
            _, problem = databags.load_remote_app_data(relation, DatasetRequirerData)
            if problem:
                event.add_status(ops.BlockedStatus(f"{DATASET_ENDPOINT}: {problem}"))
        if secrets.read_app_secret(self.model, REGISTRY_SECRET) is None:
            event.add_status(ops.WaitingStatus("waiting for the leader to create the secrets"))
            return
        if self._problem:
            event.add_status(ops.BlockedStatus(self._problem))
        services = self.container.get_services(registry.GIT_SERVICE)
        if not services or not services[registry.GIT_SERVICE].is_running():
            event.add_status(ops.MaintenanceStatus("starting the registry"))
        event.add_status(ops.ActiveStatus(self._active_message()))

    def _active_message(self) -> str:
        latest, pinned = self._peer_value(LATEST_KEY), self._peer_value(PINNED_KEY)
        parts = [f"latest {latest}" if latest else "no versions yet"]
        if pinned:
            parts.append(f"pinned {pinned}")
        invalid = self._invalid_versions()
        if invalid:
            parts.append(f"invalid (data missing): {', '.join(invalid)}")
        return "; ".join(parts)

    # --- actions ----------------------------------------------------------------------------

    def _action_settings(self, event: ops.ActionEvent) -> RegistrySettings | None:
        """Settings for a ready registry, or None after failing ``event`` saying why."""
        config_problem = self._config_problem()
        if config_problem:
            event.fail(f"cannot run while blocked: {config_problem}")
            return None
        if not self.container.can_connect():
            event.fail("the registry container is not ready")
            return None
        if not self.unit.is_leader():
            event.fail("run the action on the leader unit")
            return None
        settings = self._ready_settings()
        if settings is None:
            event.fail("the registry's secrets do not exist yet: wait for the leader")
        return settings

    def _run_dataset(self, event: ops.ActionEvent, command: str, *args: str) -> dict | None:
        settings = self._action_settings(event)
        if settings is None:
            return None
        try:
            return self._dataset(settings, command, *args)
        except WorkloadError as error:
            event.fail(str(error).removeprefix(f"{command} failed: error: "))
            return None

    def _on_create_version(self, event: ops.ActionEvent) -> None:
        params = event.load_params(CreateVersionParams, data_dir=self._state_dir, errors="fail")
        approach = self._config().approach if not self._config_problem() else ""
        args = ["--source", params.source, "--source-kind", params.source_kind]
        args += ["--message", params.message] if params.message else []
        args += ["--approach", approach] if approach else []
        if params.source.startswith("s3://"):
            # The source bucket is on the remote's S3 server (embedded or external).
            settings = self._ready_settings()
            endpoint = settings.local_endpoint if settings else None
            args += ["--source-endpoint-url", endpoint] if endpoint else []
        result = self._run_dataset(event, "create-version", *args)
        if result is None:
            return
        self._after_new_version(event, result)

    def _on_rollback(self, event: ops.ActionEvent) -> None:
        params = event.load_params(RollbackParams, errors="fail")
        args = ["--to", params.to]
        args += ["--message", params.message] if params.message else []
        approach = self._config().approach if not self._config_problem() else ""
        args += ["--approach", approach] if approach else []
        result = self._run_dataset(event, "rollback", *args)
        if result is None:
            return
        self._after_new_version(event, result)

    def _after_new_version(self, event: ops.ActionEvent, result: dict) -> None:
        self._note_version(result["version"])
        self._reconcile(event)
        event.set_results(
            {
                "version": result["version"],
                "parent": result.get("parent") or "",
                "commit": result.get("commit", ""),
                "files": result.get("files", 0),
                "bytes": result.get("bytes") or 0,
                "source": result.get("source", ""),
            }
        )

    def _on_list_versions(self, event: ops.ActionEvent) -> None:
        result = self._run_dataset(event, "list-versions")
        if result is None:
            return
        versions = result.get("versions", [])
        event.set_results(
            {
                "count": len(versions),
                "latest": versions[-1]["version"] if versions else "",
                "pinned": self._peer_value(PINNED_KEY) or "",
                "versions": json.dumps(versions),
            }
        )

    def _on_diff_versions(self, event: ops.ActionEvent) -> None:
        try:
            params = DiffVersionsParams.model_validate(dict(event.params))
        except pydantic.ValidationError as error:
            event.fail(f"Error in action parameters: {databags.one_line(error)}")
            return
        result = self._run_dataset(event, "diff-versions", params.old, params.new)
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
        if not params.version:
            if self._action_settings(event) is None:
                return
            self._set_peer_value(PINNED_KEY, None)
            self._reconcile(event)
            event.set_results({"pinned": ""})
            return
        report = self._run_dataset(event, "validate-version", params.version)
        if report is None:
            return
        if not report.get("valid"):
            event.fail(f"cannot pin {params.version}: {report.get('reason') or 'not valid'}")
            return
        self._set_peer_value(PINNED_KEY, params.version)
        self._reconcile(event)
        event.set_results({"pinned": params.version})


def _remote_environment(settings: RegistrySettings) -> dict[str, str]:
    """What the bootstrap needs to reach an external remote (nothing for the embedded one)."""
    remote = settings.external_remote
    if remote is None:
        return {}
    return {"AWS_ACCESS_KEY_ID": remote.access_key, "AWS_SECRET_ACCESS_KEY": remote.secret_key}


if __name__ == "__main__":  # pragma: nocover
    ops.main(DataVersioningCharm)
