"""A workload on a machine, for every machine charm: apt, venvs, files, units, their status.

Each step records what it installed (a stamp under the charm's state folder) and does nothing
when that has not changed: a hook pays for an install once, not at every ``config-changed``.
A venv's packages come from PyPI, from a mirror (``pip-index-url``), or, on an air-gapped site,
only from a ``wheelhouse`` resource (a ``.tar.gz`` of wheels: ``pip --no-index``).
"""

from __future__ import annotations

import hashlib
import logging
import socket
import subprocess
import tarfile
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import ops
from charmhelpers.core import host
from charmhelpers.fetch import apt_install

from mlops_charms import cos_agent, systemd

logger = logging.getLogger(__name__)

WHEELHOUSE_RESOURCE = "wheelhouse"


def check_pip_index_url(url: str) -> None:
    """Raise ValueError unless ``url`` (the ``pip-index-url`` option) is empty or an HTTP URL."""
    if url and not url.startswith(("http://", "https://")):
        raise ValueError("pip-index-url: must be an http:// or https:// URL")


def workload_events(charm: ops.CharmBase) -> tuple[ops.BoundEvent, ...]:
    """The events after which a machine charm reconciles its workload (install and service).

    With a ``cos-agent`` endpoint, its agent's arrival too: the reconcile publishes to it.
    """
    cos = charm.meta.relations.get(cos_agent.ENDPOINT)
    return (
        charm.on.install,
        charm.on.upgrade_charm,
        charm.on.config_changed,
        charm.on.start,
        charm.on.update_status,
        charm.on.leader_elected,
        *((charm.on[cos_agent.ENDPOINT].relation_joined,) if cos else ()),
    )


def unit_address(model: ops.Model, endpoint: str) -> str:
    """Where this unit is reached over ``endpoint``: its ingress address, else the FQDN."""
    binding = model.get_binding(endpoint)
    address = binding.network.ingress_address if binding else None
    return str(address) if address else socket.getfqdn()


def workload_status(
    model: ops.Model,
    storage: str,
    *,
    install_problem: str | None,
    installed: Path,
    installing: str,
    service_problem: str | None,
) -> ops.StatusBase | None:
    """A machine charm's own status, or None: storage, install (``installed`` is there), service.

    ``installing`` names the workload in the status while ``installed`` is not there yet.
    """
    if not model.storages[storage]:
        return ops.WaitingStatus(f"waiting for the {storage} storage")
    if install_problem:
        return ops.BlockedStatus(f"install failed: {install_problem}")
    if not installed.exists():
        return ops.MaintenanceStatus(f"installing {installing}")
    if service_problem:
        return ops.BlockedStatus(service_problem)
    return None


def wheelhouse(model: ops.Model) -> Path | None:
    """The ``wheelhouse`` resource (an air-gapped site's wheels), or None: not attached.

    An empty file is how an operator says "none" (a resource cannot be detached).
    """
    try:
        path = model.resources.fetch(WHEELHOUSE_RESOURCE)
    except (ops.ModelError, NameError):
        return None
    return path if path.stat().st_size > 0 else None


class InstallError(Exception):
    """A step failed; the message is one line for the status."""


def install_problem(install: Callable[[], object]) -> str | None:
    """Run ``install``; None, or why it failed in one line (logged) for the status."""
    try:
        install()
    except (InstallError, OSError) as error:
        problem = str(error).splitlines()[0]
        logger.error("install: %s", problem)
        return problem
    return None


@dataclass(frozen=True)
class Stamps:
    """What each install step last installed, one file per step under ``folder``."""

    folder: Path

    def done(self, name: str, fingerprint: str) -> bool:
        try:
            return (self.folder / name).read_text() == fingerprint
        except OSError:
            return False

    def record(self, name: str, fingerprint: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / name).write_text(fingerprint)


def ensure_apt_packages(stamps: Stamps, packages: Sequence[str]) -> None:
    """Install the apt ``packages``; once for the same list."""
    fingerprint = " ".join(packages)
    if not stamps.done("apt", fingerprint):
        try:
            apt_install(list(packages), fatal=True)
        except subprocess.CalledProcessError as error:
            raise InstallError(f"apt-get install {fingerprint} failed: {error}") from None
        stamps.record("apt", fingerprint)


def ensure_system_user(name: str) -> None:
    """A system user without a login shell for a workload to run as; once."""
    if not host.user_exists(name):
        try:
            host.adduser(name, shell="/usr/sbin/nologin", system_user=True)  # noqa: S604
        except subprocess.CalledProcessError as error:
            raise InstallError(f"could not add the system user {name}: {error}") from None


def write_if_changed(path: str, content: str, *, owner: str, perms: int) -> bool:
    """Write ``content`` to ``path`` (owner's group too) unless it is there; whether it wrote.

    Ownership and mode are set either way (charmhelpers' ``write_file``).
    """
    try:
        changed = Path(path).read_text() != content
    except (OSError, UnicodeDecodeError):
        changed = True
    host.write_file(path, content, owner=owner, group=owner, perms=perms)
    return changed


def write_files(files: Mapping[str, str], *, owner: str) -> bool:
    """Write a workload's private ``files`` (path: content, mode 0600); whether any changed."""
    # Every file is written: a list, not any() over a generator, which would stop at the first.
    changed = [
        write_if_changed(path, text, owner=owner, perms=0o600) for path, text in files.items()
    ]
    return any(changed)


