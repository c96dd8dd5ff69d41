"""What a rock holds, read from its staged ``rockcraft.yaml`` without building it.

rockcraft is a snap and cannot run here, so the rock's file tree is derived from its recipe:

- the base (``ubuntu@24.04``): the files of the Essential and Priority-required Debian packages
  of this machine (the same layout as Ubuntu's), and the users and groups of base-passwd;
- ``stage-packages`` (with their dependencies): ``dpkg -L`` of the packages of the same name
  installed here (tools/install-test-deps.sh installs them). A name with Ubuntu's Python in it
  (``libpython3.12``) is looked up with the distro's Python instead, and every path with
  ``python3.N`` in it is read as the rock's ``python3.12``;
- a ``python`` plugin part: a venv at the rock's root, so the console scripts of its
  ``python-packages`` (and of the part's own source project) land in ``/bin``. The scripts are
  read from the installed distributions of the same name and version on this machine: this
  environment, the Label Studio venv (``$LABEL_STUDIO_VENV``) and the repository's tox envs;
- a ``nil`` part's explicit venvs in ``override-build``: ``python3 -m venv DIR`` and
  ``DIR/bin/pip install PKGS`` lines (``.`` or ``.[extras]``: the part's own project), where
  the venv lands where a ``cp`` into ``$CRAFT_PART_INSTALL`` puts it; a ``cp`` of a file of
  the part's source puts that file there; ``mkdir -p`` lines in ``override-build`` and
  ``override-prime`` add folders;
- ``run-user``: rockcraft's ``_daemon_`` user and group.

Paths are compared usr-merged (``/bin`` is ``/usr/bin``, ``/sbin`` is ``/usr/sbin``, ...).
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import posixpath
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parents[2]
# The Python of each base's python3 package: what a venv in the rock is built with.
BASE_PYTHON = {"ubuntu@24.04": "3.12", "ubuntu@22.04": "3.10"}
_PYTHON_VERSIONED = re.compile(r"python3\.\d+")
_USR_MERGED = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
_DEB_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]*")
INSTALL_VAR = re.compile(r"\$\{?CRAFT_PART_INSTALL\}?")
_OWN_PROJECT = re.compile(r"\.(?:\[([\w,\s-]*)\])?")  # ``.`` or ``.[extra,...]``


def usr_merged(path: str) -> str:
    """``path`` normalised, with ``/bin``, ``/sbin``, ``/lib``... read as under ``/usr``."""
    path = posixpath.normpath("/" + path.lstrip("/"))
    top = path.split("/", 2)[1]
    return "/usr" + path if top in _USR_MERGED else path


def _python_paths(path: str, rock_python: str) -> str:
    """``path`` in the rock: its only Python is ``rock_python`` (Debian's is another)."""
    return _PYTHON_VERSIONED.sub(f"python{rock_python}", path)


@functools.cache
def distro_python() -> str:
    """The version of this machine's distro Python (``/usr/bin/python3``), such as ``3.11``."""
    return subprocess.run(
        ["/usr/bin/python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


class RockRecipeError(AssertionError):
    """The recipe uses something this model does not read, or names what is not here."""


# --- Debian packages -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DebianPackages:
    """The Debian packages installed here: their dependencies and their files."""

    depends: dict[str, list[list[str]]]  # package -> alternatives of each dependency
    provided_by: dict[str, list[str]]  # virtual package -> packages providing it
    base: tuple[str, ...]  # Essential: yes, or Priority: required

    @classmethod
    @functools.cache
    def installed(cls) -> DebianPackages:
        fields = "\t".join(
            f"${{{name}}}"
            for name in (
                "Package", "db:Status-Status", "Essential", "Priority", "Pre-Depends",
                "Depends", "Provides",
            )
        )  # fmt: skip
        output = subprocess.run(
            ["dpkg-query", "-W", "-f", fields + "\n"], capture_output=True, text=True, check=True
        ).stdout
        depends: dict[str, list[list[str]]] = {}
        provided_by: dict[str, list[str]] = {}
        base = []
        for line in output.splitlines():
            name, status, essential, priority, pre_depends, plain_depends, provides = line.split(
                "\t"
            )
            if status != "installed":
                continue
            depends[name] = [
                [_package_name(alternative) for alternative in clause.split("|")]
                for clause in f"{pre_depends},{plain_depends}".split(",")
                if clause.strip()
            ]
            for virtual in provides.split(","):
                if virtual.strip():
                    provided_by.setdefault(_package_name(virtual), []).append(name)
            if essential == "yes" or priority == "required":
                base.append(name)
        return cls(depends, provided_by, tuple(sorted(base)))

    def resolve(self, name: str) -> str | None:
        """The installed package that satisfies ``name``, if any."""
        if name in self.depends:
            return name
        providers = self.provided_by.get(name, [])
        return providers[0] if providers else None

    def closure(self, names: Iterable[str]) -> set[str]:
        """``names`` and everything they depend on, as installed here."""
        found: set[str] = set()
        pending = list(names)
        while pending:
            name = pending.pop()
            if name in found:
                continue
            found.add(name)
            for alternatives in self.depends.get(name, []):
                chosen = next(filter(None, map(self.resolve, alternatives)), None)
                if chosen is not None:
                    pending.append(chosen)
        return found

    @staticmethod
    def files(packages: Iterable[str]) -> set[str]:
        packages = sorted(packages)
        if not packages:
            return set()
        output = subprocess.run(
            ["dpkg", "-L", *packages], capture_output=True, text=True, check=True
        ).stdout
        return {line for line in output.splitlines() if line.startswith("/")}


def _package_name(clause: str) -> str:
    return clause.strip().split(" ", 1)[0].split(":", 1)[0]


def local_package_name(name: str, rock_python: str) -> str:
    """The name of the package installed here that stands for the rock's ``name``."""
    packages = DebianPackages.installed()
    if packages.resolve(name) is not None:
        return name
    if f"python{rock_python}" in name:
        return name.replace(f"python{rock_python}", f"python{distro_python()}")
    if name.endswith("t64"):
        # Ubuntu 24.04 renamed libraries for the 64-bit time_t transition; Debian 12 did not.
        return name.removesuffix("t64")
    return name


# --- Python distributions ------------------------------------------------------------------------


def _environments() -> list[list[str]]:
    """Where to read installed distributions from, in order (see the module docstring)."""
    environments = [sys.path]
    label_studio = Path(os.environ.get("LABEL_STUDIO_VENV", "/opt/venv-labelling"))
    for venv in [label_studio, *sorted((REPO_ROOT / ".tox").glob("*"))]:
        environments += [[str(site)] for site in sorted(venv.glob("lib/python3*/site-packages"))]
    return environments


@functools.cache
def _distributions() -> list[dict[str, importlib.metadata.Distribution]]:
    indexes = []
    for path in _environments():
        index: dict[str, importlib.metadata.Distribution] = {}
        for distribution in importlib.metadata.distributions(path=path):
            name = distribution.metadata["Name"]
            if name:
                index.setdefault(canonicalize_name(name), distribution)
        indexes.append(index)
    return indexes


def find_distribution(requirement: Requirement) -> tuple[int, importlib.metadata.Distribution]:
    """An installed distribution that satisfies ``requirement``: ``(environment, dist)``."""
    name = canonicalize_name(requirement.name)
    for environment, index in enumerate(_distributions()):
        distribution = index.get(name)
        if distribution is not None and requirement.specifier.contains(
            distribution.version, prereleases=True
        ):
            if distribution.read_text("RECORD") is None:
                # pip's legacy ``setup.py install`` (an .egg-info) lists no programs it installed.
                raise RockRecipeError(
                    f"{requirement} in {distribution.locate_file('')} was installed without a "
                    f"wheel, so its programs are not recorded: tools/install-test-deps.sh "
                    f"installs it with a pip that builds one"
                )
            return environment, distribution
    raise RockRecipeError(
        f"{requirement} is not installed in this environment, $LABEL_STUDIO_VENV or the "
        f"repository's tox envs, so its programs cannot be read: `tox -e lint` (or the "
        f"workload envs) installs the rocks' Python packages, tools/install-test-deps.sh the "
        f"Label Studio venv"
    )


def distribution_closure(
    requirements: Iterable[Requirement],
) -> list[importlib.metadata.Distribution]:
    """The distributions ``requirements`` install, with their dependencies.

    Markers are read for this machine's Python, which installed the distributions read here:
    what they pulled in here is what is here to read.
    """
    marker_environment = cast("dict[str, str]", default_environment())
    found: dict[str, importlib.metadata.Distribution] = {}
    pending: list[tuple[Requirement, int | None]] = [
        (requirement, None) for requirement in requirements
    ]
    while pending:
        requirement, environment = pending.pop()
        name = canonicalize_name(requirement.name)
        if name in found:
            continue
        index = _distributions()[environment] if environment is not None else {}
        if name in index and requirement.specifier.contains(index[name].version, prereleases=True):
            distribution = index[name]
        else:
            environment, distribution = find_distribution(requirement)
        found[name] = distribution
        for line in distribution.requires or []:
            dependency = Requirement(line)
            extras = requirement.extras or {""}
            if dependency.marker is None or any(
                dependency.marker.evaluate({**marker_environment, "extra": extra})
                for extra in extras
            ):
                pending.append((dependency, environment))
    return list(found.values())


@dataclass(frozen=True)
class SourceProject:
    """A part's own Python project (its source's pyproject.toml)."""

    name: str
    requirements: tuple[Requirement, ...]
    scripts: tuple[str, ...]
    extras: dict[str, tuple[Requirement, ...]] = field(default_factory=dict)

    @classmethod
    def read(cls, source: Path) -> SourceProject | None:
        pyproject = source / "pyproject.toml"
        if not pyproject.is_file():
            return None
        project = tomllib.loads(pyproject.read_text()).get("project", {})
        optional = project.get("optional-dependencies", {})
        return cls(
            name=canonicalize_name(project.get("name", "")),
            requirements=tuple(Requirement(line) for line in project.get("dependencies", [])),
            scripts=(*project.get("scripts", {}), *project.get("gui-scripts", {})),
            extras={
                extra: tuple(Requirement(line) for line in lines)
                for extra, lines in optional.items()
            },
        )

    def with_extras(self, extras: Iterable[str]) -> list[Requirement]:
        """Its requirements with those of ``extras`` (an extra naming the project: its own)."""
        found = list(self.requirements)
        pending = list(extras)
        seen: set[str] = set()
        while pending:
            extra = pending.pop()
            if extra in seen:
                continue
            if extra not in self.extras:
                raise RockRecipeError(f"{self.name} has no extra {extra!r}")
            seen.add(extra)
            for requirement in self.extras[extra]:
                if canonicalize_name(requirement.name) == self.name:
                    pending += list(requirement.extras)
                else:
                    found.append(requirement)
        return found


def venv_files(
    venv: str, distributions: Iterable[importlib.metadata.Distribution], rock_python: str
) -> set[str]:
    """The files of a venv at ``venv`` holding ``distributions``, built with ``rock_python``."""
    site = f"{venv}/lib/python{rock_python}/site-packages"
    files = {f"{venv}/pyvenv.cfg", site}
    files |= {
        f"{venv}/bin/{name}"
        for name in ("python", "python3", f"python{rock_python}", "pip", "pip3", "activate")
    }
    for distribution in distributions:
        for entry in distribution.files or []:
            files.add(_python_paths(posixpath.normpath(f"{site}/{entry}"), rock_python))
        for entry_point in distribution.entry_points:
            if entry_point.group in ("console_scripts", "gui_scripts"):
                files.add(f"{venv}/bin/{entry_point.name}")
    return files


# --- the rock ------------------------------------------------------------------------------------


@dataclass
class Rock:
    """A rock as its staged recipe describes it."""

    name: str
    version: str
    folder: Path
    recipe: dict
    python: str
    files: set[str] = field(default_factory=set)  # usr-merged paths of files and folders
    users: set[str] = field(default_factory=set)
    groups: set[str] = field(default_factory=set)

    @functools.cached_property
    def folders(self) -> set[str]:
        parents = set()
        for path in self.files:
            while path not in ("/", ""):
                path = posixpath.dirname(path)
                parents.add(path)
        return parents

    def holds(self, path: str) -> bool:
        path = usr_merged(path)
        return path in self.files or path in self.folders

    @property
    def image(self) -> str:
        return f"{self.name}:{self.version}"

    @classmethod
    def read(cls, folder: Path) -> Rock:
        recipe = yaml.safe_load((folder / "rockcraft.yaml").read_text())
        base = recipe.get("build-base") if recipe.get("base") == "bare" else recipe["base"]
        if base not in BASE_PYTHON:
            raise RockRecipeError(f"{folder.name}: base {base!r} is not modelled here")
        rock = cls(recipe["name"], str(recipe["version"]), folder, recipe, BASE_PYTHON[base])
        if recipe.get("base") != "bare":
            rock._add_base()
        run_user = recipe.get("run-user")
        if run_user:
            rock.users.add(run_user)
            rock.groups.add(run_user)
        for name, part in (recipe.get("parts") or {}).items():
            rock._add_part(name, part or {})
        return rock

    def _add(self, paths: Iterable[str]) -> None:
        self.files |= {usr_merged(_python_paths(path, self.python)) for path in paths}

    def _add_base(self) -> None:
        packages = DebianPackages.installed()
        self._add(packages.files(packages.base))
        for kind, names in (("passwd", self.users), ("group", self.groups)):
            master = Path(f"/usr/share/base-passwd/{kind}.master")
            names |= {line.split(":", 1)[0] for line in master.read_text().splitlines() if line}

    def _add_part(self, name: str, part: dict) -> None:
        for unmodelled in ("organize", "stage", "prime", "stage-snaps", "overlay-script"):
            if part.get(unmodelled):
                raise RockRecipeError(f"{self.name}: part {name} uses {unmodelled}: not modelled")
        self._add_stage_packages(name, part.get("stage-packages") or [])
        source = self._part_source(part)
        build = part.get("override-build")
        runs_plugin = build is None or "craftctl default" in build
        if part.get("plugin") == "python" and runs_plugin:
            requirements = [Requirement(line) for line in part.get("python-packages") or []]
            project = SourceProject.read(source) if source else None
            if project:
                requirements += project.requirements
                self._add(f"/bin/{script}" for script in project.scripts)
            self._add(venv_files("", distribution_closure(requirements), self.python))
        if build:
            self._add_override_build(name, build, source)
        for line in _script_lines(part.get("override-prime") or ""):
            self._add(_made_folders(line, relative_to="/"))

    def _part_source(self, part: dict) -> Path | None:
        source = part.get("source")
        if not isinstance(source, str) or "://" in source:
            return None
        return (self.folder / source).resolve()

    def _add_stage_packages(self, part: str, names: list[str]) -> None:
        packages = DebianPackages.installed()
        local = []
        for name in names:
            if not _DEB_NAME.fullmatch(name):
                raise RockRecipeError(f"{self.name}: part {part}: stage-package {name!r}")
            resolved = packages.resolve(local_package_name(name, self.python))
            if resolved is None:
                raise RockRecipeError(
                    f"{self.name}: stage-package {name} is not installed here, so its files "
                    f"cannot be read: tools/install-test-deps.sh installs it"
                )
            local.append(resolved)
        self._add(packages.files(packages.closure(local)))

    def _add_override_build(self, part: str, script: str, source: Path | None) -> None:
        venvs: dict[str, _Venv] = {}
        for line in _script_lines(script):
            words = shlex.split(line)
            if len(words) >= 4 and words[1:3] == ["-m", "venv"] and "python" in words[0]:
                venvs.setdefault(posixpath.normpath(words[-1]), _Venv())
            elif words and words[0].endswith("/bin/pip") and words[1:2] == ["install"]:
                venv = venvs.get(posixpath.dirname(posixpath.dirname(words[0])))
                if venv is None:
                    raise RockRecipeError(f"{self.name}: part {part}: pip of an unknown venv")
                venv.install(_positional(words[2:]), source, f"{self.name}: part {part}")
            elif words and words[0] == "cp" and INSTALL_VAR.match(words[-1]):
                destination = INSTALL_VAR.sub("", words[-1]) or "/"
                for copied in _positional(words[1:-1]):
                    venv = venvs.get(posixpath.normpath(copied))
                    if venv is not None:
                        self._add(venv.files(_landing(copied, destination), self.python))
                    elif source is not None and (source / copied).is_file():
                        self._add([_landing(copied, destination)])  # a file of the source
            self._add(_made_folders(line, relative_to=None))


@dataclass
class _Venv:
    """A venv an ``override-build`` script makes and fills."""

    requirements: list[Requirement] = field(default_factory=list)
    scripts: tuple[str, ...] = ()  # of the part's own project, when it is installed

    def install(self, words: Iterable[str], source: Path | None, where: str) -> None:
        for word in words:
            project_word = _OWN_PROJECT.fullmatch(word)
            if project_word is None:
                self.requirements.append(Requirement(word))
                continue
            project = SourceProject.read(source) if source else None
            if project is None:
                raise RockRecipeError(f"{where} installs . but its source has no pyproject.toml")
            extras = [e.strip() for e in (project_word.group(1) or "").split(",") if e.strip()]
            self.requirements += project.with_extras(extras)
            self.scripts += project.scripts

    def files(self, landing: str, python: str) -> set[str]:
        distributions = distribution_closure(self.requirements)
        return venv_files(landing, distributions, python) | {
            f"{landing}/bin/{name}" for name in self.scripts
        }


def _landing(copied: str, destination: str) -> str:
    """Where ``cp -a copied destination`` puts ``copied``."""
    if destination.endswith("/"):
        return posixpath.normpath(posixpath.join(destination, posixpath.basename(copied)))
    return posixpath.normpath(destination)


def _script_lines(script: str) -> Iterator[str]:
    for line in script.replace("\\\n", " ").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            yield line


def _positional(words: list[str]) -> Iterator[str]:
    """The words of a command that are not options (options with a value: -c/-r FILE)."""
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word in ("-c", "-r", "--constraint", "--requirement", "-t", "--target"):
            skip = True
        elif not word.startswith("-"):
            yield word


def _made_folders(line: str, relative_to: str | None) -> Iterator[str]:
    """Folders a ``mkdir -p`` line makes in the rock (into the install dir, or the prime dir)."""
    words = shlex.split(line)
    if words[:1] != ["mkdir"]:
        return
    for word in _positional(words[1:]):
        if INSTALL_VAR.match(word):
            yield INSTALL_VAR.sub("", word) or "/"
        elif relative_to is not None and not word.startswith("/"):
            yield posixpath.join(relative_to, word)
