"""A staged charm is self-contained: everything it imports at runtime is inside its tree.

These tests build each charm's tree with the packing recipe (tools/stage.py), add the ``venv/``
charmcraft would add from the charm's lock (here: links to the installed files of exactly the
distributions and versions ``requirements.txt`` pins), and import ``src/charm.py`` from it the
way the packed charm's dispatch does (tests/packing/charm_probe.py). ``tox -e pack`` does the
same with a real ``charmcraft pack`` and Python 3.12 (tests/packing/test_charmcraft_pack.py).

They also hold the lock to its rules: every direct dependency (``requirements.in``) is in it at
its version and imported by the charm; it is closed under the dependencies its distributions
declare; and the compiled ones are the binary packages of the charm's recipe.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.packing.charm_probe import (
    Interpreter,
    packing_problems,
    probe,
    read_lock,
    this_interpreter,
    tree_imports,
)
from tools.stage import shared_modules

REPO_ROOT = Path(__file__).resolve().parents[2]
STAGE_SCRIPT = REPO_ROOT / "tools" / "stage.py"
CHARMS = sorted(path.parent.name for path in (REPO_ROOT / "charms").glob("*/charmcraft.yaml"))
CHARM_PYTHON = "3.12"  # Ubuntu 24.04's: the lock's markers are evaluated for it


@pytest.fixture(scope="module")
def interpreter() -> Interpreter:
    return this_interpreter()


def stage(charm: str, out_dir: Path) -> Path:
    """Build the charm's tree with the packing recipe's own command line."""
    subprocess.run(
        [sys.executable, str(STAGE_SCRIPT), "charm", charm, "--out", str(out_dir)],
        check=True,
        capture_output=True,
    )
    return out_dir / charm


def locked_distributions(tree: Path) -> list[importlib.metadata.Distribution]:
    """The installed distributions of exactly the charm's lock (same versions)."""
    distributions = []
    for name, version in read_lock(tree / "requirements.txt").items():
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            pytest.fail(
                f"{name}=={version} is locked but not installed: install requirements/unit.txt"
            )
        if distribution.version != version:
            pytest.fail(
                f"{tree.name} locks {name}=={version} but {distribution.version} is installed "
                "here: requirements/unit.txt installs the charms' locks"
            )
        distributions.append(distribution)
    return distributions


def install_venv(tree: Path) -> None:
    """Add the ``venv/`` charmcraft would add from the lock: the distributions' files, linked."""
    venv = tree / "venv"
    for distribution in locked_distributions(tree):
        for entry in distribution.files or []:
            if entry.parts[0] == ".." or "__pycache__" in entry.parts:
                continue  # scripts outside site-packages; bytecode
            link = venv / entry
            if not link.exists():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(Path(str(distribution.locate_file(entry))).resolve())


def probe_staged(tree: Path, report_dir: Path, interpreter: Interpreter) -> dict:
    install_venv(tree)
    return probe(tree, report_dir, interpreter)


@pytest.mark.parametrize("charm", CHARMS)
def test_packed_charm_imports_only_its_tree_and_the_stdlib(
    charm: str, tmp_path: Path, interpreter: Interpreter
):
    tree = stage(charm, tmp_path / "build")
    report = probe_staged(tree, tmp_path, interpreter)
    assert packing_problems(tree, report, interpreter) == []
    # The charm really ran from the tree: its own module and the shared lib were loaded there.
    modules = report["modules"]
    assert Path(modules["charm"]["file"]) == tree / "src" / "charm.py"
    if "mlops_charms" in modules:
        shipped = tree / "lib" / "mlops_charms"
        assert Path(modules["mlops_charms"]["file"]).is_relative_to(shipped)


@pytest.mark.parametrize("charm", CHARMS)
def test_staged_tree_has_what_charmcraft_packs_and_nothing_else(charm: str, tmp_path: Path):
    tree = stage(charm, tmp_path / "build")
    source = REPO_ROOT / "charms" / charm
    assert (tree / "charmcraft.yaml").read_bytes() == (source / "charmcraft.yaml").read_bytes()
    assert os.access(tree / "src" / "charm.py", os.X_OK), "dispatch execs src/charm.py"
    for part in yaml.safe_load((tree / "charmcraft.yaml").read_text()).get("parts", {}).values():
        for requirements_file in part.get("charm-requirements", []):
            assert (tree / requirements_file).is_file(), f"{requirements_file} is not staged"
    for staged in (tree / "lib").rglob("*.py"):
        shared = REPO_ROOT / "lib" / staged.relative_to(tree / "lib")
        assert staged.read_bytes() == shared.read_bytes(), f"{staged} differs from {shared}"
    assert not (tree / "tests").exists()
    assert not list(tree.rglob("__pycache__"))