def apply_units(
    units: Mapping[str, tuple[str, str]],
    *,
    restart: Collection[str] = (),
    not_started: Collection[str] = (),
) -> str | None:
    """Write the unit files (name: (path, text)) and keep each unit up; None, or the problem.

    systemd reloads when a file changed; a changed unit is enabled and restarted, as is one in
    ``restart`` (what it reads changed), any other started unless it runs. ``not_started``
    units are only written: something else starts them (a path unit).
    """
    written = {
        name: write_if_changed(path, text, owner="root", perms=0o644)
        for name, (path, text) in units.items()
    }
    if any(written.values()):
        reload = systemd.systemctl("daemon-reload")
        if reload.returncode != 0:
            return f"systemctl daemon-reload: {systemd.reason(reload)}"
    for name, changed in written.items():
        if name in not_started:
            continue
        if changed:
            host.service("enable", name)
        if changed or name in restart:
            started = host.service_restart(name)
        else:
            started = host.service_running(name) or host.service_start(name)
        if not started:
            return f"systemd did not start {name}: see journalctl -u {name}"
    return None


def tree_digest(*paths: Path) -> str:
    """A digest of the files under ``paths`` (names and contents)."""
    digest = hashlib.sha256()
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for file in files:
            if "__pycache__" in file.parts:
                continue
            digest.update(str(file.relative_to(root.parent)).encode() + b"\0")
            digest.update(file.read_bytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class Venv:
    """A venv the workload runs from, made with the machine's ``python``."""

    path: Path
    python: str = "/usr/bin/python3"

    def bin(self, program: str) -> Path:
        return self.path / "bin" / program

    def ensure(
        self,
        stamps: Stamps,
        requirements: Sequence[str],
        *,
        fingerprint: str,
        wheelhouse: Path | None,
        index_url: str,
        probe: str,
        stamp: str = "venv",
        serving: Sequence[str] = (),
    ) -> bool:
        """pip-install ``requirements`` unless that exact install is there; whether it installed.

        ``fingerprint`` says what is installed (with the wheelhouse's digest and the index);
        ``probe`` names a program the install puts in the venv's ``bin``; ``stamp`` names the
        record (one per venv where a charm has two). ``serving``: the systemd units that run
        from this venv, stopped before it is rebuilt (a refresh with new pins): none serves
        from files being replaced, and the charm's next ``apply_units`` starts them on the new
        install.
        """
        fingerprint = " ".join(
            [fingerprint, *([tree_digest(wheelhouse)] if wheelhouse else []), index_url]
        )
        if stamps.done(stamp, fingerprint) and self.bin(probe).exists():
            return False
        for unit in serving:
            if host.service_running(unit) and not host.service_stop(unit):
                raise InstallError(f"systemd did not stop {unit} before its venv is rebuilt")
        # A changed install starts from an empty venv and builds without pip's wheel cache: a
        # package built from source (uWSGI) is rebuilt against what apt installed since.
        _run([self.python, "-m", "venv", "--clear", str(self.path)])
        options: list[str] = []
        if wheelhouse is not None:
            wheels = self.path.parent / "wheelhouse"
            wheels.mkdir(parents=True, exist_ok=True)
            try:
                with tarfile.open(wheelhouse) as archive:
                    archive.extractall(wheels, filter="data")
            except (tarfile.TarError, OSError) as error:
                raise InstallError(
                    f"the wheelhouse resource is not a readable tarball: {error}"
                ) from None
            options = ["--no-index", "--find-links", str(wheels)]
        elif index_url:
            options = ["--index-url", index_url]
        _run(
            [str(self.bin("pip")), "install", "--quiet", "--no-cache-dir", *options, *requirements]
        )
        stamps.record(stamp, fingerprint)
        return True


def ensure_workload(
    stamps: Stamps,
    venv: Venv,
    source: Path,
    *,
    extras: Sequence[str] = (),
    also: Sequence[str] = (),
    wheelhouse: Callable[[], Path | None],
    index_url: str,
    stamp: str = "venv",
    serving: Sequence[str] = (),
) -> bool:
    """Install the stack's workload package at ``source`` (with ``extras``) and ``also``.

    ``source`` is the ``workload/`` folder a machine charm carries (tools/stage.py); ``also``
    are more pinned requirements (DVC, as the rocks pin it). Once per change of the package or
    the pins; whether it installed. ``wheelhouse`` fetches the resource (``wheelhouse``);
    ``stamp`` and ``serving`` as for ``Venv.ensure``.
    """
    if not (source / "pyproject.toml").is_file():
        raise InstallError(f"the charm carries no workload package at {source}")
    package = f"{source}[{','.join(extras)}]" if extras else str(source)
    return venv.ensure(
        stamps,
        [package, *also],
        fingerprint=" ".join([tree_digest(source), *extras, *also]),
        wheelhouse=wheelhouse(),
        index_url=index_url,
        probe="mlops-workload",
        stamp=stamp,
        serving=serving,
    )


def _run(command: list[str]) -> None:
    completed = subprocess.run(command, capture_output=True, text=True, timeout=3600, check=False)
    if completed.returncode != 0:
        lines = (completed.stderr or completed.stdout).strip().splitlines()
        raise InstallError(f"{Path(command[0]).name} failed: {lines[-1] if lines else ''}")
