"""A packed charm is self-contained: everything it imports at runtime is inside its tree.

``charmcraft pack`` cannot run on this machine, so these tests build each charm's tree with the
packing recipe (tools/stage_charm.py), add the ``venv/`` that charmcraft would add (here: links to
the installed files of exactly the distributions the charm's requirements pull in), and import
``src/charm.py`` from it in a clean interpreter (``python -I``) whose ``sys.path`` is what the
packed charm's dispatch gives it (``PYTHONPATH=lib:venv ./src/charm.py``): the tree's ``src/``,
``lib/`` and ``venv/``, and the standard library. Every module that loads must come from the tree
or the standard library. Imports inside functions (the lazy ones that keep hooks fast) are found
by reading every file's imports, and imported too.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

REPO_ROOT = Path(__file__).resolve().parents[2]
STAGE_SCRIPT = REPO_ROOT / "tools" / "stage_charm.py"
REPO_CODE_DIRS = (REPO_ROOT / "lib", REPO_ROOT / "charms")
CHARMS = sorted(path.parent.name for path in (REPO_ROOT / "charms").glob("*/charmcraft.yaml"))
STDLIB_DIRS = tuple(Path(sysconfig.get_path(name)).resolve() for name in ("stdlib", "platstdlib"))

# Runs in the clean interpreter: replace sys.path, import the charm, then every module the
# tree's files import anywhere, and report every module that was loaded and from where.
PROBE = r"""
import importlib, json, sys, traceback

spec = json.loads(sys.argv[1])
sys.path[:] = spec["sys_path"]
already_loaded = set(sys.modules)
result = {"import_error": None, "unresolved": []}
try:
    import charm
except BaseException:
    result["import_error"] = traceback.format_exc()
for module_name, names in spec["imports"]:
    try:
        module = importlib.import_module(module_name)
        for name in names:
            if not hasattr(module, name):
                importlib.import_module(f"{module_name}.{name}")
    except BaseException as error:
        result["unresolved"].append(f"{module_name} {names}: {error!r}")
result["modules"] = {
    name: {
        "file": getattr(module, "__file__", None),
        "path": [str(entry) for entry in (getattr(module, "__path__", None) or [])],
    }
    for name, module in list(sys.modules.items())
    if name not in already_loaded
}
with open(spec["report"], "w") as report:
    json.dump(result, report)
