"""Benchmark: cutting dataset versions in a real data registry (prints figures; not a test).

A registry is started exactly as the workload tests start it (real Pebble, Apache +
git http-backend, rclone S3). A dataset of 10,000 small files becomes ``v1``; 1% of
the files are rewritten and the dataset becomes ``v2``. For each version it prints the
wall time of ``mlops-workload dataset create-version`` (run through Pebble exec) and the
bytes that landed in the DVC remote, split into file contents and DVC's directory
manifest (the ``.dir`` object, about 70 bytes per file, written once per version).

Run: ``PYTHONPATH=. python benchmarks/registry_versions.py [--files N] [--size BYTES]``
with the registry test environment (see tests/workload/registry).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.workload.registry.harness import chown_tree, start_registry


def remote_objects(root: Path) -> dict[str, int]:
    return {str(p): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def uploaded(before: dict[str, int], after: dict[str, int]) -> tuple[int, int]:
    """Bytes of new objects: (file contents, .dir manifests)."""
    new = {path: size for path, size in after.items() if path not in before}
    manifests = sum(size for path, size in new.items() if path.endswith(".dir"))
    return sum(new.values()) - manifests, manifests


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=4096, help="bytes per file")
    parser.add_argument("--changed", type=float, default=0.01, help="fraction rewritten")
    args = parser.parse_args()
    rng = random.Random(7)  # noqa: S311 - picks files to change, reproducibly
    with start_registry() as running:
        source = running.source_dir("benchmark")
        for i in range(args.files):
            path = source / f"shard-{i % 100:02d}" / f"sample-{i:05d}.bin"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(os.urandom(args.size))
        chown_tree(source)
        s3_root = Path(running.settings.s3_root)
        figures = []
        changed_bytes = args.files * args.size
        for name in ("v1", "v2"):
            if name == "v2":
                picked = rng.sample(range(args.files), max(1, int(args.files * args.changed)))
                for i in picked:
                    path = source / f"shard-{i % 100:02d}" / f"sample-{i:05d}.bin"
                    path.write_bytes(os.urandom(args.size))
                chown_tree(source)
                changed_bytes = len(picked) * args.size
            before = remote_objects(s3_root)
            start = time.perf_counter()
            result = running.workload("create-version", "--source", str(source))
            elapsed = time.perf_counter() - start
            if result.exit_code != 0:
                raise SystemExit(f"{name} failed: {result.stderr.strip()}")
            contents, manifest = uploaded(before, remote_objects(s3_root))
            figures.append((name, elapsed, contents, manifest, changed_bytes))
    print(f"dataset: {args.files} files x {args.size} B; v2 rewrites {args.changed:.0%} of them")
    print(
        f"{'version':8} {'time s':>8} {'changed B':>11} {'contents B':>11} "
        f"{'manifest B':>11} {'uploaded B':>11} {'upl/changed':>11}"
    )
    for name, elapsed, contents, manifest, changed in figures:
        total = contents + manifest
        print(
            f"{name:8} {elapsed:8.2f} {changed:11d} {contents:11d} {manifest:11d} "
            f"{total:11d} {total / changed:11.3f}"
        )
    v1, v2 = figures
    print(f"v2 time / v1 time: {v2[1] / v1[1]:.3f} (target <= 0.20)")
    print(
        f"v2 uploaded / changed bytes: {(v2[2] + v2[3]) / v2[4]:.3f} (target <= 1.10); "
        f"contents only: {v2[2] / v2[4]:.3f}"
    )


if __name__ == "__main__":
    main()
