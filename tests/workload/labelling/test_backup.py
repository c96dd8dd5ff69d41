"""Backup and restore of Label Studio into a fresh deployment, with the real server and SDK.

Label Studio runs from the labelling charm's layer under a real Pebble (harness.py). The
official SDK writes a project, tasks and annotations, and a version's media file is in place
(a local storage of the project); the backup job's own command line
(``mlops_charms.backup.create_job`` of the charm's plan) backs it up while Label Studio serves.
Then the unit's storage is gone, and a new deployment — new storage at the same path, a new
admin secret — gets the backup in its ``backups/`` folder: the restore job's command line (the
checks, the swap, migrations and the new admin) runs with Label Studio stopped, Label Studio
starts again, the SDK, with the new deployment's token, reads back exactly what was written,
and Label Studio serves the media file. A corrupted archive fails its restore, changes nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlops_charms import backup, label_studio
from tests.workload.labelling import harness
from tests.workload.labelling.harness import RunningLabelStudio, run_label_studio
from tests.workload.pebble_backed import shared_folder, wait_until
from tests.workload.processes import ExecResult, run_exec

pytestmark = pytest.mark.slow

SDK_BACKUP = Path(__file__).with_name("sdk_backup.py")
MEDIA_ITEM = "texts/item-0.txt"
MEDIA_BYTES = b"Great value, works as described.\n"


def sdk(running: RunningLabelStudio, mode: str) -> dict:
    """Run sdk_backup.py with Label Studio's venv (where the SDK is)."""
    python = Path(harness.binaries().label_studio).with_name("python")
    result = subprocess.run(
        [str(python), str(SDK_BACKUP), mode, running.url],
        env={"PATH": os.environ["PATH"], "LABEL_STUDIO_API_KEY": running.settings.admin_token},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"the SDK failed:\n{result.stderr[-3000:]}"
    return json.loads(result.stdout) if mode == "read" else {}


def run_job(running: RunningLabelStudio, spec) -> ExecResult:
    """A job's command as its runner runs it: in the container, its environment, its folder."""
    return run_exec(
        running.daemon.client,
        list(spec.command),
        environment=dict(spec.environment),
        working_dir=spec.working_dir,
        timeout=600,
    )


def restore(running: RunningLabelStudio, backup_id: str) -> ExecResult:
    """The restore action's job, with Label Studio stopped; Label Studio started after it."""
    settings = running.settings
    client = running.daemon.client
    client.stop_services([label_studio.SERVICE])
    spec = backup.restore_job(
        settings.binaries.mlops_workload,
        label_studio.backup_plan(settings),
        backup_id,
        environment=label_studio.restore_environment(settings),
        after=label_studio.restore_steps(settings),
    )
    result = run_job(running, spec)
    client.start_services([label_studio.SERVICE])
    # Label Studio itself answering: the check may still be up from before the stop.
    wait_until(lambda: label_studio.is_healthy(settings, timeout=2), 240, "Label Studio")
    return result


@pytest.fixture(scope="module")
def deployments() -> Iterator[tuple[dict, RunningLabelStudio, str, ExecResult]]:
    """What was written and backed up; the new deployment after its restore."""
    with shared_folder("ls-bk-") as base:
        with run_label_studio(base / "unit") as old:
            sdk(old, "write")
            # What an import-version leaves: a version's media in a local storage of the
            # project, served by Label Studio.
            item = Path(old.settings.media_root) / MEDIA_ITEM
            item.parent.mkdir(parents=True, exist_ok=True)
            item.write_bytes(MEDIA_BYTES)
            (project,) = old.api("GET", "/api/projects")["results"]
            old.api(
                "POST",
                "/api/storages/localfiles",
                {"project": project["id"], "path": str(item.parent), "title": "v1"},
            )
            written = sdk(old, "read")
            plan = label_studio.backup_plan(old.settings)
            spec = backup.create_job(
                old.settings.binaries.mlops_workload,
                plan,
                app="labelling-k8s",
                unit="labelling-k8s/0",
                environment={"HOME": old.settings.data_dir},
            )
            made = run_job(old, spec)
            assert made.exit_code == 0, made.stderr
            backup_id = json.loads(made.stdout)["id"]
        # The unit's storage is gone; the backups were kept elsewhere (an operator's copy).
        kept = shutil.copytree(plan.backups_dir, base / "kept")
        shutil.rmtree(base / "unit")
        with run_label_studio(base / "unit") as new:
            assert new.settings.admin_token != old.settings.admin_token
            assert sdk(new, "read") == {}, "not a fresh deployment"
            shutil.copytree(kept, Path(new.settings.data_dir) / "backups")
            restored = restore(new, backup_id)
            yield written, new, backup_id, restored


def test_the_sdk_reads_back_every_project_task_annotation_and_upload(deployments):
    written, new, _backup_id, restored = deployments
    assert restored.exit_code == 0, restored.stderr
    assert json.loads(restored.stdout)["restored"][0] == "label_studio.sqlite3"
    held = sdk(new, "read")
    assert held == written
    (tasks,) = held.values()
    assert sum(len(labels) for labels in tasks.values()) == 3


def test_label_studio_serves_the_restored_media(deployments):
    _written, new, _backup_id, _restored = deployments
    request = urllib.request.Request(
        f"{new.url}/data/local-files/?d={MEDIA_ITEM}",
        headers={"Authorization": f"Token {new.settings.admin_token}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.read() == MEDIA_BYTES


def test_a_corrupted_archive_fails_its_restore_and_changes_nothing(deployments):
    written, new, backup_id, _restored = deployments
    archive = Path(new.settings.data_dir) / "backups" / f"{backup_id}.tar.gz"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    failed = restore(new, backup_id)
    assert failed.exit_code == 1
    assert failed.stderr.strip().splitlines()[-1] == (
        f"error: backup {backup_id} is corrupt: the archive's sha256 differs"
    )
    assert sdk(new, "read") == written
