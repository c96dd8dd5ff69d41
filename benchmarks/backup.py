"""Benchmark: backing up and restoring a data registry with a 10,000-file version (prints only).

A registry is started exactly as the workload tests start it (the charm on a real Pebble,
Apache + git http-backend, rclone S3). A dataset of ``--files`` files of ``--size`` random bytes
becomes ``v1``. Then the registry is backed up as create-backup does it (the same
``mlops-workload backup create`` command line, run as the service user through Pebble exec),
its servers are stopped, its repository and objects are deleted, and the backup is restored
as the restore action's job does it (``mlops-workload backup restore``). A hook then starts
the servers again, and a consumer clones the registry and pulls ``v1`` with git and dvc.

Printed: the dataset, the archive's size, the backup and restore wall times, and the time of
the consumer's pull after the restore (a check that every file came back, byte for byte).

Run: ``PYTHONPATH=.:lib python benchmarks/backup.py [--files N] [--size BYTES]`` with the
registry test environment (see tests/workload/registry).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlops_charms import backup, registry
from tests.workload.registry.harness import (
    chown_tree,
    dvc,
    git,
    start_registry,
)


def digest_tree(top: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in top.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(top)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=4096, help="bytes per file")
    args = parser.parse_args()
    with start_registry() as running:
        source = running.source_dir("benchmark")
        for i in range(args.files):
            path = source / f"shard-{i % 100:02d}" / f"sample-{i:05d}.bin"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(os.urandom(args.size))
        chown_tree(source)
        expected = digest_tree(source)
        cut = running.workload("create-version", "--source", str(source))
        if cut.exit_code != 0:
            raise SystemExit(f"create-version failed: {cut.stderr.strip()}")
        settings = running.settings
        plan = registry.backup_plan(settings, "data-versioning-k8s")
        environment = {"HOME": settings.home_dir}

        create = backup.create_job(
            settings.binaries.mlops_workload,
            plan,
            app="data-versioning-k8s",
            unit="data-versioning-k8s/0",
            environment=environment,
        )
        start = time.perf_counter()
        made = running.exec_as_service(list(create.command), dict(create.environment))
        backup_time = time.perf_counter() - start
        if made.exit_code != 0:
            raise SystemExit(f"backup failed: {made.stderr.strip()}")
        backup_id = made.stdout.split('"id": "')[1].split('"')[0]
        archive = Path(settings.backups_dir) / f"{backup_id}{'.tar.gz'}"

        # The state is lost: servers stopped, repository and objects gone.
        services = [s.name for s in registry.services(settings)]
        running.client.stop_services(services)
        shutil.rmtree(settings.repository_path)
        shutil.rmtree(Path(settings.s3_root) / registry.DVC_BUCKET)

        restore = backup.restore_job(
            settings.binaries.mlops_workload, plan, backup_id, environment=environment
        )
        start = time.perf_counter()
        restored = running.exec_as_service(list(restore.command), dict(restore.environment))
        restore_time = time.perf_counter() - start
        if restored.exit_code != 0:
            raise SystemExit(f"restore failed: {restored.stderr.strip()}")

        running.run_charm(running.context.on.update_status())  # starts the servers again
        running.unit.containers["registry"].wait_for_checks(timeout=60)
        reader = running.reader
        checkout = running.base / "checkout"
        start = time.perf_counter()
        git("clone", "--quiet", running.url_for(reader), str(checkout))
        git("checkout", "--quiet", "v1", cwd=checkout)
        pulled = dvc("pull", "--quiet", cwd=checkout, user=reader)
        pull_time = time.perf_counter() - start
        if pulled.returncode != 0:
            raise SystemExit(f"dvc pull after the restore failed: {pulled.stderr.strip()}")
        intact = digest_tree(checkout / "data") == expected
        size = archive.stat().st_size
    data = args.files * args.size
    print(f"dataset: {args.files} files x {args.size} B = {data / 1e6:.1f} MB, one version (v1)")
    print(f"backup archive: {size / 1e6:.1f} MB ({size / data:.3f} of the data)")
    print(f"backup time:  {backup_time:7.2f} s (create-backup's job, servers running)")
    print(f"restore time: {restore_time:7.2f} s (restore's job: checksum, unpack, verify, swap)")
    print(f"pull of v1 after the restore: {pull_time:.2f} s; every file intact: {intact}")


if __name__ == "__main__":
    main()
