"""What the machine needs before a job runs: apt packages, the GPU driver, the workload's venv.

The workload package (``workload/``, staged into the charm at pack time by tools/stage.py) is
installed with its ``training`` extra into a venv, its dependencies from PyPI (or the
``pip-index-url`` mirror), or only from the ``wheelhouse`` resource on an air-gapped site. Each
step records what it installed (a stamp) and does nothing when that has not changed: a hook
pays for an install once, not at every ``config-changed``.
"""

from __future__ import annotations

import hashlib
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

from charmhelpers.fetch import apt_install

import systemd_jobs

APT_PACKAGES = ["python3-venv", "git"]


class InstallError(Exception):
    """A step failed; the message is one line for the status."""


def _stamp(name: str) -> Path:
    return Path(systemd_jobs.PATHS.jobs_dir).parent / "state" / name


def _done(name: str, fingerprint: str) -> bool:
    try:
        return _stamp(name).read_text() == fingerprint
    except OSError:
        return False


def _record(name: str, fingerprint: str) -> None:
    stamp = _stamp(name)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fingerprint)


def ensure_packages() -> None:
    """The apt packages the venv and the registry need (python3-venv, git); once."""
    fingerprint = " ".join(APT_PACKAGES)
    if not _done("apt", fingerprint):
        apt_install(APT_PACKAGES, fatal=True)
        _record("apt", fingerprint)


def install_gpu_driver() -> None:
    """``ubuntu-drivers --gpgpu install``: the recommended server driver; once."""
    if _done("gpu-driver", "gpgpu"):
        return
    apt_install(["ubuntu-drivers-common"], fatal=True)
    completed = subprocess.run(
        ["ubuntu-drivers", "--gpgpu", "install"],
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    if completed.returncode != 0:
        lines = (completed.stderr or completed.stdout).strip().splitlines()
        raise InstallError(f"ubuntu-drivers --gpgpu install failed: {lines[-1] if lines else ''}")
    _record("gpu-driver", "gpgpu")


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


def ensure_workload(
    source: Path, wheelhouse_resource: Callable[[], Path | None], index_url: str
) -> bool:
    """Install ``source[training]`` into the venv unless that exact install is there already.

    Returns whether it installed. ``wheelhouse``: a ``.tar.gz`` of wheels; then pip uses only
    those (``--no-index``); fetched (``wheelhouse_resource``) only when there is a package.
    """
    if not (source / "pyproject.toml").is_file():
        raise InstallError(f"the charm carries no workload package at {source}")
    wheelhouse = wheelhouse_resource()
    inputs = [source] + ([wheelhouse] if wheelhouse else [])
    fingerprint = f"{tree_digest(*inputs)} {index_url}"
    venv = Path(systemd_jobs.PATHS.venv)
    if _done("workload", fingerprint) and (venv / "bin" / "mlops-workload").exists():
        return False
    _run([systemd_jobs.PATHS.python, "-m", "venv", str(venv)])
    options: list[str] = []
    if wheelhouse is not None:
        wheels = venv.parent / "wheelhouse"
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
    _run([str(venv / "bin" / "pip"), "install", "--quiet", *options, f"{source}[training]"])
    _record("workload", fingerprint)
    return True


def _run(command: list[str]) -> None:
    completed = subprocess.run(command, capture_output=True, text=True, timeout=3600, check=False)
    if completed.returncode != 0:
        lines = (completed.stderr or completed.stdout).strip().splitlines()
        raise InstallError(f"{Path(command[0]).name} failed: {lines[-1] if lines else ''}")
