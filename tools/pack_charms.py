#!/usr/bin/env python3
"""Pack charms with the real charmcraft on a machine that is not Ubuntu 24.04: a test device.

``charmcraft pack`` builds in an LXD instance of the charm's base (Ubuntu 24.04). Where there
is no LXD (CI containers, this project's Debian 12 machines) it can still build on the host
with ``--destructive-mode``, which it allows only on a host of the same release. This script
gives charmcraft that host without touching the machine:

- a private mount namespace (``unshare --mount``) in which a file saying Ubuntu 24.04 is
  bind-mounted over ``/usr/lib/os-release`` and ``/etc/os-release`` (the machine itself, outside
  the namespace, is unchanged);
- ``python3`` on PATH is a Python 3.12, Ubuntu 24.04's: the ``charm`` plugin builds the charm's
  venv with ``python3 -m venv`` (``PARTS_PYTHON_INTERPRETER`` names it too);
- no C or Rust compiler on PATH, as in a build instance that does not ask for one in
  ``build-packages``: every requirement that is not a ``charm-binary-python-packages`` wheel
  must build from source without one.

What it packs proves that the charm's recipe, its lock and its code pack and import; it is
never a charm to deploy (tools/deploy.sh packs those with the charmcraft snap, in LXD).

    sudo python tools/pack_charms.py --all --out /tmp/packed     # needs charmcraft on PATH
"""

from __future__ import annotations

import argparse
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stage import charm_names, stage_charm

PYTHON_VERSION = (3, 12)  # Ubuntu 24.04's python3: the interpreter a packed charm runs under
SYSTEM_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
# C, C++ and Rust compilers, and the cross-toolchain prefixes that wrap them.
_COMPILER = re.compile(
    r"(cc|c\+\+|c89|c99|cpp|gcc|g\+\+|clang|clang\+\+|tcc|rustc|rustup|cargo)([-.][\w.-]*)?"
    r"|(x86_64|aarch64|arm|i686|powerpc64le|riscv64|s390x)[\w-]*-linux-gnu[\w-]*-.+"
    r"|[\w.-]*-(gcc|g\+\+|cc|c\+\+|clang)([-.][\w.-]*)?"
)
# Variables that would point a build at this machine's tools or Python instead of its own.
_DROPPED_ENV = re.compile(
    r"(PYTHON\w*|VIRTUAL_ENV|CC|CXX|CPP|LD|CFLAGS|CXXFLAGS|LDFLAGS|RUST\w*|CARGO\w*)"
)

UBUNTU_2404_OS_RELEASE = """\
PRETTY_NAME="Ubuntu 24.04 LTS"
NAME="Ubuntu"
VERSION_ID="24.04"
VERSION="24.04 LTS (Noble Numbat)"
VERSION_CODENAME=noble
ID=ubuntu
ID_LIKE=debian
UBUNTU_CODENAME=noble
"""


def ubuntu_namespace_command(
    os_release: Path,
    command: Sequence[str],
    *,
    binds: Sequence[tuple[Path, Path]] = (),
    setup: str = "",
) -> list[str]:
    """``command`` in a private mount namespace where ``os_release`` is the os-release file.

    ``binds`` are ``(source, target)`` folders bind-mounted there too (the target made if
    missing); ``setup`` is more shell run in the namespace before ``command``. Root only.
    """
    script = (
        'mount --bind "$1" /usr/lib/os-release\n'
        # /etc/os-release is usually a link to the file above, then already covered.
        '[ -L /etc/os-release ] || mount --bind "$1" /etc/os-release\n'
        "shift\n"
        'while [ "$1" != -- ]; do mkdir -p "$2" && mount --bind "$1" "$2"; shift 2; done\n'
        "shift\n"
        f"{setup}\n"
        'exec "$@"\n'
    )
    bound = [str(path) for pair in binds for path in pair]
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "/bin/sh",
        "-euc",
        script,
        "sh",
        str(os_release),
        *bound,
        "--",
        *command,
    ]


def is_compiler(name: str) -> bool:
    """Whether the program ``name`` compiles C, C++ or Rust (and must not be on PATH)."""
    return _COMPILER.fullmatch(name) is not None


