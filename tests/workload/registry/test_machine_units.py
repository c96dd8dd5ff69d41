"""The data-versioning machine charm's systemd units, checked by systemd and run for real.

This machine has no running systemd. The units are rendered by the charm's own module
(``charms/data-versioning/src/registry_units.py``, the text the charm writes to
``/etc/systemd/system``) from the shared core's settings, with the servers' files, the
bootstrap and the commands the charm runs as the service user done through the same core
functions and the charm's ``run_as``. ``systemd-analyze verify`` checks the units; then the test
does what systemd would: runs each server unit's ``ExecStart`` as its ``User`` in its
``WorkingDirectory``. Real clients use it: git over HTTP with basic auth, DVC against the
rclone S3 remote, boto3.
"""

from __future__ import annotations

import contextlib
import functools
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlops_charms import pebble, registry, registry_state
from mlops_charms.host_files import HostFiles
from mlops_charms.registry import Credential, RegistrySettings
from tests.systemd_units import unit_settings
from tests.workload.pebble_backed import shared_folder, wait_until
from tests.workload.processes import (
    answers_200,
    assert_systemd_verifies,
    free_port,
    missing,
    run_unit,
)
from tests.workload.registry.harness import (
    VENV_BIN,
    Operator,
    chown_tree,
    dvc,
    free_ports_in_a_row,
    git,
    make_files,
    read_tree,
    service_owner,
)

CHARM_SRC = Path(__file__).resolve().parents[3] / "charms" / "data-versioning" / "src"
if str(CHARM_SRC) not in sys.path:
    sys.path.append(str(CHARM_SRC))

import registry_units  # noqa: E402

pytestmark = pytest.mark.slow

JUJU_UNIT = "data-versioning/0"
WRITER = Credential(
    "registry", "writer-Pa55-'quote'-$dollar", "mlopsWriter0123", "writer-secret-0123", write=True
)
READER = Credential("relation-7", "reader-password-0123", "mlopsReader0123", "reader-secret-0123")


@dataclass
class MachineRegistry:
    settings: RegistrySettings
    units: dict[str, Path]

    def user(self, credential: Credential) -> Operator:
        return Operator(
            credential.username, credential.password, credential.access_key, credential.secret_key
        )

    def url_for(self, credential: Credential) -> str:
        host = f"127.0.0.1:{self.settings.git_port}"
        return f"http://{credential.username}:{credential.password}@{host}/registry.git"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MachineRegistry]:
    """The registry's files and units as the machine charm writes them, its user this venv's."""
    for program in ("rclone", "dvc", "mlops-workload"):
        if not (VENV_BIN / program).exists():
            missing(f"no {program} in {VENV_BIN}: run in tox -e workload-registry")
    if not Path(registry_units.PATHS.apache).exists():
        missing("apache2 is not installed (tools/install-test-deps.sh)")
    service_owner()  # the rock's user, which can run this venv's programs
    user = "_daemon_"
    units_dir = tmp_path_factory.mktemp("units")
    juju_exec = units_dir / "juju-exec"
    juju_exec.write_text("#!/bin/sh\nexit 0\n")
    juju_exec.chmod(0o755)
    paths = registry_units.MachinePaths(
        units_dir=str(units_dir),
        venv=str(VENV_BIN.parent),
        user=user,
        juju_exec=str(juju_exec),
    )
    patch = pytest.MonkeyPatch()
    patch.setattr(registry_units, "PATHS", paths)
    with shared_folder("registry-machine-") as state_dir:
        s3_port = free_ports_in_a_row(3)
        settings = RegistrySettings(
            state_dir=str(state_dir),
            public_host="127.0.0.1",
            users=(WRITER, READER),
            git_port=free_port(),
            s3_port=s3_port,
            service_user=user,
            service_group=user,
            binaries=paths.binaries,
        )
        _write_files(settings, user)
        units = {}
        for name, text in registry_units.unit_files(settings, JUJU_UNIT).items():
            units[name] = units_dir / name
            units[name].write_text(text)
        yield MachineRegistry(settings, units)
    patch.undo()


