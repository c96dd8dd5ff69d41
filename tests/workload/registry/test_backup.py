"""Backup and restore of the registry into a fresh deployment, with the real jobs and clients.

The charm runs on a real Pebble (tests/workload/registry/harness.py): versions are cut with
create-version, backed up with create-backup (the real ``mlops-workload backup create`` job),
then the unit's state is destroyed — Pebble, its plan and every file of the storage but the
backups — and a new deployment comes up on the empty storage, with new secrets and new
consumers. restore brings the repository and the DVC objects back: a consumer of the new
deployment clones the registry with plain git and pulls every old version with dvc, and a new
version can be cut on top. A corrupted archive fails its restore and leaves the state serving.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from ops import testing

from tests.workload.pebble_backed import shared_folder
from tests.workload.registry.harness import (
    RunningRegistry,
    charm,
    chown_tree,
    consumer_relation,
    deploy,
    dvc,
    first_state,
    git,
    make_files,
    read_tree,
    registry,
    registry_unit,
)

pytestmark = pytest.mark.slow

SERVICES = {registry.GIT_SERVICE, registry.S3_SERVICE, registry.S3_READ_ONLY_SERVICE}


def _deployment(unit) -> RunningRegistry:
    relations = {
        "training": consumer_relation("training"),
        "labelling": consumer_relation("labelling", "write"),
    }
    state = deploy(unit, first_state(unit, relations.values()))
    return RunningRegistry(unit=unit, base=unit.base, state=state, relations=relations)


def _action(running: RunningRegistry, name: str, **params) -> dict:
    results, state = running.unit.run_action(name, running.state, **params)
    running.refresh(state)
    assert not isinstance(results, testing.ActionFailed), f"{name}: {results.message}"
    return dict(results)  # a copy: the context's results change with the next action


def _cut(running: RunningRegistry, name: str) -> tuple[str, dict[str, bytes]]:
    source = running.source_dir(name)
    files = make_files(source, 5, 700, name)
    chown_tree(source)
    results = _action(running, "create-version", source=str(source))
    assert results["state"] == "succeeded", results
    return results["version"], files


def _pull_every_version(
    running: RunningRegistry, versions: dict[str, dict[str, bytes]], into: Path
) -> None:
    """A consumer of this deployment clones the registry and pulls each version.

    As the stack's consumers do, it takes the remote's endpoint from the relation, not from
    the version's commit: a version cut before the restore names the old deployment's port.
    """
    reader = running.reader
    git("clone", "--quiet", running.url_for(reader), str(into))
    endpoint = ["remote", "modify", "--local", registry.REMOTE_NAME, "endpointurl"]
    configured = dvc(*endpoint, reader.remote_endpoint, cwd=into, user=reader)
    assert configured.returncode == 0, configured.stderr
    for version, files in versions.items():
        git("checkout", "--quiet", version, cwd=into)
        pulled = dvc("pull", "--quiet", "--force", cwd=into, user=reader)
        assert pulled.returncode == 0, f"{version}: {pulled.stderr}"
        assert read_tree(into / "data") == files, f"{version} does not hold its files"


@pytest.fixture(scope="module")
def restored() -> Iterator[tuple[RunningRegistry, dict[str, dict[str, bytes]], dict]]:
    """Versions cut and backed up, the state destroyed, a new deployment, the restore."""
    with shared_folder("reg-bk-") as base:
        unit = registry_unit(base)
        unit.start()
        try:
            old = _deployment(unit)
            versions = dict([_cut(old, "first"), _cut(old, "second")])
            backed_up = _action(old, "create-backup")
            # The workload's state is gone: processes, plan, every file but the backups.
            unit.stop()
            storage = Path(old.settings.state_dir)
            kept = base / "kept-backups"
            shutil.move(storage / "backups", kept)
            shutil.rmtree(storage)
            storage.mkdir()
            storage.chmod(0o755)
            (storage / "backups").mkdir()
            for path in kept.iterdir():
                shutil.move(path, storage / "backups" / path.name)
            chown_tree(storage / "backups")
            unit.start()
            fresh = _deployment(unit)
            assert fresh.writer.password != old.writer.password, "not a new deployment"
            listed = _action(fresh, "list-backups")
            assert backed_up["backup-id"] in listed["backups"]
            result = _action(fresh, "restore", **{"backup-id": backed_up["backup-id"]})
            yield fresh, versions, {"backup": backed_up, "restore": result}
        finally:
            unit.stop()


def test_create_backup_reports_what_it_holds(restored):
    _running, _versions, results = restored
    backed_up = results["backup"]
    assert backed_up["members"] == "git/registry.git, s3/dvc"
    assert int(backed_up["files"]) > 10 and int(backed_up["size"]) > 0
    assert backed_up["destination"].endswith("/backups")


def test_every_version_is_pullable_from_the_new_deployment(restored, tmp_path):
    running, versions, results = restored
    assert results["restore"]["state"] == "succeeded"
    assert running.unit.containers[charm.CONTAINER].running() >= SERVICES
    _pull_every_version(running, versions, tmp_path / "clone")


def test_a_new_version_is_cut_on_top_of_the_restored_ones(restored, tmp_path):
    running, versions, _results = restored
    name, files = _cut(running, "third")
    assert name == "v3"
    _pull_every_version(running, {**versions, name: files}, tmp_path / "clone")


def test_a_corrupted_archive_fails_its_restore_and_keeps_serving(restored, tmp_path):
    running, versions, results = restored
    backup_id = results["backup"]["backup-id"]
    archive = Path(running.settings.backups_dir) / f"{backup_id}.tar.gz"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    failure, state = running.unit.run_action("restore", running.state, **{"backup-id": backup_id})
    running.refresh(state)
    assert isinstance(failure, testing.ActionFailed)
    assert (
        failure.message
        == f"restore failed: backup {backup_id} is corrupt: the archive's sha256 differs"
    )
    assert running.unit.containers[charm.CONTAINER].running() >= SERVICES
    _pull_every_version(running, versions, tmp_path / "clone")
