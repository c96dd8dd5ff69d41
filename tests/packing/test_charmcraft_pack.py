"""Every charm packs with the real charmcraft, and its ``.charm`` runs under Python 3.12.

Slow (minutes per charm) and root-only: run by ``tox -e pack``, which sets ``MLOPS_PACK=1``;
elsewhere (``tox -e unit``) these tests skip. tools/pack_charms.py stages each charm and packs
it with ``charmcraft pack --destructive-mode`` under an Ubuntu 24.04 os-release in a private
mount namespace, with a Python 3.12 as ``python3`` and no C or Rust compiler on PATH; that
device's output is checked here and thrown away, never shipped.

Each ``.charm`` is then opened: ``dispatch`` and the hooks, the metadata charmcraft generates,
the manifest's base; a ``venv/`` holding exactly the charm's lock, built for CPython 3.12; the
shared modules the staged tree had; and ``src/charm.py`` imported by Python 3.12 from the
unpacked charm alone (tests/packing/charm_probe.py): its ``src/``, ``lib/``, ``venv/`` and the
standard library.
"""

from __future__ import annotations

import os
import re
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from packaging.utils import canonicalize_name

from tests.packing.charm_probe import Interpreter, packing_problems, probe, read_lock
from tools.pack_charms import PYTHON_VERSION, find_python, pack
from tools.stage import stage_charm

REPO_ROOT = Path(__file__).resolve().parents[2]
CHARMS = sorted(path.parent.name for path in (REPO_ROOT / "charms").glob("*/charmcraft.yaml"))
PIP_CACHE_ENV = "MLOPS_PACK_PIP_CACHE"  # a pip cache only this device's builds fill

pytestmark = pytest.mark.skipif(
    os.environ.get("MLOPS_PACK", "") in ("", "0"),
    reason="packs with charmcraft for minutes, as root: run `tox -e pack`",
)


@dataclass(frozen=True)
class Packed:
    charm: str
    path: Path
    seconds: float
    unpacked: Path
    staged: Path


@pytest.fixture(scope="module")
def python312() -> Interpreter:
    return Interpreter.of(find_python())


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory, python312: Interpreter):
    """``packed(charm)``: the charm packed once for this module, and unpacked."""
    out = tmp_path_factory.mktemp("packed")
    pip_cache = Path(os.environ[PIP_CACHE_ENV]) if os.environ.get(PIP_CACHE_ENV) else None
    done: dict[str, Packed] = {}

    def get(charm: str) -> Packed:
        if charm not in done:
            result = pack(charm, out, Path(python312.executable), pip_cache)
            unpacked = out / "unpacked" / charm
            with zipfile.ZipFile(result.path) as archive:
                archive.extractall(unpacked)
            staged = stage_charm(charm, out / "reference")
            done[charm] = Packed(charm, result.path, result.seconds, unpacked, staged)
            size = result.path.stat().st_size / 1e6
            print(f"\n{charm}: packed in {result.seconds:.0f} s, {size:.1f} MB")
        return done[charm]

    return get


def _recipe(charm: str) -> dict:
    return yaml.safe_load((REPO_ROOT / "charms" / charm / "charmcraft.yaml").read_text())


@pytest.mark.parametrize("charm", CHARMS)
def test_charm_packs_without_compilers_and_has_dispatch_and_metadata(charm: str, packed):
    charm_file = packed(charm)
    with zipfile.ZipFile(charm_file.path) as archive:
        names = set(archive.namelist())
        dispatch = archive.getinfo("dispatch")
        assert stat.S_IMODE(dispatch.external_attr >> 16) & 0o111, "dispatch is not executable"
        script = archive.read("dispatch").decode()
        for hook in ("install", "start", "upgrade-charm"):
            assert f"hooks/{hook}" in names, f"no hooks/{hook}"
        metadata = yaml.safe_load(archive.read("metadata.yaml"))
        manifest = yaml.safe_load(archive.read("manifest.yaml"))
    assert "PYTHONPATH=lib:venv" in script and "./src/charm.py" in script, script
    assert metadata["name"] == charm
    recipe = _recipe(charm)
    assert metadata.get("assumes") == recipe.get("assumes")
    assert set(metadata.get("containers", {})) == set(recipe.get("containers", {}))
    for generated, key in (("config.yaml", "config"), ("actions.yaml", "actions")):
        assert (generated in names) == bool(recipe.get(key)), generated
    assert manifest["charmcraft-version"]
    assert [(base["name"], base["channel"]) for base in manifest["bases"]] == [("ubuntu", "24.04")]


@pytest.mark.parametrize("charm", CHARMS)
def test_packed_venv_is_the_lock_built_for_python_312(charm: str, packed):
    venv = packed(charm).unpacked / "venv"
    shipped = {}
    for dist_info in venv.glob("*.dist-info"):
        name, version = dist_info.name.removesuffix(".dist-info").rsplit("-", 1)
        shipped[canonicalize_name(name)] = version
    shipped.pop("pip", None)  # the charm plugin's own, in every charm's venv
    assert shipped == read_lock(REPO_ROOT / "charms" / charm / "requirements.txt")
    tag = f"cpython-{PYTHON_VERSION[0]}{PYTHON_VERSION[1]}-"
    wrong = [
        str(path.relative_to(venv))
        for path in venv.rglob("*.so")
        if tag not in path.name and not path.name.endswith(".abi3.so")
    ]
    assert wrong == [], f"extension modules not built for Python 3.12: {wrong}"


@pytest.mark.parametrize("charm", CHARMS)
def test_only_binary_packages_bring_compiled_code(charm: str, packed):
    """Nothing was compiled in the build: every extension module came in a wheel it allowed."""
    venv = packed(charm).unpacked / "venv"
    part = next(part for part in _recipe(charm)["parts"].values() if part.get("plugin") == "charm")
    binary = {canonicalize_name(name) for name in part.get("charm-binary-python-packages", [])}
    compiled_by = {}
    for record in venv.glob("*.dist-info/RECORD"):
        name = canonicalize_name(record.parent.name.removesuffix(".dist-info").rsplit("-", 1)[0])
        for line in record.read_text().splitlines():
            if line.split(",", 1)[0].endswith(".so"):
                compiled_by.setdefault(name, []).append(line.split(",", 1)[0])
    assert set(compiled_by) <= binary, compiled_by


@pytest.mark.parametrize("charm", CHARMS)
def test_packed_charm_ships_the_staged_code(charm: str, packed):
    charm_file = packed(charm)

    def code(root: Path) -> dict[str, bytes]:
        return {
            str(path.relative_to(root)): path.read_bytes()
            for folder in ("src", "lib")
            for path in (root / folder).rglob("*")
            if path.is_file() and "__pycache__" not in path.parts
        }

    assert code(charm_file.unpacked) == code(charm_file.staged)


@pytest.mark.parametrize("charm", CHARMS)
def test_packed_charm_imports_under_python_312(
    charm: str, packed, python312: Interpreter, tmp_path: Path
):
    tree = packed(charm).unpacked
    report = probe(tree, tmp_path, python312)
    assert tuple(report["version"]) == PYTHON_VERSION
    assert packing_problems(tree, report, python312) == []
    assert Path(report["modules"]["charm"]["file"]) == tree / "src" / "charm.py"
    loaded_from_venv = {
        re.split(r"[./]", str(Path(origin["file"]).relative_to(tree / "venv")))[0]
        for origin in report["modules"].values()
        if origin["file"] and Path(origin["file"]).is_relative_to(tree / "venv")
    }
    assert {"ops", "pydantic_core"} <= loaded_from_venv
