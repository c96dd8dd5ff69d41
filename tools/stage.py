#!/usr/bin/env python3
"""The packing recipe: build the self-contained project folder of a charm or a rock.

``charmcraft pack`` and ``rockcraft pack`` see only their project folder, but this repository
shares code across folders: the charms import ``lib/mlops_charms``, and the rocks install the
stack's ``workload/`` package. This script stages such a folder under ``build/``:

- a charm, ``build/<charm>/``: ``charms/<charm>/`` (without tests and caches) plus, under its
  own ``lib/``, the shared modules its ``src/`` imports, transitively (imports inside functions
  count; those under ``if TYPE_CHECKING:`` do not), and nothing else. The ``charm`` plugin's
  dispatch runs ``PYTHONPATH=lib:venv ./src/charm.py``, so ``lib/`` and ``src/`` are all the
  charm's code needs besides its locked ``requirements.txt``. A machine charm that installs
  the stack's workload package on its machine carries it too: the repository folders
  ``CHARM_TREES`` names for it are copied under the same name (``build/training/workload/``),
  and the ``charm`` plugin packs every top-level folder of the project.
- a rock, ``build/rocks/<rock>/``: ``rocks/<rock>/`` plus every local part ``source`` the
  recipe names that is not in that folder, copied from the repository root under the same
  name (``source: workload`` gets a copy of ``workload/``). A source that climbs out of the
  folder (``../``) is left alone: it cannot work in a rock build, and tests/packing says so.

    python tools/stage.py charm tracking-k8s   # stage build/tracking-k8s/
    python tools/stage.py charm --all --pack   # stage and pack every charm (charmcraft snap)
    python tools/stage.py rock --all           # stage build/rocks/<rock>/ for every rock
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath

REPO_ROOT = Path(__file__).resolve().parent.parent
CHARMS_DIR = REPO_ROOT / "charms"
ROCKS_DIR = REPO_ROOT / "rocks"
SHARED_LIB = REPO_ROOT / "lib"
BUILD_DIR = REPO_ROOT / "build"
ENTRYPOINT = "src/charm.py"

# Never part of a packed charm or rock: development-only folders and caches, at any depth.
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
    "*.egg-info",
    "*.charm",
    "*.rock",
)
_IGNORED_AT_CHARM_ROOT = {"tests"}
# Repository folders a charm carries whole, by charm: what a machine charm installs itself.
CHARM_TREES: dict[str, tuple[str, ...]] = {
    "data-versioning": ("workload",),
    "labelling": ("workload",),
    "tracking": ("workload",),
    "training": ("workload",),
}
# craft-parts' own work folders, left in a project folder by a destructive-mode build.
_IGNORED_AT_ROCK_ROOT = {"parts", "stage", "prime"}


def charm_names() -> list[str]:
    """Every charm in the repository: the folders under charms/ with a charmcraft.yaml."""
    return sorted(path.parent.name for path in CHARMS_DIR.glob("*/charmcraft.yaml"))


def rock_names() -> list[str]:
    """Every rock in the repository: the folders under rocks/ with a rockcraft.yaml."""
    return sorted(path.parent.name for path in ROCKS_DIR.glob("*/rockcraft.yaml"))


# --- which shared modules a charm imports ------------------------------------------------------


class ImportCollector(ast.NodeVisitor):
    """Every ``import`` in a module, at any depth, except those under ``if TYPE_CHECKING:``.

    ``imports`` holds ``(module, names)`` pairs: ``from a.b import c, d`` is ``("a.b",
    ["c", "d"])`` (each name may be a submodule), ``import a.b`` is ``("a.b", [])``. Relative
    imports are resolved against ``package``, the package the module is in.
    """

    def __init__(self, package: str):
        self.package = package
        self.imports: list[tuple[str, list[str]]] = []

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
        if name == "TYPE_CHECKING":
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.imports.extend((alias.name, []) for alias in node.names)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            base = importlib.util.resolve_name("." * node.level + base, self.package)
        if base != "__future__":
            self.imports.append((base, [alias.name for alias in node.names if alias.name != "*"]))


def module_imports(path: Path, package: str) -> list[tuple[str, list[str]]]:
    """The imports written anywhere in the Python file ``path`` (a module of ``package``)."""
    collector = ImportCollector(package)
    collector.visit(ast.parse(path.read_text(), filename=str(path)))
    return collector.imports


def _shared_module_file(name: str, lib: Path) -> Path | None:
    """The file under ``lib`` that defines module ``name``, if ``lib`` has one."""
    base = lib.joinpath(*name.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _package_of(path: Path, lib: Path) -> str:
    parts = path.relative_to(lib).with_suffix("").parts
    return ".".join(parts[:-1])


def shared_modules(sources: Iterable[Path], lib: Path = SHARED_LIB) -> set[Path]:
    """The files under ``lib`` that the Python files ``sources`` import, transitively.

    A module's parent packages come with it (importing ``a.b`` runs ``a/__init__.py``), and
    their imports are followed too.
    """
    pending: list[tuple[Path, str]] = [(path, "") for path in sources]
    found: set[Path] = set()
    while pending:
        path, package = pending.pop()
        for module, names in module_imports(path, package):
            for name in (module, *(f"{module}.{attribute}" for attribute in names)):
                parts = name.split(".")
                for depth in range(1, len(parts) + 1):
                    file = _shared_module_file(".".join(parts[:depth]), lib)
                    if file is not None and file not in found:
                        found.add(file)
                        pending.append((file, _package_of(file, lib)))
    return found


def _charm_sources(charm_dir: Path) -> list[Path]:
    return sorted(
        path for path in (charm_dir / "src").rglob("*.py") if "__pycache__" not in path.parts
    )


# --- staging ------------------------------------------------------------------------------------


def _fresh(tree: Path) -> None:
    if tree.exists():
        shutil.rmtree(tree)
    tree.parent.mkdir(parents=True, exist_ok=True)


def _copy_shared_lib(charm: str, tree: Path) -> None:
    """Copy into ``tree/lib`` the shared modules the charm's code imports, and only those."""
    modules = shared_modules(_charm_sources(tree))
    for module in sorted(modules):
        relative = module.relative_to(SHARED_LIB)
        destination = tree / "lib" / relative
        if destination.exists():
            raise SystemExit(f"{charm}: lib/{relative} exists in the charm itself; remove it")
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(module, destination)
    # Data files next to a shipped package's modules travel with it.
    for package in {module.parent for module in modules if module.name == "__init__.py"}:
        for data in package.iterdir():
            if data.is_file() and data.suffix not in (".py", ".pyc"):
                shutil.copy2(data, tree / "lib" / data.relative_to(SHARED_LIB))