@pytest.mark.parametrize("charm", CHARMS)
def test_every_shipped_shared_module_is_imported_by_the_charm(charm: str, tmp_path: Path):
    """No shared module the charm does not use travels with it (nor the libraries it needs)."""
    tree = stage(charm, tmp_path / "build")
    imported = {module for module, _ in tree_imports(tree)} | {
        f"{module}.{name}" for module, names in tree_imports(tree) for name in names
    }
    for path in (tree / "lib").rglob("*.py"):
        parts = path.relative_to(tree / "lib").with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        used = module in imported or any(name.startswith(f"{module}.") for name in imported)
        assert used, f"{charm} ships lib/{path.relative_to(tree / 'lib')} but never imports it"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_shared_modules_follow_imports_in_functions_but_not_type_checking(tmp_path: Path):
    lib = tmp_path / "lib"
    _write(lib / "shared" / "__init__.py", "")
    _write(lib / "shared" / "base.py", "import json\n")
    _write(lib / "shared" / "lazy.py", "from . import base\n")
    _write(lib / "shared" / "deep.py", "")
    _write(lib / "shared" / "typing_only.py", "import heavy_library\n")
    _write(lib / "shared" / "unused.py", "import heavy_library\n")
    _write(lib / "shared" / "sub" / "__init__.py", "from shared import deep\n")
    _write(lib / "shared" / "sub" / "leaf.py", "")
    source = _write(
        tmp_path / "src" / "charm.py",
        "from typing import TYPE_CHECKING\n"
        "import ops\n"
        "from shared.sub import leaf\n"
        "if TYPE_CHECKING:\n"
        "    from shared import typing_only\n"
        "def hook():\n"
        "    from shared import lazy\n",
    )
    found = {path.relative_to(lib).as_posix() for path in shared_modules([source], lib)}
    assert found == {
        "shared/__init__.py",
        "shared/sub/__init__.py",
        "shared/sub/leaf.py",
        "shared/deep.py",  # imported by a parent package's __init__
        "shared/lazy.py",  # imported inside a function
        "shared/base.py",  # imported by a shipped module, relatively
    }


# --- the lock ------------------------------------------------------------------------------------


def _direct_requirements(charm: str) -> list[Requirement]:
    lines = (REPO_ROOT / "charms" / charm / "requirements.in").read_text().splitlines()
    return [Requirement(line.split("#", 1)[0]) for line in lines if line.split("#", 1)[0].strip()]


def _charm_part(charm: str) -> dict:
    recipe = yaml.safe_load((REPO_ROOT / "charms" / charm / "charmcraft.yaml").read_text())
    return next(part for part in recipe["parts"].values() if part.get("plugin") == "charm")


@pytest.mark.parametrize("charm", CHARMS)
def test_lock_holds_every_direct_dependency_at_its_version(charm: str):
    lock = read_lock(REPO_ROOT / "charms" / charm / "requirements.txt")
    for requirement in _direct_requirements(charm):
        name = canonicalize_name(requirement.name)
        assert name in lock, f"{requirement} is not in the lock: tox -e lock"
        assert requirement.specifier.contains(lock[name]), f"{requirement}: lock has {lock[name]}"


@pytest.mark.parametrize("charm", CHARMS)
def test_lock_is_closed_under_the_dependencies_it_declares(charm: str):
    lock = read_lock(REPO_ROOT / "charms" / charm / "requirements.txt")
    environment = {**default_environment(), "python_version": CHARM_PYTHON, "extra": ""}
    missing = []
    for name in lock:
        for line in importlib.metadata.distribution(name).requires or []:
            requirement = Requirement(line)
            if requirement.marker is not None and not requirement.marker.evaluate(environment):
                continue
            locked = lock.get(canonicalize_name(requirement.name))
            if locked is None or not requirement.specifier.contains(locked, prereleases=True):
                missing.append(f"{name} needs {requirement}, the lock has {locked}")
    assert missing == [], "regenerate the lock: tox -e lock"