def _write_files(settings: RegistrySettings, owner: str) -> None:
    """What the charm's reconcile writes (``RegistryServerCharm._apply``), then the bootstrap."""
    files = HostFiles()
    for directory in settings.directories:
        files.make_dir(directory, make_parents=True, user=owner, group=owner)
    for path, (content, mode) in registry.files(settings).items():
        pebble.push_if_changed(files, path, content, permissions=mode, user=owner, group=owner)
    registry_state.write_htpasswd(files, settings)
    errors: list[str | None] = []
    run = functools.partial(registry_units.run_as, owner)
    registry_state.bootstrap(files, settings, run, errors.append)
    assert errors == [None], errors


def test_rendered_units_pass_systemd_analyze_verify(rendered: MachineRegistry):
    for path in rendered.units.values():
        assert_systemd_verifies(path)


def test_no_unit_holds_a_secret(rendered: MachineRegistry):
    for path in rendered.units.values():
        text = path.read_text()
        for secret in (WRITER.password, WRITER.secret_key, READER.password, READER.secret_key):
            assert secret not in text


@pytest.fixture(scope="module")
def servers(rendered: MachineRegistry) -> Iterator[MachineRegistry]:
    """Each server unit run as systemd would run it: its command, user and folder."""
    with contextlib.ExitStack() as running:
        for service in registry.services(rendered.settings):
            path = rendered.units[registry_units.server_unit(service.name)]
            ready = functools.partial(_accepts, service.port)
            running.enter_context(
                run_unit(unit_settings(path.read_text()), ready, path.with_suffix(".log"), 30)
            )
        health = f"http://127.0.0.1:{rendered.settings.git_port}/healthz"
        wait_until(lambda: answers_200(health), 30, "Apache's health URL")
        yield rendered


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_a_version_made_on_the_machine_is_cloned_and_pulled_by_a_reader(
    servers: MachineRegistry, tmp_path: Path
):
    settings = servers.settings
    source = Path(settings.state_dir) / "uploads" / "batch-1"
    files = make_files(source, 6, 2048, "machine")
    chown_tree(source.parent)
    # The command a create-version job runs, as the service user with the job's environment.
    made = registry_units.run_as(
        registry_units.PATHS.user,
        registry.dataset_command(settings, "create-version", "--source", str(source)),
        what="create-version",
        environment=registry.workload_environment(settings),
        working_dir=settings.state_dir,
        timeout=300,
    )
    assert '"version": "v1"' in made
    checkout = tmp_path / "reader"
    git("clone", "--quiet", servers.url_for(READER), str(checkout))
    git("checkout", "--quiet", "v1", cwd=checkout)
    pulled = dvc("pull", cwd=checkout, user=servers.user(READER))
    assert pulled.returncode == 0, pulled.stderr
    assert read_tree(checkout / "data") == files


def test_a_reader_cannot_push_and_a_writer_can(servers: MachineRegistry, tmp_path: Path):
    checkout = tmp_path / "writer"
    git("clone", "--quiet", servers.url_for(WRITER), str(checkout))
    identity = ["-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    (checkout / "NOTES").write_text("from the writer\n")
    git("add", "NOTES", cwd=checkout)
    git(*identity, "commit", "--quiet", "-m", "notes", cwd=checkout)
    git("push", "--quiet", "origin", "HEAD:refs/heads/main", cwd=checkout)
    git("remote", "set-url", "origin", servers.url_for(READER), cwd=checkout)
    git(*identity, "commit", "--quiet", "--allow-empty", "-m", "reader", cwd=checkout)
    refused = git("push", "origin", "HEAD:refs/heads/main", cwd=checkout, check=False)
    assert "403" in refused


def test_the_s3_front_lets_a_reader_read_and_refuses_its_writes(servers: MachineRegistry):
    import boto3
    import botocore.exceptions

    s3 = boto3.client(
        "s3",
        endpoint_url=servers.settings.remote_endpoint,
        aws_access_key_id=READER.access_key,
        aws_secret_access_key=READER.secret_key,
        region_name="us-east-1",
    )
    s3.list_objects_v2(Bucket=registry.DVC_BUCKET)
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        s3.put_object(Bucket=registry.DVC_BUCKET, Key="files/md5/00/sneaky", Body=b"no")
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
