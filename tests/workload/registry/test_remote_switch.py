"""Moving the DVC remote to external S3: the versions cut before keep their data.

The "external" S3 is a second real ``rclone serve s3`` over its own folder, started by the
test. The charm switches the registry: an ``ops.testing`` run of it on ``s3-credentials``
(s3-integrator's answer, keys in a Juju secret) pushes new files and asks for the bootstrap
(which copies the embedded objects over before committing the new remote), which the real
Pebble runs, with the charm's new layer. Consumers then use what the charm publishes.
"""

from __future__ import annotations

import dataclasses
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from ops import pebble, testing

from tests.workload.processes import free_port
from tests.workload.registry.harness import (
    VENV_BIN,
    Consumer,
    RunningRegistry,
    chown_tree,
    dvc,
    git,
    make_files,
    read_tree,
    registry,
)

pytestmark = pytest.mark.slow


@dataclasses.dataclass(frozen=True)
class ExternalS3:
    endpoint: str
    root: Path
    consumer: registry.Credential


@pytest.fixture(scope="module")
def external_s3(running_registry: RunningRegistry) -> Iterator[ExternalS3]:
    root = running_registry.base / "external-s3"
    (root / "team-bucket").mkdir(parents=True)
    key = registry.Credential("external-key", secrets.token_urlsafe(24), write=True)
    port = free_port()
    process = subprocess.Popen(
        [
            str(VENV_BIN / "rclone"),
            "serve",
            "s3",
            str(root),
            "--addr",
            f"127.0.0.1:{port}",
            "--auth-key",
            f"{key.username},{key.password}",
            "--dir-cache-time",
            "1s",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield ExternalS3(f"http://127.0.0.1:{port}", root, key)
    finally:
        process.terminate()
        process.wait(timeout=10)


def _pull(running: RunningRegistry, user: Consumer, rev: str, dest: Path) -> dict[str, bytes]:
    git("clone", "--quiet", running.url_for(user), str(dest))
    git("checkout", "--quiet", rev, cwd=dest)
    # As a consumer configures its clone from the relation data: each commit carries the
    # remote of its time, the relation names the current one.
    for key, value in (("url", user.remote_url), ("endpointurl", user.remote_endpoint)):
        configured = dvc("remote", "modify", "--local", "storage", key, value, cwd=dest, user=user)
        assert configured.returncode == 0, configured.stderr
    result = dvc("pull", "--quiet", cwd=dest, user=user)
    assert result.returncode == 0, result.stderr
    return read_tree(dest / "data")


def _s3_integrator(external: ExternalS3) -> tuple[testing.Relation, testing.Secret]:
    """s3-integrator's answer on ``s3-credentials`` (version 1: the keys in a secret)."""
    keys = testing.Secret(
        {
            "access-key": external.consumer.s3_access_key,
            "secret-key": external.consumer.s3_secret_key,
        }
    )
    relation = testing.Relation(
        "s3-credentials",
        interface="s3",
        remote_app_name="s3-integrator",
        remote_app_data={
            "version": "1",
            "secret-extra": keys.id,
            "bucket": "team-bucket",
            "path": "/registry/",
            "endpoint": external.endpoint,
            "s3-uri-style": "path",
        },
        remote_units_data={0: {}},
    )
    return relation, keys


def test_switch_to_external_s3_keeps_every_version_pullable(
    running_registry: RunningRegistry, external_s3: ExternalS3, tmp_path: Path
):
    source = running_registry.source_dir("before-switch")
    v1 = make_files(source, 6, 700, "before")
    chown_tree(source)
    first = running_registry.workload("create-version", "--source", str(source))
    assert first.exit_code == 0, first.stderr
    old = first.json["version"]

    relation, keys = _s3_integrator(external_s3)
    state = dataclasses.replace(
        running_registry.state,
        relations={*running_registry.state.relations, relation},
        secrets={*running_registry.state.secrets, keys},
    )
    out = running_registry.run_charm(running_registry.context.on.relation_changed(relation), state)
    assert isinstance(out.unit_status, testing.ActiveStatus), out.unit_status
    reader = running_registry.reader
    assert (reader.remote_url, reader.remote_endpoint) == (
        "s3://team-bucket/registry",
        external_s3.endpoint,
    )
    assert (reader.s3_access_key, reader.s3_secret_key) == (
        external_s3.consumer.s3_access_key,
        external_s3.consumer.s3_secret_key,
    )
    # The charm asked for the bootstrap that copied the objects and committed the new remote.
    assert "changed" in running_registry.bootstraps[-1].stdout
    services = {s.name: s for s in running_registry.client.get_services()}
    assert not services[registry.S3_SERVICE].is_running()
    assert not services[registry.S3_READ_ONLY_SERVICE].is_running()
    assert services[registry.GIT_SERVICE].current == pebble.ServiceStatus.ACTIVE
    # The version cut before the switch is pulled from the external bucket.
    pulled = _pull(running_registry, running_registry.reader, old, tmp_path / "old")
    assert pulled == v1
    # New versions go to the external bucket.
    (source / "part-0/item-0000.bin").write_bytes(b"after the switch")
    chown_tree(source)
    second = running_registry.workload("create-version", "--source", str(source))
    assert second.exit_code == 0, second.stderr
    pulled = _pull(
        running_registry,
        running_registry.reader,
        second.json["version"],
        tmp_path / "new",
    )
    assert pulled["part-0/item-0000.bin"] == b"after the switch"
    validated = running_registry.workload("validate-version", old)
    assert validated.exit_code == 0, validated.stderr
    assert validated.json["valid"] is True
    diff = running_registry.workload("diff-versions", old, second.json["version"])
    assert diff.json["modified"] == ["data/part-0/item-0000.bin"]
    manifests = list((external_s3.root / "team-bucket" / "registry").rglob("*.dir"))
    assert len(manifests) >= 2