# Direct dependencies a charm uses through another one it imports, not by an import of its own:
# (charm, distribution) -> (the distribution the charm imports that uses it, why it is pinned).
USED_THROUGH = {
    ("training", "jinja2"): (
        "charmhelpers",
        "charmhelpers.core.templating.render renders src/templates/job.service.j2 with it: "
        "the template is written in its syntax, so its version is the charm's choice",
    ),
}


@pytest.mark.parametrize("charm", CHARMS)
def test_every_direct_dependency_is_imported_by_the_charm(charm: str, tmp_path: Path):
    """A charm without a relation does not carry its library (nor its compiled dependencies)."""
    tree = stage(charm, tmp_path / "build")
    imported = {module.split(".", 1)[0] for module, _ in tree_imports(tree)}
    providers = importlib.metadata.packages_distributions()
    for requirement in _direct_requirements(charm):
        name = canonicalize_name(requirement.name)
        if (charm, name) in USED_THROUGH:
            user, _why = USED_THROUGH[charm, name]
            assert user in imported, f"{charm} pins {name} for {user}, which it does not import"
            continue
        modules = {
            module
            for module, distributions in providers.items()
            if name in map(canonicalize_name, distributions)
        }
        assert modules & imported, f"{charm} depends on {name} but imports none of {modules}"


@pytest.mark.parametrize("charm", CHARMS)
def test_lock_is_strict_and_its_compiled_packages_are_binary(charm: str):
    part = _charm_part(charm)
    assert part.get("charm-strict-dependencies") is True
    assert part.get("charm-requirements") == ["requirements.txt"]
    lock = read_lock(REPO_ROOT / "charms" / charm / "requirements.txt")
    binary = {canonicalize_name(name) for name in part.get("charm-binary-python-packages", [])}
    assert binary <= lock.keys(), f"binary packages not in the lock: {binary - lock.keys()}"
    for name in lock:
        files = importlib.metadata.distribution(name).files or []
        # PyYAML's C extension is optional: built without a compiler, it is pure Python.
        compiled = name != "pyyaml" and any(entry.suffix == ".so" for entry in files)
        assert not compiled or name in binary, (
            f"{name} has compiled code but is built from source: add it to "
            "charm-binary-python-packages (a build instance has no compiler)"
        )


# --- the checks are not vacuous ------------------------------------------------------------------


def _drop_shared_lib(tree: Path) -> None:
    shutil.rmtree(tree / "lib" / "mlops_charms")


def _import_undeclared_distribution(tree: Path) -> None:
    with (tree / "src" / "charm.py").open("a") as charm:
        charm.write("\nimport pluggy  # pytest's, not a charm requirement\n")


def _lazily_import_undeclared_distribution(tree: Path) -> None:
    with (tree / "src" / "charm.py").open("a") as charm:
        charm.write("\n\ndef _never_called():\n    import iniconfig\n")


def _import_unlocked_charm_library(tree: Path) -> None:
    # dpcharmlibs-interfaces is installed here (other charms lock it), not in this lock.
    with (tree / "src" / "charm.py").open("a") as charm:
        charm.write("\n\ndef _never_called():\n    import dpcharmlibs.interfaces\n")


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
    ("charm", "breakage", "expected"),
    [
        (CHARMS[0], _drop_shared_lib, "No module named 'mlops_charms'"),
        (CHARMS[0], _import_undeclared_distribution, "No module named 'pluggy'"),
        (CHARMS[0], _lazily_import_undeclared_distribution, "No module named 'iniconfig'"),
        ("data-versioning-k8s", _import_unlocked_charm_library, "No module named 'dpcharmlibs'"),
        (CHARMS[0], _reach_into_repository, "mlops_charms is imported from the repository"),
    ],
)
def test_broken_tree_is_reported(
    charm: str, breakage, expected: str, tmp_path: Path, interpreter: Interpreter
):
    """The check catches what would break a packed charm: it is not vacuous."""
    tree = stage(charm, tmp_path / "build")
    breakage(tree)
    problems = packing_problems(tree, probe_staged(tree, tmp_path, interpreter), interpreter)
    assert any(expected in problem for problem in problems), problems