def _version_of(python: str) -> tuple[tuple[int, int], Path] | None:
    try:
        completed = subprocess.run(
            [python, "-c", "import sys; print(*sys.version_info[:2], sys.executable)"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        major, minor, executable = completed.stdout.split(maxsplit=2)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return (int(major), int(minor)), Path(executable.strip())


def find_python(version: tuple[int, int] = PYTHON_VERSION) -> Path:
    """A Python of ``version`` (the real executable), or exit saying why there is none.

    ``PARTS_PYTHON_INTERPRETER`` when set (it must be that version), else ``python3.12`` on
    PATH, else the newest pyenv ``3.12.*``, else ``/usr/bin/python3`` if it is 3.12.
    """
    wanted = ".".join(map(str, version))
    given = os.environ.get("PARTS_PYTHON_INTERPRETER")
    if given:
        found = _version_of(given)
        if found is None or found[0] != version:
            raise SystemExit(
                f"PARTS_PYTHON_INTERPRETER={given} is not a working Python {wanted}"
                + (f" (it is {'.'.join(map(str, found[0]))})" if found else "")
            )
        return found[1]
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates = [
        shutil.which(f"python{wanted}"),
        *(
            str(path / "bin" / f"python{wanted}")
            for path in sorted(pyenv.glob(f"{wanted}.*"), key=_release_key, reverse=True)
        ),
        "/usr/bin/python3",
    ]
    tried = []
    for candidate in filter(None, candidates):
        found = _version_of(candidate)
        if found is not None and found[0] == version:
            return found[1]
        tried.append(candidate)
    raise SystemExit(
        f"no Python {wanted} here (tried {', '.join(tried) or 'nothing'}): a charm on "
        f"ubuntu@24.04 runs under Python {wanted}, and its packed venv must be built and "
        f"imported by one. Install it (Ubuntu 24.04: python3; elsewhere: `pyenv install "
        f"{wanted}`), or set PARTS_PYTHON_INTERPRETER to one."
    )


def _release_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else -1 for part in path.name.split("."))


def compiler_free_path(bin_dir: Path, python: Path) -> str:
    """Fill ``bin_dir`` with links to the system's programs except compilers; return a PATH.

    ``python3`` and ``python3.12`` are ``python``: the charm plugin makes its venv with
    whatever ``python3`` is on PATH.
    """
    bin_dir.mkdir(parents=True, exist_ok=True)
    for directory in map(Path, SYSTEM_PATH):
        if not directory.is_dir():
            continue
        for program in sorted(directory.iterdir()):
            link = bin_dir / program.name
            if is_compiler(program.name) or link.exists() or link.is_symlink():
                continue
            if program.is_file() and os.access(program, os.X_OK):
                link.symlink_to(program)
    for name in ("python3", f"python{PYTHON_VERSION[0]}.{PYTHON_VERSION[1]}"):
        link = bin_dir / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(python)
    return str(bin_dir)


def _build_environment(path: str, python: Path) -> dict[str, str]:
    environment = {
        name: value for name, value in os.environ.items() if not _DROPPED_ENV.fullmatch(name)
    }
    environment.update(
        PATH=path,
        PARTS_PYTHON_INTERPRETER=str(python),
        LANG="C.UTF-8",
        LC_ALL="C.UTF-8",
    )
    return environment


@dataclass(frozen=True)
class PackedCharm:
    """A ``.charm`` file this device made, and how long charmcraft took."""

    charm: str
    path: Path
    seconds: float


def _charmcraft() -> str:
    charmcraft = shutil.which("charmcraft")
    if charmcraft is None:
        raise SystemExit(
            "charmcraft is not on PATH: run this through `tox -e pack` (requirements/pack.txt)"
        )
    return str(Path(charmcraft).absolute())


def _check_machine() -> None:
    if os.geteuid() != 0:
        raise SystemExit(
            "packing needs root: it bind-mounts an os-release file in a private mount "
            "namespace (unshare --mount) and charmcraft's destructive mode uses apt"
        )
    for program in ("unshare", "mount"):
        if shutil.which(program) is None:
            raise SystemExit(f"{program} is missing (util-linux / mount)")


def pack(
    charm: str, out_dir: Path, python: Path | None = None, pip_cache: Path | None = None
) -> PackedCharm:
    """Stage ``charm`` under ``out_dir`` and pack it there with charmcraft, as described above.

    pip's cache during the build is ``pip_cache`` (default: a fresh one under ``out_dir``),
    mounted over the user's own in the namespace: a wheel the user's cache holds may have been
    built with a compiler, so only wheels built here, without one, may be reused.
    """
    _check_machine()
    python = python or find_python()
    charmcraft = _charmcraft()
    out_dir = out_dir.resolve()
    pip_cache = (pip_cache or out_dir / "pip-cache").resolve()
    pip_cache.mkdir(parents=True, exist_ok=True)
    # charmcraft runs pip with an empty environment: its cache is the one under the home
    # directory of the passwd database, whatever HOME says.
    user_pip_cache = Path(pwd.getpwuid(os.geteuid()).pw_dir) / ".cache" / "pip"
    tree = stage_charm(charm, out_dir / "staged")
    with tempfile.TemporaryDirectory(prefix=f"pack-{charm}-") as scratch_dir:
        scratch = Path(scratch_dir)
        # TEST DEVICE ONLY. This file tells charmcraft that the machine is Ubuntu 24.04 so that
        # --destructive-mode builds here, on whatever the machine really is. Nothing packed
        # under it may ever be shipped or deployed: its venv was built against this machine's
        # libraries and tools, not Ubuntu 24.04's. It is mounted only inside the private mount
        # namespace of the one charmcraft process below; the machine never sees it.
        os_release = scratch / "os-release"
        os_release.write_text(UBUNTU_2404_OS_RELEASE)
        path = compiler_free_path(scratch / "bin", python)
        command = ubuntu_namespace_command(
            os_release,
            [
                charmcraft,
                "pack",
                "--destructive-mode",
                "--project-dir",
                str(tree),
                # In destructive mode charmcraft writes only inside the project folder.
                "--output",
                str(tree),
                "--verbosity",
                "brief",
            ],
            binds=[(pip_cache, user_pip_cache)],
        )
        for old in out_dir.glob(f"{charm}_*.charm"):
            old.unlink()
        started = time.monotonic()
        completed = subprocess.run(
            command,
            env=_build_environment(path, python),
            cwd=tree,
            capture_output=True,
            text=True,
            check=False,
        )
        seconds = time.monotonic() - started
    if completed.returncode != 0:
        raise RuntimeError(
            f"charmcraft pack of {charm} failed (exit {completed.returncode}) after "
            f"{seconds:.0f} s:\n{_tail(completed.stdout + completed.stderr)}"
        )
    packed = sorted(tree.glob(f"{charm}_*.charm"))
    if len(packed) != 1:
        raise RuntimeError(f"expected one {charm}_*.charm in {tree}, found {packed}")
    return PackedCharm(charm, Path(shutil.move(packed[0], out_dir / packed[0].name)), seconds)


def _tail(text: str, lines: int = 80) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def main(argv: list[str] | None = None) -> int:
    """Pack the charms named (or all) into ``--out``."""
    parser = argparse.ArgumentParser(description="Pack charms with charmcraft: a test device.")
    parser.add_argument("charms", nargs="*", help="charm folder names under charms/")
    parser.add_argument("--all", action="store_true", help="every charm under charms/")
    parser.add_argument("--out", type=Path, help="output folder")
    parser.add_argument(
        "--which-python", action="store_true", help="print the Python 3.12 it would use, and exit"
    )
    parser.add_argument(
        "--pip-cache", type=Path, help="pip cache kept for this device's builds only"
    )
    args = parser.parse_args(argv)
    if args.which_python:
        print(find_python())
        return 0
    charms = charm_names() if args.all else args.charms
    if not charms or args.out is None:
        parser.error("name at least one charm (or --all) and --out")
    python = find_python()
    for charm in charms:
        packed = pack(charm, args.out, python, args.pip_cache)
        size = packed.path.stat().st_size / 1e6
        print(f"packed {charm} in {packed.seconds:.0f} s: {packed.path} ({size:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