def stage_charm(charm: str, out_dir: Path = BUILD_DIR) -> Path:
    """Build ``out_dir/<charm>/``, the charm's project tree with its shared modules inside it."""
    source = CHARMS_DIR / charm
    if not (source / "charmcraft.yaml").is_file():
        raise SystemExit(f"no charm named {charm!r}: choose one of {', '.join(charm_names())}")
    tree = out_dir.resolve() / charm
    _fresh(tree)

    def ignore(directory: str, names: list[str]) -> set[str]:
        ignored = set(_IGNORED_ANYWHERE(directory, names))
        if Path(directory) == source:
            ignored |= _IGNORED_AT_CHARM_ROOT & set(names)
        return ignored

    shutil.copytree(source, tree, ignore=ignore)
    _copy_shared_lib(charm, tree)
    for carried in CHARM_TREES.get(charm, ()):
        if (tree / carried).exists():
            raise SystemExit(f"{charm}: {carried}/ exists in the charm itself; remove it")
        shutil.copytree(REPO_ROOT / carried, tree / carried, ignore=_IGNORED_ANYWHERE)
    # dispatch execs ./src/charm.py directly: the entrypoint must be executable.
    entrypoint = tree / ENTRYPOINT
    entrypoint.chmod(entrypoint.stat().st_mode | 0o111)
    return tree


def local_part_sources(recipe: dict) -> Iterator[tuple[str, str]]:
    """``(part, source)`` for every part of a craft recipe whose source is a local path."""
    for name, part in (recipe.get("parts") or {}).items():
        source = (part or {}).get("source")
        if not isinstance(source, str) or "://" in source or source.startswith("git@"):
            continue
        source_type = (part or {}).get("source-type")
        if source_type not in (None, "local"):
            continue
        yield name, source


def stage_rock(rock: str, out_dir: Path = BUILD_DIR) -> Path:
    """Build ``out_dir/rocks/<rock>/``: the rock's folder and the repository trees it names."""
    source = ROCKS_DIR / rock
    recipe_path = source / "rockcraft.yaml"
    if not recipe_path.is_file():
        raise SystemExit(f"no rock named {rock!r}: choose one of {', '.join(rock_names())}")
    tree = out_dir.resolve() / "rocks" / rock
    _fresh(tree)

    def ignore(directory: str, names: list[str]) -> set[str]:
        ignored = set(_IGNORED_ANYWHERE(directory, names))
        if Path(directory) == source:
            ignored |= _IGNORED_AT_ROCK_ROOT & set(names)
        return ignored

    shutil.copytree(source, tree, ignore=ignore)
    import yaml  # here: staging a charm needs nothing beyond the standard library

    recipe = yaml.safe_load(recipe_path.read_text())
    for _, part_source in local_part_sources(recipe):
        relative = PurePosixPath(part_source)
        if relative.is_absolute() or ".." in relative.parts or (tree / relative).exists():
            continue  # in the rock's own folder already, or unusable (tests/packing says so)
        repository_tree = REPO_ROOT / relative
        if repository_tree.is_dir():
            shutil.copytree(repository_tree, tree / relative, ignore=_IGNORED_ANYWHERE)
    return tree


# --- packing with the real charmcraft (a snap, in LXD): what tools/deploy.sh ships ---------------


def pack_charm(tree: Path) -> Path:
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
    """Stage (and for charms with ``--pack``, pack) the charms or rocks named."""
    parser = argparse.ArgumentParser(description="Stage charm and rock project folders.")
    parser.add_argument("kind", choices=("charm", "rock"), help="what to stage")
    parser.add_argument("names", nargs="*", help="folder names under charms/ or rocks/")
    parser.add_argument("--all", action="store_true", help="every charm or every rock")
    parser.add_argument(
        "--out", type=Path, default=BUILD_DIR, help="output folder (default build/)"
    )
    parser.add_argument(
        "--pack", action="store_true", help="charms only: then run charmcraft pack"
    )
    args = parser.parse_args(argv)
    everything = charm_names() if args.kind == "charm" else rock_names()
    names = everything if args.all else args.names
    if not names:
        parser.error("name at least one, or --all")
    if args.pack and args.kind != "charm":
        parser.error("--pack packs charms; tools/deploy.sh packs the staged rocks")
    for name in names:
        if args.kind == "charm":
            tree = stage_charm(name, args.out)
            print(f"staged charm {name} in {tree}")
            if args.pack:
                print(f"packed {name}: {pack_charm(tree)}")
        else:
            print(f"staged rock {name} in {stage_rock(name, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
