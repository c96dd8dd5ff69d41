#!/usr/bin/env python3
"""The packing recipe: build a charm's self-contained project tree, and optionally pack it.

A charm here imports the repository's shared package ``lib/mlops_charms``, which lives outside
the charm's folder. ``charmcraft pack`` only sees the project directory, so this script stages
``build/<charm>/``: a copy of ``charms/<charm>/`` (without tests and caches) with
``lib/mlops_charms`` copied into the tree's own ``lib/``. Packed with the ``charm`` plugin, the
dispatch script runs ``PYTHONPATH=lib:venv ./src/charm.py``, so ``lib/`` and ``src/`` (the
script's own directory) are all the charm's code needs besides its ``requirements.txt``.

    python tools/stage_charm.py tracking-k8s            # stage build/tracking-k8s/
    python tools/stage_charm.py tracking-k8s --pack     # and pack build/tracking-k8s.charm
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CHARMS_DIR = REPO_ROOT / "charms"
SHARED_PACKAGES = ("mlops_charms",)  # packages under lib/ that every charm ships
ENTRYPOINT = "src/charm.py"

# Never part of a packed charm: development-only folders and caches, at any depth.
_IGNORED_ANYWHERE = shutil.ignore_patterns(
    "__pycache__",
    "*.pyc",
    ".pytest_cache",
    ".ruff_cache",
    ".mypy_cache",
    ".tox",
    ".venv",
    "venv",
    "build",
    "*.charm",
)
_IGNORED_AT_CHARM_ROOT = {"tests"}


def charm_names() -> list[str]:
    """Every charm in the repository: the folders under charms/ with a charmcraft.yaml."""
    return sorted(path.parent.name for path in CHARMS_DIR.glob("*/charmcraft.yaml"))


def stage(charm: str, out_dir: Path) -> Path:
    """Build ``out_dir/<charm>/``, the charm's project tree with the shared lib inside it."""
    source = CHARMS_DIR / charm
    if not (source / "charmcraft.yaml").is_file():
        raise SystemExit(f"no charm named {charm!r}: choose one of {', '.join(charm_names())}")
    tree = out_dir.resolve() / charm
    if tree.exists():
        shutil.rmtree(tree)

    def ignore(directory: str, names: list[str]) -> set[str]:
        ignored = set(_IGNORED_ANYWHERE(directory, names))
        if Path(directory) == source:
            ignored |= _IGNORED_AT_CHARM_ROOT & set(names)
        return ignored

    shutil.copytree(source, tree, ignore=ignore)
    for package in SHARED_PACKAGES:
        destination = tree / "lib" / package
        if destination.exists():
            raise SystemExit(f"{charm}: lib/{package} exists in the charm itself; remove it")
        shutil.copytree(REPO_ROOT / "lib" / package, destination, ignore=_IGNORED_ANYWHERE)
    # dispatch execs ./src/charm.py directly: the entrypoint must be executable.
    entrypoint = tree / ENTRYPOINT
    entrypoint.chmod(entrypoint.stat().st_mode | 0o111)
    return tree


def pack(tree: Path) -> Path:
    """Run ``charmcraft pack`` on a staged tree; return ``<out>/<charm>.charm``.

    charmcraft names the file after the platform (``tracking-k8s_amd64.charm``); the copy
    under a fixed name is what bundle.yaml points at.
    """
    if shutil.which("charmcraft") is None:
        raise SystemExit("charmcraft is not installed: sudo snap install charmcraft --classic")
    out_dir = tree.parent
    charm = tree.name
    for old in out_dir.glob(f"{charm}_*.charm"):
        old.unlink()
    subprocess.run(
        ["charmcraft", "pack", "--project-dir", str(tree), "--output", str(out_dir)],
        check=True,
    )
    packed = sorted(out_dir.glob(f"{charm}_*.charm"))
    if len(packed) != 1:
        raise SystemExit(f"expected one {charm}_*.charm in {out_dir}, found {len(packed)}")
    target = out_dir / f"{charm}.charm"
    shutil.copyfile(packed[0], target)
    return target


def main(argv: list[str] | None = None) -> int:
    """Stage (and with ``--pack``, pack) the charms named on the command line."""
    parser = argparse.ArgumentParser(
        description="Stage (and pack) charms with the shared lib inside."
    )
    parser.add_argument("charms", nargs="*", help="charm folder names under charms/")
    parser.add_argument("--all", action="store_true", help="every charm under charms/")
    parser.add_argument(
        "--out", type=Path, default=REPO_ROOT / "build", help="output folder (default build/)"
    )
    parser.add_argument("--pack", action="store_true", help="then run charmcraft pack")
    args = parser.parse_args(argv)
    charms = charm_names() if args.all else args.charms
    if not charms:
        parser.error("name at least one charm, or --all")
    for charm in charms:
        tree = stage(charm, args.out)
        print(f"staged {charm} in {tree}")
        if args.pack:
            print(f"packed {charm}: {pack(tree)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
