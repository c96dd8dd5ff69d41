"""What the machine needs before a job runs: apt packages, the GPU driver, the workload's venv.

The workload package (``workload/``, staged into the charm at pack time by tools/stage.py) is
installed with its ``training`` extra into a venv by the machine charms' shared installer
(``mlops_charms.machine``): its dependencies from PyPI (or the ``pip-index-url`` mirror), or
only from the ``wheelhouse`` resource on an air-gapped site, once per change.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from charmhelpers.fetch import apt_install

import machine_paths
from mlops_charms import machine
from mlops_charms.machine import InstallError

APT_PACKAGES = ["python3-venv", "git"]


def _stamps() -> machine.Stamps:
    return machine.Stamps(Path(machine_paths.PATHS.jobs_dir).parent / "state")


def ensure_packages() -> None:
    """The apt packages the venv and the registry need (python3-venv, git); once."""
    machine.ensure_apt_packages(_stamps(), APT_PACKAGES)


def install_gpu_driver() -> None:
    """``ubuntu-drivers --gpgpu install``: the recommended server driver; once."""
    stamps = _stamps()
    if stamps.done("gpu-driver", "gpgpu"):
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
    stamps.record("gpu-driver", "gpgpu")


def ensure_workload(source: Path, wheelhouse: Callable[[], Path | None], index_url: str) -> bool:
    """Install ``source[training]`` into the venv unless that exact install is there already."""
    paths = machine_paths.PATHS
    return machine.ensure_workload(
        _stamps(),
        machine.Venv(Path(paths.venv), paths.python),
        source,
        extras=("training",),
        wheelhouse=wheelhouse,
        index_url=index_url,
    )
