"""Import a charm's ``src/charm.py`` the way its packed dispatch does, and say what broke.

The packed charm's dispatch runs ``PYTHONPATH=lib:venv ./src/charm.py``, so its ``sys.path`` is
the tree's ``src/`` (the script's folder), ``lib/``, ``venv/`` and the standard library. The probe
runs a clean interpreter (``python -I -S``) with exactly that ``sys.path``, imports the charm, then
every module the tree's own files import anywhere (imports inside functions, which keep hooks
fast, too), and reports every module that was loaded and from where. Every module must come
from the tree or the standard library.

A charm that carries charmhelpers is probed under an Ubuntu 24.04 os-release in a private mount
namespace (``tools.pack_charms.ubuntu_namespace_command``): its ``core.host`` refuses to import
on any other distribution, such as this Debian. Root only: elsewhere such a probe skips.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tools.pack_charms import UBUNTU_2404_OS_RELEASE, ubuntu_namespace_command
from tools.stage import module_imports

REPO_ROOT = Path(__file__).resolve().parents[2]
REPO_CODE_DIRS = (REPO_ROOT / "lib", REPO_ROOT / "charms")
_SITE_DIRS = {"site-packages", "dist-packages"}

# Runs in the clean interpreter: replace sys.path, import the charm, then every module the
# tree's files import anywhere, and report every module that was loaded and from where.
PROBE = r"""
import importlib, json, sys, traceback

spec = json.loads(sys.argv[1])
sys.path[:] = spec["sys_path"]
already_loaded = set(sys.modules)
result = {"import_error": None, "unresolved": [], "version": list(sys.version_info[:2])}
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

_DESCRIBE = r"""
import json, sys, sysconfig
print(json.dumps({
    "path": sys.path,
    "stdlib": [sysconfig.get_path("stdlib"), sysconfig.get_path("platstdlib")],
    "version": list(sys.version_info[:2]),
}))
"""


@dataclass(frozen=True)
class Interpreter:
    """A Python that runs the probe: its executable and its standard library."""

    executable: str
    version: tuple[int, int]
    stdlib_path: tuple[str, ...]  # its sys.path entries that hold the standard library
    stdlib_dirs: tuple[Path, ...]

    @classmethod
    def of(cls, executable: str | Path) -> Interpreter:
        described = json.loads(
            subprocess.run(
                [str(executable), "-I", "-c", _DESCRIBE],
                capture_output=True,
                text=True,
                check=True,
                timeout=60,
            ).stdout
        )
        stdlib_path = tuple(
            entry
            for entry in described["path"]
            if entry and not _SITE_DIRS & set(Path(entry).parts)
        )
        return cls(
            executable=str(executable),
            version=tuple(described["version"]),  # type: ignore[arg-type]
            stdlib_path=stdlib_path,
            stdlib_dirs=tuple(Path(entry).resolve() for entry in described["stdlib"]),
        )


def this_interpreter() -> Interpreter:
    return Interpreter.of(sys.executable)


def dispatch_sys_path(tree: Path, interpreter: Interpreter) -> list[str]:
    """The packed charm's sys.path: src/ (the script's folder), lib/, venv/, the stdlib."""
    return [str(tree / "src"), str(tree / "lib"), str(tree / "venv"), *interpreter.stdlib_path]


def tree_imports(tree: Path) -> list[tuple[str, list[str]]]:
    """The imports written anywhere in the charm's own Python files (src/ and lib/)."""
    imports: list[tuple[str, list[str]]] = []
    for root in (tree / "src", tree / "lib"):
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            is_package = parts[-1] == "__init__"
            package = ".".join(parts[:-1]) if is_package or len(parts) > 1 else ""
            imports.extend(module_imports(path, package))
    return imports


def probe(tree: Path, report_dir: Path, interpreter: Interpreter) -> dict:
    """Import the charm from ``tree`` as the packed charm would; return what it loaded."""
    report = report_dir / f"{tree.name}-report.json"
    spec = {
        "sys_path": dispatch_sys_path(tree, interpreter),
        "imports": tree_imports(tree),
        "report": str(report),
    }
    # -I: no PYTHONPATH (tox sets it to the repository's lib/), no user site, no cwd;
    # -S: no .pth files of the probing interpreter's own site-packages (setuptools' there
    # would put its distutils shim in place from outside the tree); -B: leave the tree as packed.
    command = [interpreter.executable, "-I", "-S", "-B", "-c", PROBE, json.dumps(spec)]
    if needs_ubuntu(tree):
        if os.geteuid() != 0:
            pytest.skip(f"{tree.name} carries charmhelpers: its probe needs root (a namespace)")
        os_release = report_dir / f"{tree.name}-os-release"
        os_release.write_text(UBUNTU_2404_OS_RELEASE)
        command = ubuntu_namespace_command(os_release, command)
    completed = subprocess.run(
        command,
        cwd=tree,  # Juju runs dispatch from the charm's folder
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(report.read_text())


def needs_ubuntu(tree: Path) -> bool:
    """Whether the tree's venv carries charmhelpers (which imports only on Ubuntu)."""
    return (tree / "venv" / "charmhelpers").is_dir()


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _origin_problem(
    name: str, locations: list[Path], tree: Path, interpreter: Interpreter
) -> str | None:
    """Why a loaded module would not be there in the packed charm, if it would not."""
    if any(_inside(location, code) for location in locations for code in REPO_CODE_DIRS):
        return f"{name} is imported from the repository, not the packed tree"
    for location in locations:
        resolved = location.resolve()
        in_stdlib = any(
            _inside(resolved, folder) for folder in interpreter.stdlib_dirs
        ) and not _SITE_DIRS & set(resolved.parts)
        if not (_inside(location, tree) or in_stdlib):
            return f"{name} is loaded from {location}: outside the packed tree"
    return None  # no location at all: a built-in, or a module an extension module created


def packing_problems(tree: Path, report: dict, interpreter: Interpreter) -> list[str]:
    """Why the packed charm would not run on its own; empty when it would."""
    if report["import_error"]:
        return [f"`import charm` fails in the packed tree:\n{report['import_error']}"]
    problems = [f"an import written in the tree fails: {entry}" for entry in report["unresolved"]]
    tree = Path(os.path.abspath(tree))
    for name, origin in sorted(report["modules"].items()):
        # Not resolved: venv/ may link to installed files, and inside venv/ is what counts.
        paths = [origin["file"]] if origin["file"] else []
        locations = [Path(os.path.abspath(entry)) for entry in [*paths, *origin["path"]]]
        problem = _origin_problem(name, locations, tree, interpreter)
        if problem:
            problems.append(problem)
    return problems


def read_lock(requirements: Path) -> dict[str, str]:
    """A charm's lock: ``{canonical name: version}``, every line ``name==version``."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = {}
    for number, line in enumerate(requirements.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        specifiers = list(requirement.specifier)
        assert len(specifiers) == 1 and specifiers[0].operator == "==", (
            f"{requirements}:{number}: {line!r} is not pinned with =="
        )
        pins[canonicalize_name(requirement.name)] = specifiers[0].version
    return pins