"""


def stage(charm: str, out_dir: Path) -> Path:
    """Build the charm's tree with the packing recipe's own command line."""
    subprocess.run(
        [sys.executable, str(STAGE_SCRIPT), charm, "--out", str(out_dir)],
        check=True,
        capture_output=True,
    )
    return out_dir / charm


def _requirements(tree: Path) -> Iterator[Requirement]:
    """The charm's requirements.txt lines, plus the packages its charmcraft.yaml parts add."""
    for line in (tree / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            yield Requirement(line)
    parts = yaml.safe_load((tree / "charmcraft.yaml").read_text()).get("parts", {})
    for part in parts.values():
        for key in ("charm-python-packages", "charm-binary-python-packages"):
            yield from (Requirement(package) for package in part.get(key, []))


def required_distributions(tree: Path) -> list[importlib.metadata.Distribution]:
    """The charm's requirements and all their dependencies, as installed here (same versions)."""
    pending = list(_requirements(tree))
    seen: dict[str, importlib.metadata.Distribution] = {}
    done: set[tuple[str, frozenset[str]]] = set()
    while pending:
        requirement = pending.pop()
        key = (requirement.name.lower().replace("_", "-"), frozenset(requirement.extras))
        if key in done:
            continue
        done.add(key)
        try:
            distribution = importlib.metadata.distribution(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            pytest.fail(f"{requirement.name} is not installed: install requirements/unit.txt")
        if not requirement.specifier.contains(distribution.version, prereleases=True):
            pytest.fail(f"{requirement} is wanted but {distribution.version} is installed here")
        seen[key[0]] = distribution
        for dependency in map(Requirement, distribution.requires or []):
            if dependency.marker is None or any(
                dependency.marker.evaluate({"extra": extra})
                for extra in requirement.extras or {""}
            ):
                pending.append(dependency)
    return list(seen.values())


def install_venv(tree: Path) -> None:
    """Add the ``venv/`` charmcraft would add: the required distributions' files, linked."""
    venv = tree / "venv"
    for distribution in required_distributions(tree):
        for entry in distribution.files or []:
            if entry.parts[0] == ".." or "__pycache__" in entry.parts:
                continue  # scripts outside site-packages; bytecode
            link = venv / entry
            if not link.exists():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(Path(str(distribution.locate_file(entry))).resolve())


def dispatch_sys_path(tree: Path) -> list[str]:
    """The packed charm's sys.path: src/ (the script's folder), lib/, venv/, the stdlib."""
    stdlib = [
        entry
        for entry in sys.path
        if entry.startswith(sys.base_prefix)
        and not {"site-packages", "dist-packages"} & set(Path(entry).parts)
    ]
    return [str(tree / "src"), str(tree / "lib"), str(tree / "venv"), *stdlib]


class _ImportCollector(ast.NodeVisitor):
    """Every ``import`` in a module, at any depth, except those under ``if TYPE_CHECKING:``."""

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


def tree_imports(tree: Path) -> list[tuple[str, list[str]]]:
    """The imports written anywhere in the charm's own Python files (src/ and lib/)."""
    imports: list[tuple[str, list[str]]] = []
    for root in (tree / "src", tree / "lib"):
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            is_package = parts[-1] == "__init__"
            package = ".".join(parts[:-1])
            collector = _ImportCollector(package if is_package or len(parts) > 1 else "")
            collector.visit(ast.parse(path.read_text(), filename=str(path)))
            imports.extend(collector.imports)
    return imports


def probe(tree: Path, tmp_path: Path) -> dict:
    """Import the charm from ``tree`` as the packed charm would; return what it loaded."""
    install_venv(tree)
    report = tmp_path / f"{tree.name}-report.json"
    spec = {
        "sys_path": dispatch_sys_path(tree),
        "imports": tree_imports(tree),
        "report": str(report),
    }
    completed = subprocess.run(
        # -I: no PYTHONPATH (tox sets it to the repository's lib/), no user site, no cwd;
        # -B: leave the tree as packed.
        [sys.executable, "-I", "-B", "-c", PROBE, json.dumps(spec)],
        cwd=tree,  # Juju runs dispatch from the charm's folder
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(report.read_text())


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _origin_problem(name: str, locations: list[Path], tree: Path) -> str | None:
    """Why a loaded module would not be there in the packed charm, if it would not."""
    if any(_inside(location, code) for location in locations for code in REPO_CODE_DIRS):
        return f"{name} is imported from the repository, not the packed tree"
    for location in locations:
        in_stdlib = any(_inside(location.resolve(), folder) for folder in STDLIB_DIRS) and not {
            "site-packages",
            "dist-packages",
        } & set(location.resolve().parts)
        if not (_inside(location, tree) or in_stdlib):
            return f"{name} is loaded from {location}: outside the packed tree"
    return None  # no location at all: a built-in, or a module an extension module created


def packing_problems(tree: Path, report: dict) -> list[str]:
    """Why the packed charm would not run on its own; empty when it would."""
    if report["import_error"]:
        return [f"`import charm` fails in the packed tree:\n{report['import_error']}"]
    problems = [f"an import written in the tree fails: {entry}" for entry in report["unresolved"]]
    tree = Path(os.path.abspath(tree))
    for name, origin in sorted(report["modules"].items()):
        # Not resolved: venv/ links to the installed files, and inside venv/ is what counts.
        paths = [origin["file"]] if origin["file"] else []
        locations = [Path(os.path.abspath(entry)) for entry in [*paths, *origin["path"]]]
        problem = _origin_problem(name, locations, tree)
        if problem:
            problems.append(problem)
    return problems


@pytest.mark.parametrize("charm", CHARMS)
def test_packed_charm_imports_only_its_tree_and_the_stdlib(charm: str, tmp_path: Path):
    tree = stage(charm, tmp_path / "build")
    report = probe(tree, tmp_path)
    assert packing_problems(tree, report) == []
    # The charm really ran from the tree: its own module and the shared lib were loaded there.
    modules = report["modules"]
    assert Path(modules["charm"]["file"]) == tree / "src" / "charm.py"
    if "mlops_charms" in modules:
        assert _inside(Path(modules["mlops_charms"]["file"]), tree / "lib" / "mlops_charms")


@pytest.mark.parametrize("charm", CHARMS)
def test_staged_tree_has_what_charmcraft_packs_and_nothing_else(charm: str, tmp_path: Path):
    tree = stage(charm, tmp_path / "build")
    source = REPO_ROOT / "charms" / charm
    assert (tree / "charmcraft.yaml").read_bytes() == (source / "charmcraft.yaml").read_bytes()
    assert os.access(tree / "src" / "charm.py", os.X_OK), "dispatch execs src/charm.py"
    for part in yaml.safe_load((tree / "charmcraft.yaml").read_text()).get("parts", {}).values():
        for requirements_file in part.get("charm-requirements", []):
            assert (tree / requirements_file).is_file(), f"{requirements_file} is not staged"
    shared = REPO_ROOT / "lib" / "mlops_charms"
    for path in shared.rglob("*.py"):
        staged = tree / "lib" / "mlops_charms" / path.relative_to(shared)
        assert staged.read_bytes() == path.read_bytes(), f"{staged} differs from {path}"
    assert not (tree / "tests").exists()
    assert not list(tree.rglob("__pycache__"))


def _drop_shared_lib(tree: Path) -> None:
    shutil.rmtree(tree / "lib" / "mlops_charms")


def _import_undeclared_distribution(tree: Path) -> None:
    with (tree / "src" / "charm.py").open("a") as charm:
        charm.write("\nimport pluggy  # pytest's, not a charm requirement\n")


def _lazily_import_undeclared_distribution(tree: Path) -> None:
    with (tree / "src" / "charm.py").open("a") as charm:
        charm.write("\n\ndef _never_called():\n    import iniconfig\n")


def _reach_into_repository(tree: Path) -> None:
    shutil.rmtree(tree / "lib" / "mlops_charms")
    charm = tree / "src" / "charm.py"
    lines = charm.read_text().splitlines(keepends=True)
    first_import = next(
        index
        for index, line in enumerate(lines)
        if line.startswith(("import ", "from ")) and "__future__" not in line
    )
    lines.insert(first_import, f"import sys; sys.path.append({str(REPO_ROOT / 'lib')!r})\n")
    charm.write_text("".join(lines))


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (_drop_shared_lib, "No module named 'mlops_charms'"),
        (_import_undeclared_distribution, "No module named 'pluggy'"),
        (_lazily_import_undeclared_distribution, "No module named 'iniconfig'"),
        (_reach_into_repository, "mlops_charms is imported from the repository"),
    ],
)
def test_broken_tree_is_reported(breakage, expected: str, tmp_path: Path):
    """The check catches what would break a packed charm: it is not vacuous."""
    tree = stage(CHARMS[0], tmp_path / "build")
    breakage(tree)
    problems = packing_problems(tree, probe(tree, tmp_path))
    assert any(expected in problem for problem in problems), problems
